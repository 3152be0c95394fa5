"""Text formatting and keyboard rules of the Bot API.

The HTML parser mirrors tdlib's ``parse_html`` (which the real server uses): the same
tag set, the same error wording, visible text + entities with UTF-16 offsets. Doing
it faithfully matters because the classic production bug is an unescaped ``<`` in
user-provided text, which only the real parser rejects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .telegram_schema import ApiError, bad_request

MAX_TEXT_LEN = 4096
MAX_CAPTION_LEN = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_INLINE_BUTTONS = 100

# tag -> entity type; "span" is only valid as <span class="tg-spoiler">.
_TAG_ENTITY = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
    "tg-time": "date_time",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY_RE = re.compile(r"&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|[a-zA-Z]{2,4});")
_INLINE_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Rendered:
    """What the recipient sees: plain text plus entities (Bot API JSON dicts)."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Open:
    tag: str
    start: int  # UTF-16 offset in the visible text
    attrs: dict[str, str]
    language: str | None = None


def _parse_error(message: str) -> ApiError:
    return bad_request(f"can't parse entities: {message}")


class _HtmlParser:
    def __init__(self, source: str) -> None:
        self.src = source
        self.out: list[str] = []
        self.pos16 = 0
        self.stack: list[_Open] = []
        self.entities: list[dict[str, Any]] = []

    def byte_offset(self, index: int) -> int:
        return len(self.src[:index].encode("utf-8"))

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.pos16 += utf16_len(text)

    def parse(self) -> Rendered:
        src, i = self.src, 0
        while i < len(src):
            char = src[i]
            if char == "&":
                match = _ENTITY_RE.match(src, i)
                decoded = _decode_entity(match.group(1)) if match else None
                if match and decoded is not None:
                    self.emit(decoded)
                    i = match.end()
                    continue
            if char != "<":
                self.emit(char)
                i += 1
                continue
            if i + 1 < len(src) and src[i + 1] == "/":
                i = self.end_tag(i)
            else:
                i = self.start_tag(i)
        if self.stack:
            raise _parse_error(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1].tag}"'
            )
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return _strip(Rendered("".join(self.out), entities))

    def start_tag(self, begin: int) -> int:
        src, i = self.src, begin + 1
        while i < len(src) and not src[i].isspace() and src[i] != ">":
            i += 1
        if i >= len(src):
            raise _parse_error(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
        tag = src[begin + 1 : i].lower()
        if tag not in _TAG_ENTITY:
            raise _parse_error(
                f'Unsupported start tag "{tag}" at byte offset {self.byte_offset(begin)}'
            )
        attrs, i = self._attributes(i, begin)
        if tag == "span" and attrs.get("class") != "tg-spoiler":
            raise _parse_error(
                f'Tag "span" must have class "tg-spoiler" at byte offset {self.byte_offset(begin)}'
            )
        self.stack.append(_Open(tag, self.pos16, attrs))
        return i

    def _attributes(self, i: int, begin: int) -> tuple[dict[str, str], int]:
        src, attrs = self.src, {}
        unclosed = _parse_error(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
        while True:
            while i < len(src) and src[i].isspace():
                i += 1
            if i >= len(src):
                raise unclosed
            if src[i] == ">":
                return attrs, i + 1
            name_start = i
            while i < len(src) and not src[i].isspace() and src[i] not in "=>":
                i += 1
            name = src[name_start:i].lower()
            while i < len(src) and src[i].isspace():
                i += 1
            if i >= len(src):
                raise unclosed
            if src[i] != "=":
                attrs[name] = ""  # value-less flag such as <blockquote expandable>
                continue
            i += 1
            while i < len(src) and src[i].isspace():
                i += 1
            if i >= len(src):
                raise unclosed
            if src[i] in "\"'":
                quote, value_start = src[i], i + 1
                end = src.find(quote, value_start)
                if end < 0:
                    raise unclosed
                attrs[name] = _unescape(src[value_start:end])
                i = end + 1
            else:
                value_start = i
                while i < len(src) and (src[i].isalnum() or src[i] in ".-"):
                    i += 1
                if i < len(src) and not src[i].isspace() and src[i] != ">":
                    raise _parse_error(
                        f"Unexpected end of name token at byte offset {self.byte_offset(value_start)}"
                    )
                attrs[name] = src[value_start:i].lower()

    def end_tag(self, begin: int) -> int:
        src = self.src
        if not self.stack:
            raise _parse_error(f"Unexpected end tag at byte offset {self.byte_offset(begin)}")
        i = begin + 2
        while i < len(src) and not src[i].isspace() and src[i] != ">":
            i += 1
        name = src[begin + 2 : i].lower()
        while i < len(src) and src[i].isspace():
            i += 1
        if i >= len(src) or src[i] != ">":
            raise _parse_error(f"Unclosed end tag at byte offset {self.byte_offset(begin)}")
        opened = self.stack.pop()
        if name and name != opened.tag:
            raise _parse_error(
                f"Unmatched end tag at byte offset {self.byte_offset(begin)}, "
                f'expected "</{opened.tag}>", found "</{name}>"'
            )
        self._close(opened)
        return i + 1

    def _close(self, opened: _Open) -> None:
        length = self.pos16 - opened.start
        attrs = opened.attrs
        if opened.tag == "code" and self.stack and self.stack[-1].tag == "pre":
            # <pre><code class="language-x"> is one pre entity with a language.
            cls = attrs.get("class", "")
            if cls.startswith("language-"):
                self.stack[-1].language = cls[len("language-") :]
            return
        if length <= 0:
            return  # the real API drops empty entities
        entity: dict[str, Any] = {
            "type": _TAG_ENTITY[opened.tag],
            "offset": opened.start,
            "length": length,
        }
        if opened.tag == "a":
            href = attrs.get("href")
            if not href:
                return
            match = re.fullmatch(r"tg://user\?id=(\d+)", href)
            if match:
                entity.update(type="text_mention", user={"id": int(match.group(1))})
                entity["user"].update(is_bot=False, first_name="")
            else:
                entity["url"] = href
        elif opened.tag == "pre" and opened.language:
            entity["language"] = opened.language
        elif opened.tag == "blockquote" and "expandable" in attrs:
            entity["type"] = "expandable_blockquote"
        elif opened.tag == "tg-emoji":
            entity["custom_emoji_id"] = attrs.get("emoji-id", "")
        elif opened.tag == "tg-time":
            entity["unix_time"] = int(attrs.get("unix", "0") or 0)
            if attrs.get("format"):
                entity["date_time_format"] = attrs["format"]
        self.entities.append(entity)


def _decode_entity(body: str) -> str | None:
    if body.startswith("#x"):
        code = int(body[2:], 16)
    elif body.startswith("#"):
        code = int(body[1:])
    else:
        return _NAMED_ENTITIES.get(body)  # other named entities stay literal text
    return chr(code) if 0 < code <= 0x10FFFF else None


def _unescape(value: str) -> str:
    def repl(match: re.Match[str]) -> str:
        decoded = _decode_entity(match.group(1))
        return match.group(0) if decoded is None else decoded

    return _ENTITY_RE.sub(repl, value)


def _strip(rendered: Rendered) -> Rendered:
    """Trim surrounding whitespace like the server does, shifting entities along."""
    text = rendered.text
    stripped = text.strip()
    if stripped == text:
        return rendered
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    size = utf16_len(stripped)
    entities = []
    for entity in rendered.entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, size)
        if end > start:
            entities.append({**entity, "offset": start, "length": end - start})
    return Rendered(stripped, entities)


def render(text: str, parse_mode: str | None, entities: list[dict[str, Any]] | None) -> Rendered:
    """Turn (text, parse_mode, entities) into what the chat shows."""
    mode = (parse_mode or "").lower()
    if mode == "html":
        return _HtmlParser(text).parse()
    if mode in ("", "markdown", "markdownv2"):
        # Markdown is passed through unparsed: the bot under test uses HTML.
        return _strip(Rendered(text, list(entities or [])))
    raise bad_request("unsupported parse_mode")


def render_text(text: str, parse_mode: str | None, entities: Any) -> Rendered:
    rendered = render(text, parse_mode, entities)
    if not rendered.text:
        raise bad_request("message text is empty")
    if len(rendered.text) > MAX_TEXT_LEN:
        raise bad_request("message is too long")
    return rendered


def render_caption(caption: str | None, parse_mode: str | None, entities: Any) -> Rendered:
    if not caption:
        return Rendered("")
    rendered = render(caption, parse_mode, entities)
    if len(rendered.text) > MAX_CAPTION_LEN:
        raise bad_request("message caption is too long")
    return rendered


def validate_reply_markup(markup: Any, *, invoice: bool = False) -> None:
    """Semantic checks the server makes on keyboards (beyond JSON shape)."""
    if markup is None:
        return
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        _validate_inline_keyboard(markup["inline_keyboard"], invoice=invoice)
    elif "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request("can't parse reply keyboard markup JSON object")
        for row in rows:
            for button in row:
                text = button if isinstance(button, str) else (button or {}).get("text")
                if not isinstance(text, str) or not text:
                    raise bad_request("keyboard button text must be non-empty")
    elif not ({"remove_keyboard", "force_reply"} & markup.keys()):
        raise bad_request("can't parse reply keyboard markup JSON object")


def _validate_inline_keyboard(rows: Any, *, invoice: bool) -> None:
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise bad_request("can't parse inline keyboard markup JSON object")
    if sum(len(row) for row in rows) > MAX_INLINE_BUTTONS:
        raise bad_request("reply markup is too long")
    for row_index, row in enumerate(rows):
        for col_index, button in enumerate(row):
            if not isinstance(button, dict):
                raise bad_request("can't parse inline keyboard button: object expected")
            text = button.get("text")
            if not isinstance(text, str) or not text:
                raise bad_request(
                    'can\'t parse inline keyboard button: Field "text" must be of type String'
                )
            actions = [name for name in _INLINE_ACTIONS if button.get(name) is not None]
            if not actions:
                raise bad_request(
                    "can't parse inline keyboard button: "
                    "Text buttons are unallowed in the inline keyboard"
                )
            if len(actions) > 1:
                raise bad_request(
                    "can't parse inline keyboard button: exactly one of the optional fields "
                    f"must be used, got {', '.join(actions)}"
                )
            action = actions[0]
            if action == "callback_data":
                data = button["callback_data"]
                size = len(data.encode("utf-8")) if isinstance(data, str) else 0
                if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
                    raise bad_request("BUTTON_DATA_INVALID")
            elif action == "url":
                _check_button_url(button["url"])
            elif action == "pay" and not (invoice and row_index == 0 and col_index == 0):
                raise bad_request("BUTTON_TYPE_INVALID")


def _check_button_url(url: Any) -> None:
    error = bad_request(f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise error
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https", "tg", "ton"):
        raise error
    host = (parts.hostname or "").lower()
    if parts.scheme in ("http", "https") and (
        not host or host == "localhost" or host.startswith("127.") or "." not in host
    ):
        raise error  # Telegram refuses local/intranet URLs in buttons
