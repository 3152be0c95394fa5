"""Outgoing messages are paced to Telegram's limits instead of provoking 429s."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiogram.methods import AnswerCallbackQuery, SendMessage

from neurocards.bot.rate_limit import TelegramPacing


async def _send_all(pacing: TelegramPacing, methods: list[Any]) -> tuple[float, list[float]]:
    stamps: list[float] = []
    start = time.monotonic()

    async def make_request(bot: Any, method: Any) -> bool:
        stamps.append(time.monotonic() - start)
        return True

    await asyncio.gather(*(pacing(make_request, None, m) for m in methods))  # type: ignore[arg-type]
    return time.monotonic() - start, stamps


async def test_one_chat_gets_a_burst_then_a_steady_pace() -> None:
    pacing = TelegramPacing(per_second=0, per_chat_burst=3, per_chat_period_s=0.3)
    elapsed, stamps = await _send_all(pacing, [SendMessage(chat_id=1, text="x") for _ in range(6)])
    assert sum(1 for s in stamps if s < 0.05) == 3  # the burst goes at once
    assert elapsed >= 0.25  # the rest at ~10/s


async def test_total_rate_across_chats_and_unpaced_answers() -> None:
    pacing = TelegramPacing(per_second=20, per_chat_burst=0)
    elapsed, _ = await _send_all(pacing, [SendMessage(chat_id=i, text="x") for i in range(40)])
    assert elapsed >= 0.9  # 40 messages at 20/s (after the first second's allowance)
    quick, _ = await _send_all(pacing, [AnswerCallbackQuery(callback_query_id=str(i)) for i in range(100)])
    assert quick < 0.2  # answers to button presses are never held back


async def test_background_sends_wait_for_every_waiting_foreground_send() -> None:
    """A broadcast keeps the limiter busy; sellers' messages still go first, one broadcast send at most
    slipping in between, and the broadcast never passes its own rate."""
    from neurocards.bot.rate_limit import background_sends

    pacing = TelegramPacing(per_second=20, per_chat_burst=0, background_per_s=10)
    order: list[str] = []

    async def make_request(bot: Any, method: Any) -> bool:
        order.append(method.text)
        return True

    async def broadcast() -> None:
        with background_sends():
            for i in range(30):
                await pacing(make_request, None, SendMessage(chat_id=1000 + i, text="b"))  # type: ignore[arg-type]

    task = asyncio.create_task(broadcast())
    await asyncio.sleep(0.35)
    started = time.monotonic()
    await asyncio.gather(*(pacing(make_request, None, SendMessage(chat_id=i, text="f"))  # type: ignore[arg-type]
                           for i in range(40)))
    foreground_s = time.monotonic() - started
    task.cancel()
    first, last = order.index("f"), len(order) - 1 - order[::-1].index("f")
    assert order[first:last + 1].count("b") <= 1  # nothing of the broadcast while sellers wait
    assert foreground_s < 1.4  # 40 at 20/s: the full rate, as without a broadcast
    assert order[:first].count("b") <= 5  # 0.35 s at 10/s (+ the first one at once)
