"""In-memory world of the fake Telegram: chats, messages, files, updates, payments.

Everything runs on the test's event loop, so plain data structures suffice; waiting
is done with a "something changed" event that is re-armed on every mutation.
"""

# The test-facing wait helpers take plain ``timeout=`` seconds by design.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

from .telegram_schema import ApiError, bad_request

T = TypeVar("T")
MessageKind = Literal["text", "photo", "video", "document", "animation", "invoice", "other"]
FaultMode = Literal["error", "drop", "delay"]

# Update types delivered when getUpdates never specified allowed_updates.
DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})


class WaitTimeout(AssertionError):
    """Raised by the ``wait_*`` helpers; an AssertionError so pytest shows it as a failure."""


@dataclass(frozen=True)
class UserInfo:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "ru"

    def as_user(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if (value := getattr(self, key)) is not None:
                user[key] = value
        return user

    def as_chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        for key in ("last_name", "username"):
            if (value := getattr(self, key)) is not None:
                chat[key] = value
        return chat


@dataclass(frozen=True)
class BotMessage:
    """Snapshot of a bot message as the user sees it at one moment (send/edit/delete).

    ``text`` is the *visible* text or caption (HTML already rendered), "" if none.
    """

    message_id: int
    kind: MessageKind
    text: str
    buttons: list[list[str]]
    reply_markup: dict[str, Any] | None
    media: bytes | None = field(repr=False)
    file_id: str | None
    edited: bool
    deleted: bool
    raw: dict[str, Any] = field(repr=False)
    seq: int  # position in the chat's event history; usable as a wait cursor
    source_text: str | None = None  # text/caption exactly as the bot sent it
    parse_mode: str | None = None

    def button(self, text: str) -> dict[str, Any]:
        """The inline button whose text equals (preferred) or starts with ``text``."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        flat = [b for row in rows for b in row]
        for candidate in [b for b in flat if b.get("text") == text] + [
            b for b in flat if str(b.get("text", "")).startswith(text)
        ]:
            return candidate
        raise LookupError(f"no inline button {text!r} in message {self.message_id}: {self.buttons}")

    @property
    def entities(self) -> list[dict[str, Any]]:
        return list(self.raw.get("entities") or self.raw.get("caption_entities") or [])


@dataclass(frozen=True)
class CallbackAnswer:
    callback_query_id: str
    text: str | None
    show_alert: bool
    url: str | None


@dataclass
class CallbackRecord:
    id: str
    user_id: int
    message_id: int
    data: str
    answer: CallbackAnswer | None = None


@dataclass
class PreCheckoutRecord:
    id: str
    user_id: int
    currency: str
    total_amount: int
    payload: str
    answer: tuple[bool, str | None] | None = None  # (ok, error_message)


@dataclass
class Charge:
    charge_id: str
    user_id: int
    currency: str
    total_amount: int
    payload: str
    refunded: bool = False


@dataclass
class FileRecord:
    file_id: str
    file_unique_id: str
    kind: str  # "photo" | "video" | "document" | "animation"
    data: bytes
    file_path: str
    meta: dict[str, Any]  # media object fields besides the ids (width, mime_type, ...)

    def as_media(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "file_unique_id": self.file_unique_id, **self.meta}


@dataclass
class StoredMessage:
    raw: dict[str, Any]
    from_bot: bool
    kind: MessageKind = "text"
    media: bytes | None = None
    file_id: str | None = None
    source_text: str | None = None
    parse_mode: str | None = None
    invoice: dict[str, Any] | None = None  # payload/prices of an invoice message
    deleted: bool = False


@dataclass
class ChatState:
    user: UserInfo
    started: bool = False  # the user has written to the bot: it may now send here
    blocked: bool = False
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    events: list[BotMessage] = field(default_factory=list)
    reply_keyboard: list[list[str]] | None = None
    chat_actions: list[str] = field(default_factory=list)
    next_message_id: int = 1


@dataclass
class ApiCall:
    """One HTTP call to the Bot API as the fake saw it."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes]
    status: int | None = None  # None: the client went away before the answer
    content_type: str = ""  # how the body was encoded: JSON, urlencoded form or multipart
    result: Any = None
    description: str | None = None
    injected: bool = False
    at: float = field(default_factory=time.monotonic)


class Rejection(NamedTuple):
    method: str
    status: int
    description: str


@dataclass
class Fault:
    """A scripted failure for the next ``times`` matching calls (see FakeTelegram.fail_next)."""

    method: str
    status: int = 429
    description: str | None = None
    retry_after: int | None = None
    times: int = 1
    chat_id: int | None = None
    mode: FaultMode = "error"
    delay: float = 0.0
    process: bool = False

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if self.times <= 0 or self.method.lower() != method.lower():
            return False
        return self.chat_id is None or str(params.get("chat_id")) == str(self.chat_id)

    def error(self) -> ApiError:
        defaults = {
            400: "Bad Request: injected failure",
            403: "Forbidden: bot was blocked by the user",
            429: f"Too Many Requests: retry after {self.retry_after or 1}",
        }
        description = self.description or defaults.get(self.status, "Internal Server Error")
        retry_after = self.retry_after if self.status != 429 else (self.retry_after or 1)
        return ApiError(self.status, description, retry_after=retry_after)


class TelegramState:
    """Shared state of one fake server; handlers and scripted users both mutate it."""

    def __init__(self, token: str, bot_username: str, bot_name: str, max_upload_bytes: int):
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_username = bot_username
        self.bot_name = bot_name
        self.max_upload_bytes = max_upload_bytes
        self.chats: dict[int, ChatState] = {}
        self.files: dict[str, FileRecord] = {}
        self.files_by_path: dict[str, FileRecord] = {}
        # file_id of any size -> every size of that photo, so a photo re-send keeps them all
        self.photo_sets: dict[str, list[FileRecord]] = {}
        self.url_contents: dict[str, tuple[bytes, str]] = {}
        self.callbacks: dict[str, CallbackRecord] = {}
        self.pre_checkouts: dict[str, PreCheckoutRecord] = {}
        self.charges: dict[str, Charge] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[ApiCall] = []
        self.rejected: list[Rejection] = []
        self.faults: list[Fault] = []
        # getUpdates queue: pushed but not yet confirmed by a higher offset.
        self.pending_updates: list[dict[str, Any]] = []
        self.next_update_id = 10_000
        self.allowed_updates: frozenset[str] | None = None
        self.poll_generation = 0
        self.webhook_url = ""
        self.closing = False
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()

    # -- change notification -------------------------------------------------------
    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, seconds: float) -> None:
        """Sleep until the next state change, at most ``seconds``."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass

    async def wait_until(
        self, predicate: Callable[[], T], timeout: float, describe: Callable[[], str] | None = None
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                details = describe() if describe else ""
                raise WaitTimeout(f"condition not met within {timeout}s. {details}".strip())
            await self.wait_change(remaining)

    # -- identities ----------------------------------------------------------------
    def new_id(self) -> int:
        return next(self._ids)

    def random_id(self) -> str:
        return str(secrets.randbits(62))

    def bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_name,
            "username": self.bot_username,
        }

    # -- chats ---------------------------------------------------------------------
    def chat_for_user(self, user: UserInfo) -> ChatState:
        chat = self.chats.get(user.id)
        if chat is None:
            chat = self.chats[user.id] = ChatState(user=user)
        return chat

    def resolve_chat(self, chat_id: Any, *, sending: bool = True) -> ChatState:
        """The target chat of a call, enforcing existence and blocks like the server."""
        try:
            key = int(chat_id)
        except (TypeError, ValueError):
            raise bad_request("chat not found") from None  # @username: no public chats here
        chat = self.chats.get(key)
        if chat is None or not chat.started:
            raise bad_request("chat not found")
        if sending and chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user", expected=True)
        return chat

    def find_message(self, chat: ChatState, message_id: Any) -> StoredMessage | None:
        try:
            stored = chat.messages.get(int(message_id))
        except (TypeError, ValueError):
            return None
        return None if stored is None or stored.deleted else stored

    def add_message(self, chat: ChatState, stored: StoredMessage) -> StoredMessage:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        stored.raw = {
            "message_id": message_id,
            "from": self.bot_user() if stored.from_bot else chat.user.as_user(),
            "chat": chat.user.as_chat(),
            "date": int(time.time()),
            **stored.raw,
        }
        chat.messages[message_id] = stored
        if stored.from_bot:
            self.record_event(chat, stored)
        return stored

    def record_event(self, chat: ChatState, stored: StoredMessage) -> BotMessage:
        markup = stored.raw.get("reply_markup")
        rows = (markup or {}).get("inline_keyboard") or []
        snapshot = BotMessage(
            message_id=stored.raw["message_id"],
            kind=stored.kind,
            text=stored.raw.get("text") or stored.raw.get("caption") or "",
            buttons=[[str(b.get("text", "")) for b in row] for row in rows],
            reply_markup=markup,
            media=stored.media,
            file_id=stored.file_id,
            edited="edit_date" in stored.raw,
            deleted=stored.deleted,
            raw=dict(stored.raw),
            seq=len(chat.events),
            source_text=stored.source_text,
            parse_mode=stored.parse_mode,
        )
        chat.events.append(snapshot)
        self.changed()
        return snapshot

    # -- updates -------------------------------------------------------------------
    def push_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": self.next_update_id, kind: payload}
        self.next_update_id += 1
        self.pending_updates.append(update)
        self.changed()
        return update

    def confirm_updates(self, offset: int) -> None:
        if offset < 0:  # "-N": keep only the last N updates, forget the rest
            self.pending_updates = self.pending_updates[offset:]
        else:
            self.pending_updates = [u for u in self.pending_updates if u["update_id"] >= offset]

    def take_updates(self, limit: int) -> list[dict[str, Any]]:
        allowed = self.allowed_updates
        kept: list[dict[str, Any]] = []
        for update in self.pending_updates:
            kind = next(k for k in update if k != "update_id")
            # Updates of unwanted types are never delivered; the real server drops them.
            ok = kind not in DEFAULT_EXCLUDED_UPDATES if allowed is None else kind in allowed
            if ok:
                kept.append(update)
        self.pending_updates = kept
        return kept[:limit]

    # -- files ---------------------------------------------------------------------
    def store_file(self, kind: str, data: bytes, meta: dict[str, Any], ext: str) -> FileRecord:
        number = self.new_id()
        prefix = {"photo": "AgACAgIAAxkB", "video": "BAACAgIAAxkB", "animation": "CgACAgIAAxkB"}
        file_id = prefix.get(kind, "BQACAgIAAxkB") + secrets.token_urlsafe(24)
        folder = {"photo": "photos", "video": "videos", "animation": "animations"}
        record = FileRecord(
            file_id=file_id,
            file_unique_id="AQAD" + secrets.token_urlsafe(8),
            kind=kind,
            data=data,
            file_path=f"{folder.get(kind, 'documents')}/file_{number}.{ext}",
            meta={**meta, "file_size": len(data)},
        )
        self.files[file_id] = record
        self.files_by_path[record.file_path] = record
        return record
