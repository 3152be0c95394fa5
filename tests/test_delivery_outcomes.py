"""Delivering a paid video, over the in-memory provider and a scripted sendVideo (milliseconds per case).

The questions of every case: did the seller get the video (once), were the credits kept or
refunded, is the file gone from disk once the job ended, and what did the operator's metrics count.
The end-to-end versions over the fake Telegram are in test_faults_delivery.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from neurocards.jobs import delivery
from neurocards.jobs.notifier import DeliveryError, DeliveryErrorKind
from neurocards.store.history import HistoryStore
from neurocards.store.jobs import Job, JobState
from neurocards.store.stats import period_stats
from tests.engine_kit import EngineKit, done, failed, kill_during_both_sends, running_kit


def outputs(kit: EngineKit) -> list[Path]:
    return sorted(kit.config.storage.outputs_dir.glob("*.mp4"))


async def test_killed_during_both_sends_the_job_ends_as_a_delivery_like_any_other(engine_kit: EngineKit) -> None:
    kit = engine_kit
    delivered_to: list[int] = []

    async def on_delivered(user_id: int) -> None:
        delivered_to.append(user_id)

    def watch_deliveries() -> None:
        kit.engine.delivery.on_delivered = on_delivered

    job_id, _ = await kill_during_both_sends(kit, on_restart=watch_deliveries)
    [job] = await kit.wait(lambda js: done(js) and bool(delivered_to))  # told last, after the bookkeeping
    assert not job.send_pending  # the row no longer says a sendVideo is out
    assert (await period_stats(kit.db, days=1)).delivered == 1  # in the admin's "delivered today"
    assert outputs(kit) == [] and job.video_path is None  # the delivered file does not stay on disk
    assert delivered_to == [1]  # e.g. the inviter's bonus for a first video
    assert kit.metric("neurocards_jobs_delivered_total") == 1
    # Its upload time is unknown: it does not count as a sendVideo that took no time.
    assert kit.metric("neurocards_delivery_seconds_count") == 0
    assert job_id == job.id and await kit.users.balance(1) == 90


async def test_a_video_file_gone_before_sending_is_downloaded_again(engine_kit: EngineKit) -> None:
    kit = engine_kit
    deliver = kit.notifier.deliver_video
    calls: list[int] = []

    async def disk_trouble_first(job: Job, path: Path | None, *args: object, **kwargs: object) -> str:
        calls.append(job.id)
        if len(calls) == 1:  # Telegram unreachable, and meanwhile the file is swept away
            assert path is not None
            path.unlink()
            raise DeliveryError(DeliveryErrorKind.NETWORK, "connection reset")
        return await deliver(job, path, *args, **kwargs)  # type: ignore[arg-type]

    kit.notifier.deliver_video = disk_trouble_first  # type: ignore[method-assign]
    [job_id] = await kit.order()
    await kit.wait(lambda js: done(js) and not outputs(kit))  # the file is removed once it is delivered
    assert kit.notifier.videos == [job_id] and await kit.users.balance(1) == 90


async def test_a_video_gone_with_no_way_to_fetch_it_again_is_refunded(engine_kit: EngineKit) -> None:
    kit = engine_kit
    gate = asyncio.Event()
    deliver = kit.notifier.deliver_video

    async def slow_delivery(*args: object, **kwargs: object) -> str:
        await gate.wait()
        return await deliver(*args, **kwargs)  # type: ignore[arg-type]

    kit.notifier.deliver_video = slow_delivery  # type: ignore[method-assign]
    [job_id] = await kit.order()
    [job] = await kit.wait(lambda js: js[0].send_pending)
    await kit.restart()  # killed mid-send; meanwhile the file and the result link are both lost
    assert job.video_path is not None
    Path(job.video_path).unlink()
    await kit.db.execute("UPDATE jobs SET result_url = NULL WHERE id = ?", (job_id,))
    kit.engine.wake()
    [job] = await kit.wait(failed)
    assert job.error_class == "delivery" and job.error_text == "video file missing"
    await kit.event(("delivery_failed", job_id))
    assert await kit.users.balance(1) == 100
    assert kit.notifier.videos == []


async def test_a_refused_video_is_refunded_its_file_removed_and_counted(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.notifier.delivery_faults.append(DeliveryError(DeliveryErrorKind.REJECTED, "Bad Request: wrong file"))
    [job_id] = await kit.order()
    [job] = await kit.wait(failed)
    await kit.event(("delivery_failed", job_id))
    assert await kit.users.balance(1) == 100
    assert outputs(kit) == []
    assert kit.metric("neurocards_job_failures_total", **{"class": "delivery"}) == 1
    assert kit.metric("neurocards_credits_refunded_total") == 10
    assert kit.metric("neurocards_telegram_send_errors_total", kind="rejected") == 1


async def test_a_blocked_bot_refunds_without_writing_to_the_seller(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.notifier.delivery_faults.append(DeliveryError(DeliveryErrorKind.FORBIDDEN, "Forbidden: bot was blocked"))
    [job_id] = await kit.order()
    await kit.wait(failed)
    await asyncio.sleep(0.05)  # the refund is written before the seller would be told
    assert await kit.users.balance(1) == 100
    assert ("delivery_failed", job_id) not in kit.notifier.events


async def test_flood_control_waits_and_sends_again_without_a_failure(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.notifier.delivery_faults.append(DeliveryError(DeliveryErrorKind.RETRY_AFTER, "Too Many Requests",
                                                      retry_after=0.01))
    [job_id] = await kit.order()
    [job] = await kit.wait(done)
    assert kit.notifier.videos == [job_id] and job.send_unsure == 0 and job.attempts == 0
    assert kit.metric("neurocards_telegram_video_resends_total") == 0


@pytest.mark.parametrize(("delays", "cap", "waits", "told"), [
    ([0.1, 0.2, 0.3], 3.0, [0.1, 0.2, 0.3, 0.6, 1.2, 2.4, 3.0], 1),  # the configured waits, doubling, the cap
    ([], 10.0, [3.0, 6.0, 10.0], 1),  # none configured: 3 s, then doubling
    ([0.1], 1.0, [0.1, 0.2], 1),  # the seller hears of the trouble at the second failed attempt...
    ([0.1], 1.0, [0.1], 0),  # ...one blip is not worth a message
])
async def test_a_telegram_outage_waits_longer_each_time_up_to_the_cap(
        tmp_path: Path, delays: list[float], cap: float, waits: list[float], told: int) -> None:
    overrides = {"generation.retry": {"delivery_delays_s": delays},
                 "delivery": {"max_delay_s": cap, "give_up_after_s": 600}}
    async with running_kit(tmp_path, overrides=overrides) as kit:
        kit.notifier.delivery_faults.extend(DeliveryError(DeliveryErrorKind.NETWORK, "502 Bad Gateway")
                                            for _ in waits)
        seen: list[float] = []
        update = kit.jobs.update

        async def note_waits(job_id: int, **changes: object) -> Job:
            job = await update(job_id, **changes)  # type: ignore[arg-type]
            if "run_after" in changes and job.delivery_failing_since:
                seen.append(round(job.run_after - job.updated_at, 1))
                await update(job_id, run_after=0.0)  # the test does not sit through the wait
                kit.engine.wake()
            return job

        kit.jobs.update = note_waits  # type: ignore[method-assign]
        [job_id] = await kit.order()
        [job] = await kit.wait(done)
        assert seen == waits
        assert kit.notifier.videos == [job_id] and await kit.users.balance(1) == 90
        assert kit.notifier.events.count(("delivery_delayed", job_id)) == told  # told once, not each time


async def test_a_long_telegram_outage_ends_in_a_refund(tmp_path: Path) -> None:
    overrides = {"generation.retry": {"delivery_delays_s": [0.01]}, "delivery": {"give_up_after_s": 0.3}}
    async with running_kit(tmp_path, overrides=overrides) as kit:
        kit.notifier.delivery_faults.extend(DeliveryError(DeliveryErrorKind.NETWORK, "502 Bad Gateway")
                                            for _ in range(1000))
        [job_id] = await kit.order()
        [job] = await kit.wait(failed)
        assert job.error_class == "delivery"
        assert re.fullmatch(r"network for [0-9]s: 502 Bad Gateway", job.error_text or ""), job.error_text
        await kit.event(("delivery_failed", job_id))
        assert await kit.users.balance(1) == 100
        assert outputs(kit) == []


async def test_the_send_timeout_allows_for_the_upload_on_the_slowest_uplink(tmp_path: Path) -> None:
    overrides = {"telegram": {"request_timeout_s": 10}, "delivery": {"min_upload_kbps": 0.008}}  # 1 byte/s
    async with running_kit(tmp_path, overrides=overrides) as kit:
        deliver = kit.notifier.deliver_video
        timeouts: list[tuple[int, float | None]] = []

        async def note_timeout(job: Job, path: Path | None, *args: object, timeout_s: float | None = None,
                               **kwargs: object) -> str:
            assert path is not None
            timeouts.append((path.stat().st_size, timeout_s))
            return await deliver(job, path, *args, timeout_s=timeout_s, **kwargs)  # type: ignore[arg-type]

        kit.notifier.deliver_video = note_timeout  # type: ignore[method-assign]
        await kit.order()
        await kit.wait(done)
        [(size, timeout)] = timeouts
        assert timeout is not None and round(timeout, 6) == 10 + size


async def test_a_second_failure_of_the_same_job_refunds_counts_and_tells_nothing_more(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.notifier.delivery_faults.append(DeliveryError(DeliveryErrorKind.REJECTED, "Bad Request: wrong file"))
    [job_id] = await kit.order()
    [job] = await kit.wait(failed)
    await kit.event(("delivery_failed", job_id))
    again = await kit.engine.delivery.fail(job, "sendVideo failed again")  # e.g. a late second report
    assert again.state is JobState.FAILED and await kit.users.balance(1) == 100
    assert kit.notifier.events.count(("delivery_failed", job_id)) == 1
    assert kit.metric("neurocards_refunds_total") == 1 and kit.metric("neurocards_credits_refunded_total") == 10


async def test_an_outage_ends_in_a_refund_exactly_when_its_time_is_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(now=time.time(), monotonic=time.monotonic)
    clock.time = lambda: clock.now
    monkeypatch.setattr(delivery, "time", clock)
    async with running_kit(tmp_path, overrides={"delivery": {"give_up_after_s": 0.5}}) as kit:
        deliver = kit.notifier.deliver_video
        calls: list[int] = []

        async def outage(*args: object, **kwargs: object) -> str:
            calls.append(1)
            if len(calls) == 1:
                raise DeliveryError(DeliveryErrorKind.NETWORK, "502 Bad Gateway")
            if len(calls) == 2:  # the second attempt fails just as the outage reaches the limit
                clock.now += 0.5
                raise DeliveryError(DeliveryErrorKind.NETWORK, "502 Bad Gateway")
            return await deliver(*args, **kwargs)  # type: ignore[arg-type]

        kit.notifier.deliver_video = outage  # type: ignore[method-assign]
        [job_id] = await kit.order()
        await kit.wait(failed)
        await kit.event(("delivery_failed", job_id))
        assert len(calls) == 2 and await kit.users.balance(1) == 100


async def test_a_delivered_video_is_in_the_sellers_history_and_the_days_numbers(engine_kit: EngineKit) -> None:
    kit = engine_kit
    [job_id] = await kit.order()
    await kit.wait(lambda js: done(js) and not outputs(kit))
    item = await HistoryStore(kit.db).video(1, job_id)  # "my videos": sent again by its file id
    assert item is not None and item.file_id == f"file-{job_id}"
    assert (await period_stats(kit.db, days=1)).delivered == 1
    assert kit.metric("neurocards_delivery_seconds_count") == 1  # the sendVideo's duration is measured


async def test_a_file_swept_during_its_upload_does_not_stop_the_bookkeeping(engine_kit: EngineKit) -> None:
    kit = engine_kit
    deliver = kit.notifier.deliver_video
    delivered_to: list[int] = []

    async def swept_meanwhile(job: Job, path: Path | None, *args: object, **kwargs: object) -> str:
        assert path is not None
        path.unlink()
        return await deliver(job, path, *args, **kwargs)  # type: ignore[arg-type]

    async def on_delivered(user_id: int) -> None:
        delivered_to.append(user_id)

    kit.notifier.deliver_video = swept_meanwhile  # type: ignore[method-assign]
    kit.engine.delivery.on_delivered = on_delivered
    await kit.order()
    [job] = await kit.wait(lambda js: done(js) and bool(delivered_to))
    assert job.video_path is None and kit.metric("neurocards_jobs_delivered_total") == 1


async def test_the_refund_message_after_a_failed_delivery_shows_the_new_balance(engine_kit: EngineKit) -> None:
    kit = engine_kit
    balances: list[int] = []
    delivery_failed = kit.notifier.delivery_failed

    async def note_balance(job: Job, balance: int) -> None:
        balances.append(balance)
        await delivery_failed(job, balance)

    kit.notifier.delivery_failed = note_balance  # type: ignore[method-assign]
    kit.notifier.delivery_faults.append(DeliveryError(DeliveryErrorKind.TOO_LARGE, "Request Entity Too Large"))
    [job_id] = await kit.order(credits=35)
    await kit.event(("delivery_failed", job_id))
    assert balances == [35]


async def test_a_kill_while_waiting_out_flood_control_is_no_unsure_send(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.notifier.delivery_faults.append(DeliveryError(DeliveryErrorKind.RETRY_AFTER, "Too Many Requests",
                                                      retry_after=30))
    [job_id] = await kit.order()
    await kit.wait(lambda js: kit.metric("neurocards_telegram_send_errors_total", kind="retry_after") == 1
                   and not js[0].send_pending)  # the answer is written: the wait has begun
    await kit.restart()  # killed during the 30 s wait: Telegram had answered, nothing went out
    [job] = await kit.wait(lambda js: done(js) and not outputs(kit))
    assert kit.notifier.videos == [job_id] and job.send_unsure == 0
    assert kit.metric("neurocards_telegram_video_resends_total") == 0  # no "maybe two copies" counted


async def test_a_graceful_stop_waits_for_every_send_in_flight_not_only_the_first(engine_kit: EngineKit) -> None:
    """Two videos are uploading when the bot is asked to stop; the first answer comes at once, the
    second a moment later: both are recorded as delivered, none is left as "maybe sent"."""
    kit = engine_kit
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    deliver = kit.notifier.deliver_video

    async def slow_delivery(job: Job, *args: object, **kwargs: object) -> str:
        await gates[job.id].wait()
        return await deliver(job, *args, **kwargs)  # type: ignore[arg-type]

    kit.notifier.deliver_video = slow_delivery  # type: ignore[method-assign]
    await kit.order(count=2)
    await kit.wait(lambda js: len(js) == 2 and all(j.send_pending for j in js))
    kit.engine.stop_grace_s = 5.0
    stopping = asyncio.create_task(kit.engine.stop())
    await asyncio.sleep(0.05)
    gates[1].set()
    await asyncio.sleep(0.2)  # the stop must still be waiting for the second upload
    gates[2].set()
    await stopping
    jobs = await kit.wait(lambda js: True)
    assert [(j.state, j.send_pending) for j in jobs] == [(JobState.DONE, False)] * 2
    assert sorted(kit.notifier.videos) == [1, 2]
