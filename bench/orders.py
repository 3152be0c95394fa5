"""Scenario: many sellers each send a 10-photo album and launch it as one order, with the live
status messages on (edited in place every `orders.status_edit_interval_s`), and the same run with
the edits off. What is compared: how fast the videos go out (the bot paces sends to ~30/s, so the
status edits must only use what the videos leave), and the update→answer latency meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from tests.fakes.telegram import FakeUser
from tests.fakes.telegram_state import BotMessage
from tests.fakes.telegram_user import AlbumPart
from tests.harness import product_jpeg

from .fakes import BenchTelegram
from .scenarios import (
    STEP_TIMEOUT_S,
    CpuWindow,
    Settings,
    _latency,
    make_users,
    press_launch,
    quiet_gc,
    world,
)

PRODUCTS = 10
ALBUM = [product_jpeg(color=(20 * i, 200 - 15 * i, 40)) for i in range(PRODUCTS)]
EDITS_OFF_S = 1e6  # an interval no order lives through: the status is posted once, never edited


async def walk_album(tg: BenchTelegram, user: FakeUser) -> BotMessage:
    """/start, one album of 10 captioned product photos, one style and format, no wishes, 1 video each."""

    async def step(action: Any, expect: Any) -> BotMessage:
        cursor = user.cursor()
        await action
        return await tg.wait_for(user, expect, after=cursor, timeout_s=STEP_TIMEOUT_S)

    await step(user.send_text("/start"), lambda m: "Баланс" in m.text and bool(m.buttons))
    parts = [AlbumPart(photo, caption=f"Товар {n} продавца {user.id}") for n, photo in enumerate(ALBUM, 1)]
    styles = await step(user.send_album(parts), lambda m: "Выберите стиль" in m.text)
    formats = await step(user.click(styles, "🔄 Студийный поворот"), lambda m: "Формат видео" in m.text)
    wishes = await step(user.click(formats, "⏭ Оставить"), lambda m: "пожелания" in m.text)
    qty = await step(user.click(wishes, "⏭ Пропустить"), lambda m: "Сколько видео" in m.text)
    return await step(user.click(qty, "1 видео"), lambda m: "Проверьте заказ" in m.text)


async def orders(settings: Settings, *, sellers: int, delay_s: float, edits: bool, name: str,
                 latency_rate: float, latency_s: float) -> dict[str, Any]:
    jobs = sellers * PRODUCTS
    interval = 5.0 if edits else EDITS_OFF_S
    extra = {"orders": {"status_edit_interval_s": interval}}
    async with world(settings, name, accounts=True, welcome=10 * PRODUCTS, extra=extra) as w:
        w.kie.generation_delay_s = delay_s
        w.bot.spawn()
        startup_s = await w.bot.wait_ready()
        users = make_users(w.tg, sellers, 400_000)
        walk_started = time.monotonic()
        confirms = await asyncio.gather(*(walk_album(w.tg, u) for u in users))
        walk_s = time.monotonic() - walk_started
        w.tg.expect_videos(jobs)
        with quiet_gc():
            cpu = CpuWindow(w.bot)
            pressed_at = await press_launch(users, list(confirms))
            # Seller taps while the orders run: statuses being edited, then videos going out.
            probe = dataclasses.replace(settings, latency_rate=latency_rate, latency_s=latency_s)
            latency = await _latency(w, users, probe)
            timed_out = False
            try:
                async with asyncio.timeout(60 + delay_s + jobs / 10):
                    await w.tg.videos_done.wait()
            except TimeoutError:
                timed_out = True
            usage = cpu.result()
        # The last status edits, then the summaries (each follows its order's final status edit).
        await asyncio.sleep(interval + 2.0 if edits else 1.0)
        times = sorted(w.tg.video_times)
        status_posts = [c for c in w.tg.calls_of("sendMessage") if "📦 <b>Заказ" in str(c.params.get("text"))]
        status_ids = {c.result["message_id"] for c in status_posts if isinstance(c.result, dict)}
        edit_calls = [c for c in w.tg.calls_of("editMessageText")
                      if c.params.get("message_id") in status_ids and c.status == 200]
        during = [c for c in edit_calls if times and times[0] <= c.at <= times[-1]]
        span = (times[-1] - times[0]) if len(times) > 1 else 0.0
        summaries = sum("🏁" in str(c.params.get("text")) for c in w.tg.calls_of("sendMessage"))
        return {
            "sellers": sellers, "jobs": jobs, "delivered": len(times), "timed_out": timed_out,
            "edits_on": edits, "delay_s": delay_s, "startup_s": startup_s, "walk_s": walk_s,
            "delivery_rate": (len(times) - 1) / span if span > 0 else 0.0,
            "elapsed_s": (times[-1] - pressed_at) if times else None,
            "status_messages": len(status_posts), "status_edits": len(edit_calls),
            "status_edits_while_sending": len(during), "summaries": summaries,
            "latency": {k: v for k, v in latency.items() if k != "samples"},
            "tg_peak_sends_per_s": w.tg.peak_sends_per_second(), "tg_429": w.tg.too_many_requests,
            "tg_errors": dict(w.tg.errors), "kie_429": sum(w.kie.rate_limited.values()),
            "db_states": w.bot.job_states(), "peak_rss_mb": w.bot.peak_rss_mb(), **usage,
            "launcher": w.bot.launcher,
        }


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for key in ("orders", "orders_no_edits"):
        r = results.get(key)
        if isinstance(r, dict):
            lat = r["latency"]
            what = "status edits on (1 per order per 5 s, spare rate only)" if r["edits_on"] \
                else "status edits off (posted once, never edited)"
            out.append((
                f"Orders: {r['sellers']} sellers × {PRODUCTS}-photo album, {r['delay_s']:.0f} s generation "
                f"delay, {what}; video delivery rate first→last video, update→answer p50 / p99",
                "info" if not r["edits_on"] else "rate as with edits off",
                f"{r['delivery_rate']:.1f} videos/s ({r['delivered']}/{r['jobs']}); "
                f"{r['status_edits']} status edits ({r['status_edits_while_sending']} while videos went out); "
                f"{_ms(lat.get('p50_ms'))} / {_ms(lat.get('p99_ms'))} ms", "—"))
        elif r is not None:
            out.append((f"Orders ({key})", "info", f"ERROR: {r}", "—"))
    return out


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}"
