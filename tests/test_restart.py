"""Killing the bot process (SIGKILL) at any moment loses nothing and pays for nothing twice."""

from __future__ import annotations

import asyncio

from tests.harness import Harness, launch, videos


async def _wait_state(harness: Harness, state: str, timeout: float = 20.0) -> None:
    await harness.wait_jobs(lambda rows: bool(rows) and all(r["state"] == state for r in rows), timeout)


async def test_kill_while_generating_resumes_the_same_task(harness: Harness) -> None:
    harness.kie.generation_delay_s = 3600  # the task stays "generating" until we say otherwise
    harness.overrides = {"telegram": {"admin_ids": [900]}}
    await harness.spawn_ready()
    admin = harness.tg.user(900, "Admin")
    await admin.send_text("/start")
    await admin.wait_for_message(lambda m: "Баланс" in m.text, timeout=30)
    user = harness.tg.user(2001)
    await launch(user, quantity=2, description="Кожаный кошелёк коричневый")
    await _wait_state(harness, "generating")
    assert harness.kie.count("veoGenerate") == 2
    harness.kill()

    harness.kie.generation_delay_s = 0  # KIE finishes while the bot is down
    await harness.spawn_ready()
    await harness.tg.wait_until(lambda: len(videos(user)) == 2, timeout=30)
    await _wait_state(harness, "done")
    await asyncio.sleep(0.5)  # would a duplicate delivery or a second task show up?
    assert len(videos(user)) == 2
    assert harness.kie.count("veoGenerate") == 2  # polled the old tasks, never created new ones
    assert harness.ledger(2001) == [(30, "welcome"), (-10, "job_charge"), (-10, "job_charge")]
    assert harness.balance(2001) == 10
    # The operator hears that the bot came back and picked up the unfinished work.
    await admin.wait_for_message(lambda m: "продолжаю 2 незавершённых" in m.text)


async def test_kill_during_retry_wait_continues_the_retry(harness: Harness) -> None:
    harness.overrides = {"generation.retry": {"temporary_delays_s": [3, 3, 3, 3]}}
    harness.kie.fail_next("veoGenerate", http_status=500)
    await harness.spawn_ready()
    user = harness.tg.user(2002)
    await launch(user, quantity=1)
    await user.wait_for_message(lambda m: "Первая попытка не удалась" in m.text, timeout=30)
    rows = harness.jobs(2002)
    assert rows[0]["attempts"] == 1 and rows[0]["state"] == "submitting" and rows[0]["task_id"] is None
    harness.kill()

    harness.overrides = {"generation.retry": {"temporary_delays_s": [3, 3, 3, 3]}}
    await harness.spawn_ready()
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=30)
    await _wait_state(harness, "done")
    assert harness.kie.count("veoGenerate") == 2  # the failed call and exactly one retry
    assert sum("Первая попытка" in m.text for m in user.messages) == 1
    assert harness.ledger(2002) == [(30, "welcome"), (-10, "job_charge")]


async def _warm(harness: Harness, user_id: int) -> None:
    """A freshly started process answers its first update slowly (imports) when the CPU is busy:
    wait for that first answer on its own generous deadline, so later waits measure the bot only."""
    user = harness.tg.user(user_id)
    cursor = user.cursor()
    await user.send_text("/start")
    await user.wait_for_message(lambda m: "Баланс" in m.text, after=cursor, timeout=60)


async def test_kill_after_download_goes_straight_to_sending(harness: Harness) -> None:
    harness.tg.fail_next("sendVideo", status=429, description="Too Many Requests: retry after 30",
                         retry_after=30)
    await harness.spawn_ready()
    await _warm(harness, 2003)
    user = harness.tg.user(2003)
    await launch(user, quantity=1)
    await _wait_state(harness, "sending", timeout=60)
    await harness.tg.wait_until(lambda: harness.tg.count("sendVideo") >= 1, timeout=60)
    harness.kill()  # killed while waiting out Telegram's flood control (30 s, far longer than the test)

    downloads = harness.kie.count("download")
    await harness.spawn_ready()
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=60)
    await _wait_state(harness, "done")
    assert harness.kie.count("download") == downloads  # the file on disk was sent, not fetched again
    assert harness.tg.count("sendVideo") == 2  # the one Telegram refused, and one delivery after the restart
    assert harness.kie.count("veoGenerate") == 1
    assert harness.balance(2003) == 20
