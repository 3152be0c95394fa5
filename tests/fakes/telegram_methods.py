"""Behaviour of the message methods: send*, copy, edit*, delete, chat actions.

Handlers receive the decoded, schema-checked parameters (JSON already decoded) and
return the ``result`` object or raise ApiError with the real server's wording.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .telegram_format import Rendered, render_caption, render_text
from .telegram_media import resolve_media
from .telegram_schema import UploadedFile, bad_request
from .telegram_state import ChatState, MessageKind, StoredMessage, TelegramState

Params = dict[str, Any]
Files = dict[str, UploadedFile]
Handler = Callable[[TelegramState, Params, Files], Awaitable[Any]]

MESSAGE_HANDLERS: dict[str, Handler] = {}
MEDIA_KINDS = ("photo", "video", "document", "animation")
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        MESSAGE_HANDLERS[name.lower()] = func
        return func

    return register


def _text_fields(rendered: Rendered, *, caption: bool) -> dict[str, Any]:
    key, entities_key = ("caption", "caption_entities") if caption else ("text", "entities")
    fields: dict[str, Any] = {}
    if rendered.text:
        fields[key] = rendered.text
    if rendered.entities:
        fields[entities_key] = rendered.entities
    return fields


def _inline_markup(markup: Any) -> dict[str, Any] | None:
    """Only inline keyboards are part of a Message; reply keyboards live in the chat."""
    if isinstance(markup, dict) and markup.get("inline_keyboard"):
        return markup
    return None


def _apply_chat_keyboard(chat: ChatState, markup: Any) -> None:
    if not isinstance(markup, dict):
        return
    if "keyboard" in markup:
        chat.reply_keyboard = [
            [b if isinstance(b, str) else str(b.get("text")) for b in row]
            for row in markup["keyboard"]
        ]
    elif markup.get("remove_keyboard"):
        chat.reply_keyboard = None


def _reply_to(state: TelegramState, chat: ChatState, params: Params) -> dict[str, Any] | None:
    reply = params.get("reply_parameters")
    if not reply and params.get("reply_to_message_id"):
        reply = {"message_id": params["reply_to_message_id"]}
    if not isinstance(reply, dict):
        return None
    target = state.find_message(chat, reply.get("message_id"))
    if target is None:
        if reply.get("allow_sending_without_reply") or params.get("allow_sending_without_reply"):
            return None
        raise bad_request("message to be replied not found")
    return target.raw


def deliver(
    state: TelegramState, chat: ChatState, params: Params, stored: StoredMessage
) -> dict[str, Any]:
    """Common tail of every send: reply, keyboards, storage; returns the Message."""
    if (reply := _reply_to(state, chat, params)) is not None:
        stored.raw["reply_to_message"] = reply
    markup = params.get("reply_markup")
    if (inline := _inline_markup(markup)) is not None:
        stored.raw["reply_markup"] = inline
    _apply_chat_keyboard(chat, markup)
    if params.get("protect_content"):
        stored.raw["has_protected_content"] = True
    state.add_message(chat, stored)
    return stored.raw


@handler("sendMessage")
async def send_message(state: TelegramState, params: Params, files: Files) -> Any:
    chat = state.resolve_chat(params["chat_id"])
    rendered = render_text(params["text"], params.get("parse_mode"), params.get("entities"))
    stored = StoredMessage(
        raw=_text_fields(rendered, caption=False),
        from_bot=True,
        kind="text",
        source_text=params["text"],
        parse_mode=params.get("parse_mode"),
    )
    return deliver(state, chat, params, stored)


def media_message(
    state: TelegramState, kind: str, value: Any, files: Files, params: Params
) -> StoredMessage:
    caption = render_caption(
        params.get("caption"), params.get("parse_mode"), params.get("caption_entities")
    )
    resolved = resolve_media(state, kind, value, files, params)
    raw: dict[str, Any] = {resolved.kind: resolved.media, **_text_fields(caption, caption=True)}
    if resolved.kind == "animation":
        raw["document"] = resolved.media  # the real API reports animations twice
    if params.get("has_spoiler"):
        raw["has_media_spoiler"] = True
    media_kind: MessageKind = resolved.kind  # type: ignore[assignment]
    return StoredMessage(
        raw=raw,
        from_bot=True,
        kind=media_kind,
        media=resolved.data,
        file_id=resolved.file_id,
        source_text=params.get("caption"),
        parse_mode=params.get("parse_mode"),
    )


def _media_sender(kind: str) -> Handler:
    async def send(state: TelegramState, params: Params, files: Files) -> Any:
        chat = state.resolve_chat(params["chat_id"])
        stored = media_message(state, kind, params.get(kind), files, params)
        return deliver(state, chat, params, stored)

    return send


for _kind in MEDIA_KINDS:
    MESSAGE_HANDLERS[f"send{_kind}"] = _media_sender(_kind)


@handler("copyMessage")
async def copy_message(state: TelegramState, params: Params, files: Files) -> Any:
    source_chat = state.resolve_chat(params["from_chat_id"], sending=False)
    source = state.find_message(source_chat, params["message_id"])
    if source is None:
        raise bad_request("message to copy not found")
    chat = state.resolve_chat(params["chat_id"])
    if source.kind not in ("text", *MEDIA_KINDS):
        raise bad_request("message can't be copied")
    raw = {k: v for k, v in source.raw.items() if k in ("text", "entities", *MEDIA_KINDS)}
    for key in ("caption", "caption_entities"):
        if key in source.raw:
            raw[key] = source.raw[key]
    if "caption" in params:
        caption = render_caption(
            params.get("caption"), params.get("parse_mode"), params.get("caption_entities")
        )
        raw.pop("caption", None)
        raw.pop("caption_entities", None)
        raw.update(_text_fields(caption, caption=True))
    stored = StoredMessage(
        raw=raw,
        from_bot=True,
        kind=source.kind,
        media=source.media,
        file_id=source.file_id,
        source_text=source.source_text,
        parse_mode=source.parse_mode,
    )
    message = deliver(state, chat, params, stored)
    return {"message_id": message["message_id"]}


def _editable(state: TelegramState, params: Params) -> tuple[ChatState, StoredMessage]:
    if params.get("inline_message_id"):
        raise bad_request("message to edit not found")  # no inline mode in this fake
    if params.get("chat_id") is None or params.get("message_id") is None:
        raise bad_request("message identifier is not specified")
    chat = state.resolve_chat(params["chat_id"])
    stored = state.find_message(chat, params["message_id"])
    if stored is None:
        raise bad_request("message to edit not found")
    if not stored.from_bot:
        raise bad_request("message can't be edited")
    return chat, stored


def _commit_edit(
    state: TelegramState,
    chat: ChatState,
    stored: StoredMessage,
    raw: dict[str, Any],
    **fields: Any,
) -> dict[str, Any]:
    """Store an edit (``fields`` update the StoredMessage too) unless nothing changes."""
    if {k: v for k, v in raw.items() if k != "edit_date"} == {
        k: v for k, v in stored.raw.items() if k != "edit_date"
    }:
        raise bad_request(NOT_MODIFIED)
    stored.raw = {**raw, "edit_date": int(time.time())}
    for name, value in fields.items():
        setattr(stored, name, value)
    state.record_event(chat, stored)
    return stored.raw


def _with_markup(raw: dict[str, Any], params: Params) -> dict[str, Any]:
    # An edit without reply_markup removes the inline keyboard, as in Telegram.
    raw = {k: v for k, v in raw.items() if k != "reply_markup"}
    if (inline := _inline_markup(params.get("reply_markup"))) is not None:
        raw["reply_markup"] = inline
    return raw


@handler("editMessageText")
async def edit_message_text(state: TelegramState, params: Params, files: Files) -> Any:
    chat, stored = _editable(state, params)
    if stored.kind != "text":
        raise bad_request("there is no text in the message to edit")
    rendered = render_text(params["text"], params.get("parse_mode"), params.get("entities"))
    raw = {k: v for k, v in stored.raw.items() if k not in ("text", "entities")}
    raw.update(_text_fields(rendered, caption=False))
    return _commit_edit(
        state,
        chat,
        stored,
        _with_markup(raw, params),
        source_text=params["text"],
        parse_mode=params.get("parse_mode"),
    )


@handler("editMessageCaption")
async def edit_message_caption(state: TelegramState, params: Params, files: Files) -> Any:
    chat, stored = _editable(state, params)
    if stored.kind not in MEDIA_KINDS:
        raise bad_request("there is no caption in the message to edit")
    caption = render_caption(
        params.get("caption"), params.get("parse_mode"), params.get("caption_entities")
    )
    raw = {k: v for k, v in stored.raw.items() if k not in ("caption", "caption_entities")}
    raw.update(_text_fields(caption, caption=True))
    return _commit_edit(
        state,
        chat,
        stored,
        _with_markup(raw, params),
        source_text=params.get("caption"),
        parse_mode=params.get("parse_mode"),
    )


@handler("editMessageReplyMarkup")
async def edit_message_reply_markup(state: TelegramState, params: Params, files: Files) -> Any:
    chat, stored = _editable(state, params)
    return _commit_edit(state, chat, stored, _with_markup(stored.raw, params))


@handler("editMessageMedia")
async def edit_message_media(state: TelegramState, params: Params, files: Files) -> Any:
    chat, stored = _editable(state, params)
    if stored.kind not in MEDIA_KINDS:
        raise bad_request("there is no media in the message to edit")
    media = params["media"]
    kind = media.get("type")
    if kind not in MEDIA_KINDS:
        raise bad_request(f"can't edit a message to media of type {kind!r} in this fake")
    fresh = media_message(state, kind, media.get("media"), files, media)
    keep = ("message_id", "from", "chat", "date", "reply_to_message", "edit_date")
    raw = {k: v for k, v in stored.raw.items() if k in keep}
    raw.update(fresh.raw)
    return _commit_edit(
        state,
        chat,
        stored,
        _with_markup(raw, params),
        kind=fresh.kind,
        media=fresh.media,
        file_id=fresh.file_id,
        source_text=fresh.source_text,
        parse_mode=fresh.parse_mode,
    )


def _delete(state: TelegramState, chat: ChatState, message_id: Any) -> bool:
    stored = state.find_message(chat, message_id)
    if stored is None:
        return False
    stored.deleted = True
    if stored.from_bot:
        state.record_event(chat, stored)
    return True


@handler("deleteMessage")
async def delete_message(state: TelegramState, params: Params, files: Files) -> Any:
    chat = state.resolve_chat(params["chat_id"], sending=False)
    if not _delete(state, chat, params["message_id"]):
        raise bad_request("message to delete not found")
    return True


@handler("deleteMessages")
async def delete_messages(state: TelegramState, params: Params, files: Files) -> Any:
    chat = state.resolve_chat(params["chat_id"], sending=False)
    deleted = [_delete(state, chat, mid) for mid in params["message_ids"]]
    if not any(deleted):
        raise bad_request("message to delete not found")
    return True


@handler("sendChatAction")
async def send_chat_action(state: TelegramState, params: Params, files: Files) -> Any:
    chat = state.resolve_chat(params["chat_id"])
    if params["action"] not in CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    chat.chat_actions.append(params["action"])
    state.changed()
    return True
