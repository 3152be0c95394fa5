"""Tracking users, keeping one user from flooding the bot. (Handlers get the services as aiogram
workflow data: see builders.build_dispatcher.)"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject
from aiogram.types import User as TelegramUser

from neurocards.bot import texts
from neurocards.services import Services

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class UserTrackingMiddleware(BaseMiddleware):
    """Creates/refreshes the user (welcome credits once) and stops banned users here."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        tg_user: TelegramUser | None = data.get("event_from_user")
        if tg_user is None or tg_user.is_bot:
            return await handler(event, data)
        user, created = await self.services.users.touch(
            tg_user.id,
            username=tg_user.username,
            first_name=tg_user.first_name,
            language=tg_user.language_code,
            welcome_credits=self.services.config.credits.welcome,
        )
        # Stars already taken (a ban between pre-checkout and payment) must still be recorded.
        paid = isinstance(event, Message) and event.successful_payment is not None
        if user.is_banned and not paid:
            if isinstance(event, CallbackQuery):
                await event.answer(texts.banned(self.services.config.telegram.support_username), show_alert=True)
            elif isinstance(event, Message):
                await event.answer(texts.banned(self.services.config.telegram.support_username))
            return None
        data["user"] = user
        data["is_new_user"] = created
        return await handler(event, data)


class ThrottlingMiddleware(BaseMiddleware):
    """Drops updates from a user who sends faster than `rate` per second (bounded memory)."""

    def __init__(self, rate_per_s: float = 4.0, burst: int = 8, max_users: int = 100_000) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.max_users = max_users
        self._buckets: OrderedDict[int, tuple[float, float]] = OrderedDict()
        # An album is one action that arrives as one update per photo: its first photo pays for it.
        self._albums: OrderedDict[str, None] = OrderedDict()

    def _allow(self, user_id: int) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.pop(user_id, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        self._buckets[user_id] = (tokens - 1 if allowed else tokens, now)
        if len(self._buckets) > self.max_users:
            self._buckets.popitem(last=False)
        return allowed

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        tg_user: TelegramUser | None = data.get("event_from_user")
        # A successful payment is never dropped: the Stars are already taken.
        paid = isinstance(event, Message) and event.successful_payment is not None
        album = event.media_group_id if isinstance(event, Message) else None
        if album is not None and album in self._albums:
            return await handler(event, data)
        if tg_user is None or paid or self._allow(tg_user.id):
            if album is not None:
                self._albums[album] = None
                if len(self._albums) > self.max_users:
                    self._albums.popitem(last=False)
            return await handler(event, data)
        if isinstance(event, CallbackQuery):
            await event.answer(texts.TOO_FAST)
        return None
