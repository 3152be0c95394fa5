"""The calm "the service is busy, about N minutes left" notice: who gets it, once, and what N says.

N comes from how long the last delivered videos took (start to delivery), minus what this job has
already waited since it started; a job that has waited longer than usual is told a third of the usual
time, never "0 minutes". The engine's dispatcher is not running: the jobs stay where the test puts them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.engine_kit import EngineKit, make_engine_kit

NOTICE_AFTER_S = 300.0


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[EngineKit]:
    kit = await make_engine_kit(tmp_path, overrides={"generation.retry": {"queue_notice_after_s": NOTICE_AFTER_S}})
    try:
        yield kit
    finally:
        await kit.db.close()


async def _delivered(kit: EngineKit, *durations_s: float) -> None:
    """Videos of another seller delivered in the past, the last one most recently, taking these long."""
    job_ids = await kit.order(user_id=99, count=len(durations_s), credits=10 * len(durations_s))
    end = time.time() - 3600
    for job_id, took in zip(job_ids, durations_s, strict=True):
        end += 1
        await kit.db.execute("UPDATE jobs SET state = 'done', started_at = ?, finished_at = ? WHERE id = ?",
                             (end - took, end, job_id))


async def _waiting(kit: EngineKit, seller: int, *, created_ago_s: float, started_ago_s: float | None = None,
                   count: int = 1) -> None:
    job_ids = await kit.order(user_id=seller, count=count)
    now = time.time()
    for job_id in job_ids:
        await kit.db.execute("UPDATE jobs SET created_at = ?, started_at = ? WHERE id = ?",
                             (now - created_ago_s, None if started_ago_s is None else now - started_ago_s, job_id))


async def test_each_waiting_chat_is_told_once_with_minutes_from_recent_videos(kit: EngineKit) -> None:
    await _delivered(kit, 610.0, 610.0)  # videos take about 10 minutes
    await _waiting(kit, 1, created_ago_s=1200, started_ago_s=120, count=2)  # queued long, started 2 min ago
    await _waiting(kit, 2, created_ago_s=600, started_ago_s=600)  # already as long as a usual video
    await _waiting(kit, 3, created_ago_s=NOTICE_AFTER_S - 60)  # not waiting long enough yet
    await kit.engine.notify_long_waits()
    # 610 s - 120 s waited = 8.2 min -> 9; 610 - 600 is less than a third of 610 s (3.05 min) -> 4.
    assert kit.notifier.wait_notices == {1: 9, 2: 4}
    assert sorted(e for e in kit.notifier.events if e[0] == "waiting") == [("waiting", 3), ("waiting", 5)]
    await kit.engine.notify_long_waits()
    assert len([e for e in kit.notifier.events if e[0] == "waiting"]) == 2  # once, not every round


async def test_without_any_delivered_video_five_minutes_are_assumed(kit: EngineKit) -> None:
    await _waiting(kit, 1, created_ago_s=NOTICE_AFTER_S + 100, started_ago_s=60)
    await _waiting(kit, 2, created_ago_s=NOTICE_AFTER_S + 60)  # never started: counted from the order
    await kit.engine.notify_long_waits()
    assert kit.notifier.wait_notices == {1: 4, 2: 2}  # 300 s - 60 s; a third of 300 s


async def test_with_quick_videos_a_long_wait_is_told_one_minute_never_zero(kit: EngineKit) -> None:
    await _delivered(kit, 100.0)
    await _waiting(kit, 1, created_ago_s=NOTICE_AFTER_S + 90)
    await kit.engine.notify_long_waits()
    assert kit.notifier.wait_notices == {1: 1}


async def test_the_minutes_follow_the_last_fifty_videos_not_the_whole_history(kit: EngineKit) -> None:
    await _delivered(kit, 100_000.0, *[610.0] * 50)  # one very slow video long ago, then 50 usual ones
    await _waiting(kit, 1, created_ago_s=NOTICE_AFTER_S + 1, started_ago_s=10)
    await kit.engine.notify_long_waits()
    assert kit.notifier.wait_notices == {1: 10}  # (610 - 10) s
