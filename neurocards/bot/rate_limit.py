"""Pacing outgoing messages to Telegram's limits, so the bot queues instead of collecting 429s.

Telegram allows about 30 messages per second in total and about one per second in one chat
(short bursts are tolerated). Answers to callback queries and non-message calls are not paced.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiolimiter import AsyncLimiter

PACED_PREFIXES = ("send", "copy", "forward")


class TelegramPacing(BaseRequestMiddleware):
    def __init__(self, per_second: float = 30.0, per_chat_burst: int = 3, per_chat_period_s: float = 3.0,
                 max_chats: int = 10_000, max_flood_wait_s: float = 10.0) -> None:
        self.max_flood_wait_s = max_flood_wait_s
        self.total = AsyncLimiter(per_second, 1.0) if per_second > 0 else None
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
        if chat_id is not None and self.per_chat_burst > 0:
            await self._chat_limiter(chat_id).acquire()
        if self.total is not None:
            await self.total.acquire()
        return await self._with_flood_retry(make_request, bot, method)

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
