"""Logs what users do (one insert per update) for the dashboards; never stops an update."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject

from neurocards.bot.keyboards import (
    AgainCb,
    ConfirmCb,
    MenuCb,
    PayCb,
    ProfileCb,
    QuantityCb,
    ReplayCb,
    TemplateCb,
    VideosCb,
    WishesCb,
)
from neurocards.services import Services

log = logging.getLogger("neurocards.activity")

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

# Callback prefixes as readable names for the dashboards.
BUTTON_NAMES = {
    MenuCb.__prefix__: "menu", TemplateCb.__prefix__: "template", WishesCb.__prefix__: "wishes",
    QuantityCb.__prefix__: "quantity", ConfirmCb.__prefix__: "confirm", AgainCb.__prefix__: "again",
    PayCb.__prefix__: "pay", ProfileCb.__prefix__: "profile", VideosCb.__prefix__: "videos",
    ReplayCb.__prefix__: "replay",
}


def describe(event: TelegramObject) -> tuple[str, str | None] | None:
    """(action, detail) for an update, or None when it is not worth a row."""
    if isinstance(event, CallbackQuery):
        parts = (event.data or "").split(":")
        name = BUTTON_NAMES.get(parts[0], parts[0] or "unknown")
        if name == "confirm" and len(parts) > 1 and parts[1] == "launch":
            return "launch", None  # the job launch press; the jobs table has the outcome
        # The first field names the button when it is a word (menu:create), not an id or a count.
        if len(parts) > 1 and parts[1] and not parts[1].isdigit():
            name = f"{name}:{parts[1]}"
        return f"button:{name}", event.data
    if isinstance(event, Message):
        if event.successful_payment is not None:
            return None  # logged by Payments together with the credits
        if event.photo or event.document:
            return "photo", None
        text = event.text or ""
        if text.startswith("/"):
            command, _, args = text[1:].partition(" ")
            command = command.split("@", 1)[0].lower()
            if command == "start":
                return "start", args or None
            return f"command:{command[:32]}", None
        if text:
            return "text", None
    return None


class ActivityMiddleware(BaseMiddleware):
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user = data.get("user")
        described = describe(event) if user is not None else None
        if described is not None:
            try:
                await self.services.activity.log(user.id, *described)  # type: ignore[union-attr]
            except Exception as exc:  # analytics must never cost the user an answer
                log.warning("activity log failed: %s", type(exc).__name__)
        return await handler(event, data)
