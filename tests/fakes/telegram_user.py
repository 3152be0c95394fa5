"""Scripted user: a private chat with the bot, driven from a test."""

# The test-facing wait helpers take plain ``timeout=`` seconds by design.
# ruff: noqa: ASYNC109

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .telegram_media import store_photo
from .telegram_state import (
    BotMessage,
    CallbackAnswer,
    CallbackRecord,
    Charge,
    ChatState,
    PreCheckoutRecord,
    StoredMessage,
    TelegramState,
    UserInfo,
)

MessagePredicate = Callable[[BotMessage], Any]


class _HasMessageId(Protocol):
    @property
    def message_id(self) -> int: ...


# A message reference: a BotMessage, an aiogram Message, a raw Message dict or an id.
MessageRef = BotMessage | _HasMessageId | dict[str, Any] | int


def _message_id(message: MessageRef) -> int:
    if isinstance(message, dict):
        return int(message["message_id"])
    if isinstance(message, int):
        return message
    return int(message.message_id)


@dataclass(frozen=True)
class Payment:
    """Outcome of :meth:`FakeUser.pay`."""

    pre_checkout_query_id: str
    ok: bool
    error_message: str | None
    payload: str
    currency: str
    total_amount: int
    charge_id: str | None  # telegram_payment_charge_id, when the payment went through
    message: dict[str, Any] | None  # the successful_payment message pushed to the bot


@dataclass(frozen=True)
class AlbumPart:
    """One item of an album: a photo, or a "video" / "document" (``file_name`` sets its type)."""

    data: bytes
    caption: str | None = None
    kind: str = "photo"
    file_name: str = "file.jpg"


