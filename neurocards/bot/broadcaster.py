"""Delivers broadcasts inside the bot process: one send in flight per broadcast, paced behind
everything else, every outcome persisted per recipient (see store/broadcasts.py)."""

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
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import Message

from neurocards.bot import keyboards, texts
from neurocards.bot.rate_limit import background_sends
from neurocards.config import BroadcastConfig
from neurocards.store.broadcasts import Broadcast, BroadcastStore, Counts, Draft

log = logging.getLogger("neurocards.broadcast")

STOP_GRACE_S = 5.0  # on shutdown, the send in flight may finish so its outcome is known


async def send_content(bot: Bot, chat_id: int, draft: Draft) -> Message:
    """The broadcast message exactly as sellers get it (the admin's preview uses this too)."""
    markup = keyboards.broadcast_message(draft.button_text, draft.button_url)
    if draft.kind == "photo":
        return await bot.send_photo(chat_id, draft.file_id or "", caption=draft.body or None, reply_markup=markup)
    if draft.kind == "video":
        return await bot.send_video(chat_id, draft.file_id or "", caption=draft.body or None, reply_markup=markup,
                                    supports_streaming=True)
    return await bot.send_message(chat_id, draft.body, reply_markup=markup)


def _draft(b: Broadcast) -> Draft:
    return Draft(kind=b.kind, body=b.body, file_id=b.file_id, button_text=b.button_text, button_url=b.button_url)


class Broadcaster:
    def __init__(self, bot: Bot, store: BroadcastStore, config: BroadcastConfig) -> None:
        self.bot = bot
        self.store = store
        self.config = config
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = False

    async def start(self) -> int:
        """Resume broadcasts cut off by a restart; returns how many."""
        interrupted = await self.store.settle_interrupted()
        if interrupted:
            log.warning("%d broadcast sends were in flight at the last stop: counted as unknown", interrupted)
        running = await self.store.running()
        for broadcast in running:
            self.launch(broadcast)
        return len(running)

    def launch(self, broadcast: Broadcast) -> None:
        if broadcast.id not in self._tasks and not self._stopping:
            self._tasks[broadcast.id] = asyncio.create_task(self._run(broadcast), name=f"broadcast-{broadcast.id}")

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def wait(self, broadcast_id: int) -> None:
        task = self._tasks.get(broadcast_id)
        if task is not None:
            await asyncio.shield(task)

    async def _run(self, broadcast: Broadcast) -> None:
        try:
            await self._deliver_all(broadcast)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("broadcast %d stopped by an error; it resumes at the next start", broadcast.id)
        finally:
            self._tasks.pop(broadcast.id, None)

    async def _deliver_all(self, broadcast: Broadcast) -> None:
        draft = _draft(broadcast)
        progress_id = broadcast.progress_message_id or await self._post_progress(broadcast)
        started, delivered_here = time.monotonic(), 0
        next_progress = started + self.config.progress_every_s
        while not self._stopping:
            claim = await self.store.claim_next(broadcast.id)
            if claim is None:
                break
            user_id, eligible = claim
            if not eligible:
                await self.store.settle(broadcast.id, user_id, "failed", "banned or opted out")
                continue
            outcome, error = await self._send_one(broadcast.id, user_id, draft)
            if outcome is None:
                continue  # flood wait sat out; the recipient is pending again
            await self.store.settle(broadcast.id, user_id, outcome, error)
            if outcome == "blocked":
                await self.store.mark_unreachable(user_id)
            delivered_here += 1
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + self.config.progress_every_s
                rate = delivered_here / max(time.monotonic() - started, 1e-6)
                await self._edit_progress(broadcast, progress_id, await self.store.counts(broadcast.id), rate)
        if self._stopping:
            return
        finished = await self.store.finish(broadcast.id)
        counts = await self.store.counts(broadcast.id)
        log.info("broadcast %d %s: %s", broadcast.id, "done" if finished else "stopped", counts)
        await self._edit_progress(broadcast, progress_id, counts, None, final="done" if finished else "stopped")

    async def _send_one(self, broadcast_id: int, user_id: int, draft: Draft) -> tuple[str | None, str | None]:
        try:
            with background_sends():
                await send_content(self.bot, user_id, draft)
            return "sent", None
        except TelegramRetryAfter as exc:  # Telegram did not send it: wait, then the same recipient again
            await self.store.release(broadcast_id, user_id)
            log.warning("broadcast %d: flood wait %ss", broadcast_id, exc.retry_after)
            await asyncio.sleep(exc.retry_after)
            return None, None
        except TelegramForbiddenError as exc:
            return "blocked", exc.message[:200]
        except (TelegramNetworkError, TelegramServerError) as exc:  # it may have arrived: never repeated
            return "unknown", f"{type(exc).__name__}: {exc.message}"[:200]
        except (TelegramBadRequest, TelegramAPIError) as exc:
            return "failed", f"{type(exc).__name__}: {exc.message}"[:200]

    async def _post_progress(self, broadcast: Broadcast) -> int | None:
        counts = await self.store.counts(broadcast.id)
        try:
            message = await self.bot.send_message(broadcast.admin_chat_id, texts.broadcast_progress(
                broadcast.id, counts, None))
        except TelegramAPIError as exc:
            log.warning("broadcast %d: progress message failed: %s", broadcast.id, exc)
            return None
        await self.store.set_progress_message(broadcast.id, message.message_id)
        return message.message_id

    async def _edit_progress(self, broadcast: Broadcast, message_id: int | None, counts: Counts,
                             rate_per_s: float | None, final: str | None = None) -> None:
        eta_s = counts.pending / rate_per_s if rate_per_s else None
        text = texts.broadcast_progress(broadcast.id, counts, eta_s, final=final)
        try:
            if message_id is None:
                await self.bot.send_message(broadcast.admin_chat_id, text)
            else:
                await self.bot.edit_message_text(text, chat_id=broadcast.admin_chat_id, message_id=message_id)
        except TelegramAPIError as exc:
            if "not modified" not in str(exc):
                log.warning("broadcast %d: progress update failed: %s", broadcast.id, exc)
