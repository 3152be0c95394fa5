"""Pacing outgoing messages to Telegram's limits, so the bot queues instead of collecting 429s.

Telegram allows about 30 messages per second in total and about one per second in one chat
(short bursts are tolerated). Answers to callback queries and non-message calls are not paced.

Sends made inside `background_sends()` (broadcasts) come last: each one waits until no
seller-facing send is waiting for the limiter, and they have their own, lower rate on top, so
a broadcast to 10,000 sellers leaves the rest of the budget to videos and the dialogue.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiolimiter import AsyncLimiter

PACED_PREFIXES = ("send", "copy", "forward")
# Status edits use the global limiter only while at least this share of it is free.
SPARE_SHARE = 0.5

_background: ContextVar[bool] = ContextVar("neurocards_background_send", default=False)


@contextmanager
def background_sends() -> Iterator[None]:
    """Telegram sends made in this block yield to everything else (and are not retried on a 429:
    the caller decides what a flood wait means for it)."""
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)


class TelegramPacing(BaseRequestMiddleware):
    def __init__(self, per_second: float = 30.0, per_chat_burst: int = 3, per_chat_period_s: float = 3.0,
                 max_chats: int = 10_000, max_flood_wait_s: float = 10.0, background_per_s: float = 20.0) -> None:
        self.max_flood_wait_s = max_flood_wait_s
        self.total = AsyncLimiter(per_second, 1.0) if per_second > 0 else None
        # Background sends also leave part of the total to bursts of foreground ones.
        self.background = AsyncLimiter(1, 1 / background_per_s) if background_per_s > 0 else None
        self._foreground_waiting = 0
        self._foreground_idle = asyncio.Event()
        self._foreground_idle.set()
        self.per_chat_burst = per_chat_burst
        self.per_chat_period_s = per_chat_period_s
        self.max_chats = max_chats
        self._chats: OrderedDict[Any, AsyncLimiter] = OrderedDict()

    def _chat_limiter(self, chat_id: Any) -> AsyncLimiter:
        limiter = self._chats.pop(chat_id, None)
        if limiter is None:
            limiter = AsyncLimiter(self.per_chat_burst, self.per_chat_period_s)
        self._chats[chat_id] = limiter  # most recently used last; the oldest are forgotten
        if len(self._chats) > self.max_chats:
            self._chats.popitem(last=False)
        return limiter

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                       method: TelegramMethod[TelegramType]) -> Any:
        name = method.__api_method__
        if not name.startswith(PACED_PREFIXES) or name == "sendChatAction":
            return await self._with_flood_retry(make_request, bot, method)
        chat_id = getattr(method, "chat_id", None)
        if _background.get():
            return await self._background_send(make_request, bot, method, chat_id)
        self._foreground_waiting += 1
        self._foreground_idle.clear()
        try:
            if chat_id is not None and self.per_chat_burst > 0:
                await self._chat_limiter(chat_id).acquire()
            if self.total is not None:
                await self.total.acquire()
        finally:
            self._foreground_waiting -= 1
            if not self._foreground_waiting:
                self._foreground_idle.set()
        return await self._with_flood_retry(make_request, bot, method)

    async def _background_send(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                               method: TelegramMethod[TelegramType], chat_id: Any) -> Any:
        if self.background is not None:
            await self.background.acquire()
        if chat_id is not None and self.per_chat_burst > 0:
            await self._chat_limiter(chat_id).acquire()
        while self._foreground_waiting:
            await self._foreground_idle.wait()
        if self.total is not None:
            await self.total.acquire()
        return await make_request(bot, method)

    async def acquire_spare(self, chat_id: Any) -> bool:
        """Take one send for something that can wait (a status edit) only while the limiters have
        room to spare, so it never makes a video or a reply wait; False: try again later."""
        if self._foreground_waiting:
            return False
        chat = self._chat_limiter(chat_id) if self.per_chat_burst > 0 else None
        if chat is not None and not chat.has_capacity(min(2, self.per_chat_burst)):
            return False
        if self.total is not None and not self.total.has_capacity(max(1.0, self.total.max_rate * SPARE_SHARE)):
            return False
        # Both have capacity: neither acquire waits.
        if chat is not None:
            await chat.acquire()
        if self.total is not None:
            await self.total.acquire()
        return True

    async def _with_flood_retry(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                                method: TelegramMethod[TelegramType]) -> Any:
        """A short flood wait is sat out once, so a reply in the dialogue is not lost to a 429."""
        try:
            return await make_request(bot, method)
        except TelegramRetryAfter as exc:
            if exc.retry_after > self.max_flood_wait_s:
                raise
            await asyncio.sleep(exc.retry_after)
            return await make_request(bot, method)
