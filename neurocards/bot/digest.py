"""The owner's daily digest: at `ops.digest_time` (UTC) each admin gets one photo, the 14-day
chart, with the day's numbers under it. Checked every minute and at start-up; the day is
claimed in the database before anything is sent, so restarts never send it twice."""

from __future__ import annotations

import asyncio
import logging
import time

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile

from neurocards.bot import texts
from neurocards.services import Services
from neurocards.services.costs import forecast, margin
from neurocards.services.digest_chart import render_chart
from neurocards.store.db import Database
from neurocards.store.stats import DayNumbers, daily_numbers, period_stats

log = logging.getLogger("neurocards.digest")

CHART_DAYS = 14
CAPTION_LIMIT = 1024  # Telegram's photo caption limit (the HTML source is an upper bound of it)


async def chart_png(db: Database, now: float | None = None) -> bytes:
    return await asyncio.to_thread(render_chart, await daily_numbers(db, CHART_DAYS, now))


class DailyDigest:
    def __init__(self, bot: Bot, db: Database, admin_ids: tuple[int, ...], digest_time: str,
                 svc: Services | None = None) -> None:
        self.bot = bot
        self.db = db
        self.svc = svc  # for the week's margin, promo redemptions and the KIE forecast
        self.admin_ids = admin_ids
        hours, _, minutes = digest_time.partition(":")
        self.due_s = int(hours) * 3600 + int(minutes) * 60 if digest_time else None

    async def run_due(self, now: float | None = None) -> bool:
        """Send today's digest if it is due and not sent yet; True if it was sent now."""
        now = time.time() if now is None else now
        if self.due_s is None or not self.admin_ids or now % 86400 < self.due_s:
            return False
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        claimed = await self.db.execute("INSERT OR IGNORE INTO digests_sent (day, sent_at) VALUES (?, ?)",
                                        (day, now))
        if not claimed:
            return False
        numbers = await daily_numbers(self.db, CHART_DAYS, now)
        png = await asyncio.to_thread(render_chart, numbers)
        caption = await self._caption(numbers, now)
        for admin_id in self.admin_ids:
            try:
                await self.bot.send_photo(admin_id, BufferedInputFile(png, f"neurocards_{day}.png"),
                                          caption=caption)
            except TelegramAPIError as exc:  # an unreachable admin must not stop the others
                log.warning("digest to admin %d failed: %s", admin_id, type(exc).__name__)
        log.info("daily digest for %s sent to %d admins", day, len(self.admin_ids))
        return True

    async def _caption(self, numbers: list[DayNumbers], now: float) -> str:
        hm = time.strftime("%H:%M", time.gmtime(now))
        if self.svc is None:
            return texts.daily_digest(numbers[-2], numbers[-1], hm)
        week = await period_stats(self.db, 7, now)
        week_margin = margin(week, self.svc.config)
        balance = await forecast(self.svc.kie_balance, self.svc.costs)
        caption = texts.daily_digest(numbers[-2], numbers[-1], hm, texts.digest_business(week, week_margin, balance))
        if len(caption) > CAPTION_LIMIT:  # many promo codes: the codes go, the money stays
            caption = texts.daily_digest(numbers[-2], numbers[-1], hm,
                                         texts.digest_business(week, week_margin, balance, with_promo=False))
        return caption[:CAPTION_LIMIT]
