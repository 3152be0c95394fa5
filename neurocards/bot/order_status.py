"""One live status message per order, edited in place as its jobs move, then one summary.

Edits are the least urgent thing the bot sends: at most one per status message per
`orders.status_edit_interval_s`, and only when the global Telegram rate limiter has room to spare,
so videos and replies never wait behind them. "Message is not modified" and a status message the
seller deleted are not errors: the status simply stays as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
)

from neurocards.bot import keyboards, texts
from neurocards.bot.rate_limit import TelegramPacing
from neurocards.config import Config
from neurocards.jobs.order_progress import OrderProgress, order_progress
from neurocards.store.orders import Order, OrderJob, OrderStore
from neurocards.store.users import UserStore

log = logging.getLogger("neurocards.orders")

MEDIANS_MAX_AGE_S = 30.0


def render(order: Order, progress: OrderProgress) -> str:
    lines = []
    for job in progress.jobs:
        values = dict(job.values)
        if job.step == "refunded":
            values["reason"] = texts.refund_reason(str(values["reason"]))
        lines.append(texts.status_line(job.pos, progress.total, job.product, job.step, **values))
    return texts.order_status(order.id, lines, progress.done, progress.total, progress.eta_minutes)


class OrderStatusBoard:
    def __init__(self, bot: Bot, config: Config, orders: OrderStore, users: UserStore,
                 pacing: TelegramPacing | None = None) -> None:
        self.bot = bot
        self.config = config
        self.orders = orders
        self.users = users
        self.pacing = pacing
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._medians: tuple[float, dict[str, float]] = (0.0, {})
        self.edits = 0  # status edits made (for the bench)

    # ---- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="order-status")

    async def stop(self) -> None:
        # The flag as well as the cancel: on Python 3.11 asyncio.wait_for can swallow a
        # cancellation that arrives just as the wake-up event fires.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("order status pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.orders.status_tick_s)

    # ---- one pass over the open orders -----------------------------------------
    async def progress(self, order: Order, jobs: list[OrderJob] | None = None,
                       places: dict[int, int] | None = None) -> OrderProgress:
        now = time.time()
        if now - self._medians[0] > MEDIANS_MAX_AGE_S:
            self._medians = (now, await self.orders.median_durations())
        return order_progress(
            jobs if jobs is not None else await self.orders.jobs(order.id),
            places if places is not None else await self.orders.queue_places(),
            self._medians[1], parallel=self.config.generation.max_parallel,
            attempts_max=len(self.config.generation.retry.temporary_delays_s) + 1, now=now)

    async def tick(self) -> None:
        open_orders = await self.orders.open_orders()
        if not open_orders:
            return
        places = await self.orders.queue_places()
        for order in open_orders:
            await self._refresh(order, places)

    async def _refresh(self, order: Order, places: dict[int, int]) -> None:
        jobs = await self.orders.jobs(order.id)
        progress = await self.progress(order, jobs, places)
        text = render(order, progress)
        now = time.time()
        if order.status_message_id is None:
            await self._post(order, text, now)
        elif text != order.status_text:
            if order.status_message_id == 0:  # deleted by the seller or the chat blocked: nowhere to show it
                await self.orders.set_status(order.id, message_id=0, text=text, at=now)
            elif not await self._edit_allowed(order, now, final=progress.finished):
                return  # the next pass shows the latest
            else:
                await self._edit(order, text, now)
                return  # the summary follows the final status, never overtakes it
        if progress.finished and await self.orders.claim_summary(order.id):
            await self._summary(order, jobs, progress)

    async def _edit_allowed(self, order: Order, now: float, *, final: bool) -> bool:
        """Not within the interval of the last edit, and only with rate to spare (videos first);
        the final edit of an order (one per order, the summary waits for it) needs no spare rate."""
        if now - (order.status_edited_at or 0.0) < self.config.orders.status_edit_interval_s:
            return False
        return final or self.pacing is None or await self.pacing.acquire_spare(order.chat_id)

    async def _post(self, order: Order, text: str, now: float) -> None:
        try:
            message = await self.bot.send_message(order.chat_id, text)
        except TelegramForbiddenError:  # the seller blocked the bot: nowhere to show it, stop trying
            await self.orders.set_status(order.id, message_id=0, text=text, at=now)
            return
        except TelegramAPIError as exc:
            log.warning("order %d: status message not sent: %s", order.id, exc)
            return
        await self.orders.set_status(order.id, message_id=message.message_id, text=text, at=now)

    async def _edit(self, order: Order, text: str, now: float) -> None:
        assert order.status_message_id
        try:
            await self.bot.edit_message_text(text, chat_id=order.chat_id, message_id=order.status_message_id)
            self.edits += 1
        except TelegramRetryAfter as exc:  # flood control: this status waits, videos do not
            log.info("order %d: status edit postponed %.0fs by flood control", order.id, exc.retry_after)
            await self.orders.set_status(order.id, message_id=order.status_message_id,
                                         text=order.status_text or "", at=now + exc.retry_after)
            return
        except TelegramBadRequest as exc:
            # "Message is not modified": it already shows this. Deleted by the seller ("message to
            # edit not found"): the status stays gone, nothing is re-sent, no further edits are tried
            # ("📦 Мои заказы" still shows it).
            if "not modified" not in exc.message:
                log.info("order %d: status message gone: %s", order.id, exc.message)
                await self.orders.set_status(order.id, message_id=0, text=text, at=now)
                return
        except TelegramForbiddenError:
            await self.orders.set_status(order.id, message_id=0, text=text, at=now)
            return
        except TelegramAPIError as exc:
            log.warning("order %d: status edit failed: %s", order.id, exc)
            return
        await self.orders.set_status(order.id, message_id=order.status_message_id, text=text, at=now)

    async def _summary(self, order: Order, jobs: list[OrderJob], progress: OrderProgress) -> None:
        if order.jobs_total < 2:  # a single video is its own summary
            return
        refunded = [j for j in jobs if j.refunded]
        reasons = [texts.refund_reason(j.error_class) for j in refunded]
        text = texts.order_summary(order.id, progress.done, progress.total, len(refunded),
                                   sum(j.refunded for j in refunded), reasons,
                                   await self.users.balance(order.user_id))
        markup = keyboards.order_summary(order.id, with_zip=progress.done > 1)
        try:
            await self.bot.send_message(order.chat_id, text, reply_markup=markup)
        except TelegramAPIError as exc:
            log.warning("order %d: summary not sent: %s", order.id, exc)
