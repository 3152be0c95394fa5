"""The owner's daily digest: one photo per admin per day (also across restarts), a 14-day chart
that decodes, the day's numbers under it; the same chart in /admin_stats and the CLI."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

from PIL import Image

from neurocards.cli import main
from neurocards.services.digest_chart import render_chart
from neurocards.store.stats import DayNumbers
from tests.harness import Harness, launch, videos
from tests.test_payments import buy

ADMIN = 9001


def decodes_as_png(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        img.load()
        return img.size


def test_the_chart_is_a_png_of_four_panels() -> None:
    days = [DayNumbers(day=f"2026-11-{d:02d}", delivered=d, failures_by_class={"temporary": d % 3, "timeout": 1},
                       revenue_stars=100 * d, new_users=d % 5, credits_charged=10 * d, credits_refunded=0)
            for d in range(17, 31)]
    assert decodes_as_png(render_chart(days)) == (1000, 700)
    empty = [DayNumbers(day="2026-11-30", delivered=0, failures_by_class={}, revenue_stars=0, new_users=0,
                        credits_charged=0, credits_refunded=0)]
    decodes_as_png(render_chart(empty))


async def test_digest_once_a_day_across_restarts_with_the_day_s_numbers(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}, "credits": {"welcome": 30}}
    admin = harness.tg.user(ADMIN, "Owner")
    await admin.send_text("/start")  # an admin who never wrote to the bot cannot be messaged
    await harness.start()
    seller = harness.tg.user(5501)
    await buy(seller, "120 кредитов")
    harness.kie.fail_task(fail_code="400", fail_msg="Your prompt was flagged by Website as violating content policies.")
    await launch(seller)
    await seller.wait_for_message(lambda m: "Кредиты возвращены" in m.text, timeout=15)
    await launch(seller)
    await harness.tg.wait_until(lambda: len(videos(seller)) == 1)
    await harness.wait_jobs(lambda rows: {r["state"] for r in rows} == {"done", "failed"})
    assert not [m for m in admin.messages if m.kind == "photo"]  # digest off so far

    harness.overrides["ops"] = {"digest_time": time.strftime("%H:%M", time.gmtime(time.time() - 120))}
    await harness.restart()
    digest = await admin.wait_for_message(lambda m: m.kind == "photo", timeout=20)
    assert decodes_as_png(digest.media or b"") == (1000, 700)
    today = time.strftime("%d.%m", time.gmtime())
    assert f"Сегодня, {today}" in digest.text and "Итоги за" in digest.text
    assert "Видео: 1" in digest.text and "user_violation 1" in digest.text
    assert "Выручка: 100" in digest.text and "Новых: 2" in digest.text  # the seller and the admin
    # The owner's money for the week: both paid KIE tasks (the refused one too), the margin, the KIE forecast.
    assert "Задач KIE: 2" in digest.text and "маржа" in digest.text and "💰 KIE:" in digest.text
    assert harness.query("SELECT day FROM digests_sent")[0]["day"] == time.strftime("%Y-%m-%d", time.gmtime())

    await harness.restart()
    assert harness.app is not None
    assert await harness.app.digest.run_due() is False  # already sent today
    await harness.stop()
    assert len([m for m in admin.messages if m.kind == "photo"]) == 1


async def test_admin_stats_has_the_chart_and_the_cli_writes_it(harness: Harness, tmp_path: Path) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}}
    await harness.start()
    admin = harness.tg.user(ADMIN)
    cursor = admin.cursor()
    await admin.send_text("/admin_stats")
    chart = await admin.wait_for_message(lambda m: m.kind == "photo", after=cursor, timeout=20)
    decodes_as_png(chart.media or b"")
    assert "14 дней" in chart.text
    await harness.stop()

    png = tmp_path / "chart.png"
    # As the README writes it, run by the operator (here in a thread: the test owns the event loop).
    assert await asyncio.to_thread(main, ["stats", "--config", str(harness.config_path), "--png", str(png)]) == 0
    assert decodes_as_png(png.read_bytes()) == (1000, 700)