class FakeUser:
    """A Telegram user in a private chat with the bot (chat id == user id)."""

    def __init__(self, state: TelegramState, info: UserInfo) -> None:
        self._state = state
        self.info = info
        self._chat: ChatState = state.chat_for_user(info)

    @property
    def id(self) -> int:
        return self.info.id

    @property
    def chat_id(self) -> int:
        return self.info.id

    # -- what the user sees --------------------------------------------------------
    @property
    def history(self) -> list[BotMessage]:
        """Every bot-message event (sent, edited, deleted) in order."""
        return list(self._chat.events)

    @property
    def messages(self) -> list[BotMessage]:
        """Current state of the bot's visible (not deleted) messages, oldest first."""
        latest: dict[int, BotMessage] = {}
        for event in self._chat.events:
            latest[event.message_id] = event
        return [m for m in latest.values() if not m.deleted]

    @property
    def last_message(self) -> BotMessage | None:
        messages = self.messages
        return messages[-1] if messages else None

    @property
    def reply_keyboard(self) -> list[list[str]] | None:
        """Button texts of the reply keyboard the bot currently shows, if any."""
        return self._chat.reply_keyboard

    @property
    def chat_actions(self) -> list[str]:
        return list(self._chat.chat_actions)

    @property
    def callback_answers(self) -> list[CallbackAnswer]:
        records = self._state.callbacks.values()
        return [r.answer for r in records if r.user_id == self.id and r.answer is not None]

    def cursor(self) -> int:
        """Position after the latest event; pass as ``after=`` to wait only for newer ones."""
        return len(self._chat.events)

    # -- blocking ------------------------------------------------------------------
    @property
    def blocked(self) -> bool:
        return self._chat.blocked

    def block(self) -> None:
        self._chat.blocked = True

    def unblock(self) -> None:
        self._chat.blocked = False

    # -- sending -------------------------------------------------------------------
    def _push_message(self, raw: dict[str, Any], **stored: Any) -> dict[str, Any]:
        # Writing to the bot (re)starts the chat; like "Restart" it also lifts a block.
        self._chat.started = True
        self._chat.blocked = False
        message = self._state.add_message(
            self._chat, StoredMessage(raw=raw, from_bot=False, **stored)
        )
        self._state.push_update("message", message.raw)
        return message.raw

    async def send_text(self, text: str, *, reply_to: MessageRef | None = None) -> dict[str, Any]:
        """Send a text message; a leading /command gets its bot_command entity. `reply_to`: a
        message of this chat the user answers with Telegram's "Reply"."""
        raw: dict[str, Any] = {"text": text}
        if reply_to is not None:
            replied = self._chat.messages.get(_message_id(reply_to))
            if replied is None:
                raise LookupError(f"no message {_message_id(reply_to)} in chat {self.chat_id} to reply to")
            raw["reply_to_message"] = replied.raw
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            raw["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self._push_message(raw, kind="text")

    async def press_reply_button(self, text: str) -> dict[str, Any]:
        """Tap a reply-keyboard button (sends its text); raises if it is not shown."""
        rows = self._chat.reply_keyboard or []
        if text not in [b for row in rows for b in row]:
            raise LookupError(f"no reply keyboard button {text!r}; keyboard: {rows}")
        return await self.send_text(text)

    async def send_photo(self, data: bytes, *, caption: str | None = None) -> dict[str, Any]:
        sizes = store_photo(self._state, data)
        raw: dict[str, Any] = {"photo": [r.as_media() for r in sizes]}
        if caption:
            raw["caption"] = caption
        return self._push_message(raw, kind="photo", media=data, file_id=sizes[-1].file_id)

    async def send_document(
        self,
        data: bytes,
        *,
        file_name: str = "file.bin",
        mime_type: str | None = None,
        caption: str | None = None,
    ) -> dict[str, Any]:
        mime = mime_type or mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        meta = {"file_name": file_name, "mime_type": mime}
        ext = file_name.rsplit(".", 1)[-1] if "." in file_name else "bin"
        record = self._state.store_file("document", data, meta, ext)
        raw: dict[str, Any] = {"document": record.as_media()}
        if caption:
            raw["caption"] = caption
        return self._push_message(raw, kind="document", media=data, file_id=record.file_id)

    async def send_animation(self, data: bytes, *, file_name: str = "animation.mp4") -> dict[str, Any]:
        """A GIF as Telegram delivers it: a silent MP4 `animation`, with `document` set too."""
        meta = {"file_name": file_name, "mime_type": "video/mp4", "width": 320, "height": 320, "duration": 2}
        record = self._state.store_file("animation", data, meta, "mp4")
        raw: dict[str, Any] = {"animation": record.as_media(), "document": record.as_media()}
        return self._push_message(raw, kind="animation", media=data, file_id=record.file_id)
    async def send_album(self, items: list[AlbumPart], *, media_group_id: str | None = None) -> str:
        """Send an album the way Telegram delivers one: one message update per item, all sharing a
        ``media_group_id``. Pass the id returned by an earlier call to send more parts of the same
        album later (e.g. after the bot took the first parts in another getUpdates answer)."""
        if not 1 <= len(items) <= 10:
            raise ValueError("an album holds 1 to 10 items")
        group = media_group_id or str(10**17 + self._state.new_id())
        for item in items:
            raw: dict[str, Any] = {"media_group_id": group}
            if item.kind == "photo":
                sizes = store_photo(self._state, item.data)
                raw["photo"] = [r.as_media() for r in sizes]
                stored: dict[str, Any] = {"kind": "photo", "file_id": sizes[-1].file_id}
            else:
                meta: dict[str, Any] = {"file_name": item.file_name,
                                        "mime_type": mimetypes.guess_type(item.file_name)[0] or "video/mp4"}
                if item.kind == "video":
                    meta.update({"width": 720, "height": 1280, "duration": 8})
                ext = item.file_name.rsplit(".", 1)[-1]
                record = self._state.store_file(item.kind, item.data, meta, ext)
                raw[item.kind] = record.as_media()
                stored = {"kind": item.kind, "file_id": record.file_id}
            if item.caption:
                raw["caption"] = item.caption
            self._push_message(raw, media=item.data, **stored)
        return group

    async def click(self, message: MessageRef | None, button_text: str) -> str:
        """Press an inline callback button (text equal to, or else starting with,
        ``button_text``) on a bot message; ``None`` = the newest message having it.
        Pushes a callback_query update and returns its id."""
        target = self._find_button_message(message, button_text)
        button = target.button(button_text)
        if button.get("callback_data") is None:
            raise LookupError(f"button {button.get('text')!r} is not a callback button: {button}")
        stored = self._chat.messages[target.message_id]
        query_id = self._state.random_id()
        self._state.callbacks[query_id] = CallbackRecord(
            id=query_id, user_id=self.id, message_id=target.message_id, data=button["callback_data"]
        )
        self._state.push_update(
            "callback_query",
            {
                "id": query_id,
                "from": self.info.as_user(),
                "message": stored.raw,
                "chat_instance": str(self.id * 7919),
                "data": button["callback_data"],
            },
        )
        return query_id

    async def click_data(self, message: MessageRef, data: str) -> str:
        """Press a button with arbitrary callback data (an old or modified client forging it)."""
        stored = self._chat.messages[_message_id(message)]
        query_id = self._state.random_id()
        self._state.callbacks[query_id] = CallbackRecord(
            id=query_id, user_id=self.id, message_id=_message_id(message), data=data
        )
        self._state.push_update(
            "callback_query",
            {"id": query_id, "from": self.info.as_user(), "message": stored.raw,
             "chat_instance": str(self.id * 7919), "data": data},
        )
        return query_id

    def _find_button_message(self, message: MessageRef | None, text: str) -> BotMessage:
        visible = self.messages
        if message is None:
            for candidate in reversed(visible):
                try:
                    candidate.button(text)
                except LookupError:
                    continue
                return candidate
            raise LookupError(f"no visible bot message has an inline button {text!r}")
        message_id = _message_id(message)
        for candidate in visible:
            if candidate.message_id == message_id:
                return candidate
        raise LookupError(f"bot message {message_id} does not exist (or was deleted)")

    # -- waiting -------------------------------------------------------------------
    async def wait_for_message(
        self,
        predicate: MessagePredicate | None = None,
        *,
        timeout: float = 10.0,
        after: int | None = None,
    ) -> BotMessage:
        """First bot message event (new or edited) matching ``predicate``, from the chat's
        beginning or from cursor ``after`` (see :meth:`cursor`)."""
        start = after or 0

        def find() -> BotMessage | None:
            for event in self._chat.events[start:]:
                if not event.deleted and (predicate is None or predicate(event)):
                    return event
            return None

        return await self._state.wait_until(find, timeout, self._describe)

    async def wait_for_callback_answer(
        self, callback_query_id: str, *, timeout: float = 10.0
    ) -> CallbackAnswer:
        def answered() -> CallbackAnswer | None:
            record = self._state.callbacks.get(callback_query_id)
            return record.answer if record else None

        return await self._state.wait_until(answered, timeout, self._describe)

    def _describe(self) -> str:
        shown = [
            f"#{m.message_id}{' (edited)' if m.edited else ''}: {m.text[:80]!r} {m.buttons}"
            for m in self.messages[-5:]
        ]
        return f"Last bot messages in chat {self.id}: {shown}"

    # -- payments ------------------------------------------------------------------
    async def pay(
        self,
        invoice: MessageRef | None = None,
        *,
        timeout: float = 10.0,
        charge_id: str | None = None,
    ) -> Payment:
        """Pay an invoice (default: the newest one): push pre_checkout_query, wait for the
        bot's answer and, if it said ok, push the successful_payment message."""
        stored = self._find_invoice(invoice)
        details = stored.invoice or {}
        query = PreCheckoutRecord(
            id=self._state.random_id(),
            user_id=self.id,
            currency=details["currency"],
            total_amount=details["total_amount"],
            payload=details["payload"],
        )
        self._state.pre_checkouts[query.id] = query
        self._chat.started = True
        self._state.push_update(
            "pre_checkout_query",
            {
                "id": query.id,
                "from": self.info.as_user(),
                "currency": query.currency,
                "total_amount": query.total_amount,
                "invoice_payload": query.payload,
            },
        )
        ok, error = await self._state.wait_until(lambda: query.answer, timeout, self._describe)
        payment = Payment(
            query.id, ok, error, query.payload, query.currency, query.total_amount, None, None
        )
        if not ok:
            return payment
        message = await self.send_successful_payment(
            payload=query.payload,
            total_amount=query.total_amount,
            currency=query.currency,
            charge_id=charge_id,
        )
        charge = message["successful_payment"]["telegram_payment_charge_id"]
        return Payment(
            query.id, ok, error, query.payload, query.currency, query.total_amount, charge, message
        )

    async def send_successful_payment(
        self,
        *,
        payload: str,
        total_amount: int,
        currency: str = "XTR",
        charge_id: str | None = None,
    ) -> dict[str, Any]:
        """Push a successful_payment message (also usable to simulate a duplicate)."""
        charge_id = charge_id or f"stxFAKE{self._state.random_id()}"
        self._state.charges.setdefault(
            charge_id, Charge(charge_id, self.id, currency, total_amount, payload)
        )
        successful = {
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": "",
        }
        return self._push_message({"successful_payment": successful}, kind="other")

    async def repeat_payment(self, payment: Payment) -> dict[str, Any]:
        """Deliver the same successful_payment again (same charge id), as Telegram may."""
        if payment.charge_id is None:
            raise ValueError("the payment did not go through; nothing to repeat")
        return await self.send_successful_payment(
            payload=payment.payload,
            total_amount=payment.total_amount,
            currency=payment.currency,
            charge_id=payment.charge_id,
        )

    def _find_invoice(self, invoice: MessageRef | None) -> StoredMessage:
        candidates = [
            m for m in self._chat.messages.values() if m.kind == "invoice" and not m.deleted
        ]
        if invoice is not None:
            wanted = _message_id(invoice)
            candidates = [m for m in candidates if m.raw["message_id"] == wanted]
        if not candidates:
            raise LookupError(f"no invoice message {invoice!r} in chat {self.id}")
        return candidates[-1]
