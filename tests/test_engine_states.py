"""The engine's state machine under faults, over the in-memory provider (milliseconds per case).

Money questions asked of every case: how many paid tasks exist per job, how many videos went to
the chat, and whether the seller's credits came back exactly when the job failed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from PIL import Image

from neurocards.jobs.notifier import DeliveryError, DeliveryErrorKind
from neurocards.providers.base import ErrorKind, ProviderError, TaskState, TaskStatus
from neurocards.store.jobs import JobMoved, JobState
from tests.engine_kit import EngineKit, done, failed, kill_during_both_sends, running_kit


def read_timeout() -> ProviderError:
    return ProviderError("submit: timed out (ReadTimeout)", kind=ErrorKind.TIMEOUT)


async def test_refused_connection_is_retried_blindly(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.submit_faults.append(ProviderError("submit: ConnectError", kind=ErrorKind.CONNECT))
    await kit.order()
    await kit.wait(done)
    assert len(kit.provider.tasks) == 1 and kit.notifier.videos == [1]
    assert kit.metric("neurocards_kie_tasks_orphaned_total", reason="callbacks_off") == 0


async def test_lost_create_answer_without_callbacks_is_a_counted_possible_double_payment(
        engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.submit_faults.append(("after", read_timeout()))  # KIE made the task, the answer was lost
    await kit.order()
    jobs = await kit.wait(done)
    assert len(kit.provider.tasks) == 2  # the second task is the known, counted risk
    assert kit.metric("neurocards_kie_tasks_orphaned_total", reason="callbacks_off") == 1
    assert jobs[0].submit_attempt == 2 and jobs[0].task_id == "t2"
    assert await kit.users.balance(1) == 90


async def test_with_callbacks_an_unsure_job_waits_for_its_task_and_adopts_it(tmp_path: Path) -> None:
    async with running_kit(tmp_path, callbacks=True) as kit:
        kit.provider.submit_faults.append(("after", read_timeout()))
        [job_id] = await kit.order()
        jobs = await kit.wait(lambda js: js[0].submit_unsure_at is not None and js[0].run_after > js[0].updated_at
                              and not js[0].claimed)
        await asyncio.sleep(0.2)  # waiting, not paying for a second task
        assert len(kit.provider.tasks) == 1 and jobs[0].state is JobState.SUBMITTING
        kit.provider.finish("t1")
        status = TaskStatus(TaskState.SUCCESS, ("mem://video/t1",))
        assert await kit.engine.on_task_callback("t1", status, (job_id, 1))
        [job] = await kit.wait(done)
        assert job.task_id == "t1" and len(kit.provider.tasks) == 1 and kit.notifier.videos == [job_id]
        assert kit.metric("neurocards_kie_tasks_adopted_total") == 1
        assert kit.metric("neurocards_kie_tasks_orphaned_total", reason="no_callback") == 0


async def test_a_callback_is_adopted_only_when_the_provider_confirms_it(tmp_path: Path) -> None:
    async with running_kit(tmp_path, callbacks=True) as kit:
        kit.provider.submit_faults.append(("after", read_timeout()))
        kit.provider.finish_after_polls = 1000
        first, second = await kit.order(count=2)
        await kit.wait(lambda js: any(j.submit_unsure_at is not None and not j.claimed for j in js)
                       and any(j.state is JobState.GENERATING for j in js))
        unsure = next(j for j in await kit.wait(lambda js: True) if j.state is JobState.SUBMITTING)
        other = next(j for j in await kit.wait(lambda js: True) if j.state is JobState.GENERATING)
        status = TaskStatus(TaskState.SUCCESS, ("https://evil/x.mp4",))
        # A task id the provider does not know, and the other job's real task: both refused.
        assert not await kit.engine.on_task_callback("forged", status, (unsure.id, 1))
        assert other.task_id is not None
        assert not await kit.engine.on_task_callback("t9", status, (unsure.id, 2))  # wrong attempt
        kit.provider.tasks["t9"] = kit.provider.tasks[other.task_id]  # created for another URL
        assert not await kit.engine.on_task_callback("t9", status, (unsure.id, 1))
        assert (await kit.jobs.get(unsure.id)).task_id is None  # type: ignore[union-attr]
        assert {first, second} == {unsure.id, other.id}


async def test_a_callback_naming_a_job_we_do_not_have_is_counted_as_an_orphaned_task(tmp_path: Path) -> None:
    """A callback URL from another installation (or a restored older database) names job 999: the
    paid task is counted for the operator, nothing is adopted, nothing crashes."""
    async with running_kit(tmp_path, callbacks=True) as kit:
        status = TaskStatus(TaskState.SUCCESS, ("mem://video/t7",))
        assert not await kit.engine.on_task_callback("t7", status, (999, 1))
        assert kit.metric("neurocards_kie_tasks_orphaned_total", reason="late_callback") == 1
        assert await kit.db.fetchall("SELECT id FROM jobs") == []


async def test_waiting_for_a_callback_is_bounded_by_the_generation_timeout(tmp_path: Path) -> None:
    async with running_kit(tmp_path, callbacks=True, overrides={"kie": {"timeout_s": 0.3}}) as kit:
        kit.provider.submit_faults.append(("after", read_timeout()))
        await kit.order()
        await kit.wait(done)
        assert len(kit.provider.tasks) == 2
        assert kit.metric("neurocards_kie_tasks_orphaned_total", reason="no_callback") == 1


async def test_a_kill_while_create_task_is_out_leaves_the_job_unsure_not_forgotten(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.submit_gate = asyncio.Event()  # createTask hangs: the request is out
    await kit.order()
    await kit.wait(lambda js: js[0].submit_attempt == 1)
    await kit.restart()  # killed mid-request
    kit.provider.submit_gate.set()
    [job] = await kit.wait(done)
    assert job.submit_attempt == 2
    assert kit.metric("neurocards_kie_tasks_orphaned_total", reason="callbacks_off") == 1


async def test_a_poll_error_never_resubmits_a_job_that_has_a_task(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.poll_faults.append(ProviderError("recordInfo is null", kind=ErrorKind.API, code=422))
    await kit.order()
    # The refund message follows the state write: wait for the seller to be told, not just the row.
    await kit.wait(lambda js: failed(js) and ("failed:our_bug", 1) in kit.notifier.events)
    assert len(kit.provider.tasks) == 1
    assert await kit.users.balance(1) == 100


async def test_generation_failed_501_refunds_without_a_second_task(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.next_outcome.append(TaskStatus(TaskState.FAILED, fail_code="501", fail_msg="Generation Failed"))
    await kit.order()
    [job] = await kit.wait(lambda js: failed(js) and ("failed:generation_failed", 1) in kit.notifier.events)
    assert len(kit.provider.tasks) == 1 and job.error_class == "generation_failed"
    assert await kit.users.balance(1) == 100


async def test_a_temporary_task_failure_gets_one_fresh_task_at_most(engine_kit: EngineKit) -> None:
    kit = engine_kit
    for _ in range(3):
        kit.provider.next_outcome.append(TaskStatus(TaskState.FAILED, fail_code="500",
                                                    fail_msg="Internal Error - Timeout"))
    await kit.order()
    [job] = await kit.wait(failed)
    assert len(kit.provider.tasks) == 2 and job.fresh_tasks == 1
    assert await kit.users.balance(1) == 100


async def test_a_database_refusing_writes_never_leaves_a_job_without_an_owner(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.engine.reclaim_every_s = 0.05
    kit.engine.db_trouble_retry_s = 0.05
    kit.provider.finish_after_polls = 1000
    await kit.order()
    await kit.wait(lambda js: js[0].state is JobState.GENERATING)
    # The disk is full: every write fails, including the release of the claim and the refund.
    await kit.db.execute("PRAGMA query_only = ON")
    kit.provider.finish("t1")  # the next poll finds the video; recording that fails
    await asyncio.sleep(0.3)
    stuck = await kit.jobs.get(1)
    assert stuck is not None and stuck.claimed and stuck.state is JobState.GENERATING
    await kit.db.execute("PRAGMA query_only = OFF")
    await kit.wait(done)
    assert kit.metric("neurocards_jobs_reclaimed_total") >= 1
    assert len(kit.provider.tasks) == 1 and kit.notifier.videos == [1]


async def test_database_locked_past_the_busy_timeout_is_retried_later(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.engine.reclaim_every_s = 0.05
    kit.engine.db_trouble_retry_s = 0.05
    await kit.db.execute("PRAGMA busy_timeout = 20")
    kit.provider.finish_after_polls = 1000
    await kit.order()
    await kit.wait(lambda js: js[0].state is JobState.GENERATING)
    released = threading.Event()

    def hold_the_lock() -> None:  # another process (a backup, the CLI) holds the write lock
        conn = sqlite3.connect(kit.config.storage.database, timeout=5)
        conn.execute("BEGIN EXCLUSIVE")
        released.wait(5)
        conn.rollback()
        conn.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    await asyncio.sleep(0.1)
    kit.provider.finish("t1")  # recording the result meets the lock
    await asyncio.sleep(0.3)
    released.set()
    await asyncio.to_thread(holder.join)
    await kit.wait(done)
    assert len(kit.provider.tasks) == 1 and kit.notifier.videos == [1]


async def test_a_ban_never_refunds_a_job_the_engine_already_moved_on(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.submit_gate = asyncio.Event()
    [job_id] = await kit.order()
    await kit.wait(lambda js: js[0].state is JobState.SUBMITTING)
    # The admin's cancel read "queued" a moment ago; its write must re-check, not trust that read.
    job, refunded = await kit.jobs.fail_and_refund(job_id, error_class="cancelled", error_text="ban",
                                                   only_in=(JobState.QUEUED,))
    assert not refunded and job.state is JobState.SUBMITTING
    assert await kit.jobs.cancel_queued(1, "ban") == []
    kit.provider.submit_gate.set()
    await kit.wait(done)
    assert kit.notifier.videos == [job_id] and await kit.users.balance(1) == 90


async def test_state_changes_are_conditional_writes(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.submit_gate = asyncio.Event()
    [job_id] = await kit.order()
    await kit.wait(lambda js: js[0].state is JobState.SUBMITTING)
    try:
        await kit.jobs.update(job_id, expect={"state": JobState.QUEUED}, state=JobState.FAILED)
    except JobMoved:
        pass
    else:
        raise AssertionError("a write expecting 'queued' moved a 'submitting' job")
    kit.provider.submit_gate.set()
    await kit.wait(done)


async def test_a_send_of_unknown_outcome_is_repeated_once_and_counted(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.notifier.delivery_faults.extend([DeliveryError(DeliveryErrorKind.UNSURE, "timeout"),
                                         DeliveryError(DeliveryErrorKind.UNSURE, "timeout")])
    await kit.order(count=1)
    [job] = await kit.wait(failed)
    assert job.send_unsure == 1 and job.error_class == "delivery"
    assert kit.metric("neurocards_telegram_video_resends_total") == 1
    assert await kit.users.balance(1) == 100


async def test_a_graceful_stop_lets_a_send_in_flight_finish_and_be_recorded(engine_kit: EngineKit) -> None:
    kit = engine_kit
    gate = asyncio.Event()
    deliver = kit.notifier.deliver_video

    async def slow_delivery(*args: object, **kwargs: object) -> str:
        await gate.wait()  # Telegram takes the upload slowly
        return await deliver(*args, **kwargs)  # type: ignore[arg-type]

    kit.notifier.deliver_video = slow_delivery  # type: ignore[method-assign]
    await kit.order()
    await kit.wait(lambda js: js[0].send_pending and len(kit.engine.requests_in_flight) == 1)
    kit.engine.stop_grace_s = 5.0
    stopping = asyncio.create_task(kit.engine.stop())
    await asyncio.sleep(0.1)
    gate.set()  # the answer comes while the bot is stopping
    await stopping
    [job] = await kit.wait(lambda js: True)
    assert job.state is JobState.DONE and not job.send_pending  # no unknown outcome left behind
    assert kit.notifier.videos == [job.id]


async def test_killed_during_both_sends_ends_delivered_unconfirmed_not_refunded(engine_kit: EngineKit) -> None:
    kit = engine_kit
    _, started = await kill_during_both_sends(kit)
    [job] = await kit.wait(done)
    assert len(started) == 2 and job.send_unsure == 1  # one repeat, never a third copy
    assert kit.metric("neurocards_telegram_videos_unconfirmed_total") == 1
    assert await kit.users.balance(1) == 90  # the seller has the video: no refund


async def test_a_crash_of_ours_ends_in_a_refund_and_one_message(engine_kit: EngineKit) -> None:
    kit = engine_kit

    async def broken_prompt(*args: object, **kwargs: object) -> str:
        raise RuntimeError("a bug of ours")

    kit.engine.prompts.build = broken_prompt  # type: ignore[method-assign]
    [job_id] = await kit.order()
    [job] = await kit.wait(failed)
    await kit.event(("failed:unknown", job_id))
    assert job.error_class == "unknown" and not job.claimed and "a bug of ours" in (job.error_text or "")
    assert await kit.users.balance(1) == 100 and kit.provider.tasks == {}
    assert kit.metric("neurocards_refunds_total") == 1 and kit.metric("neurocards_credits_refunded_total") == 10


async def test_a_crash_whose_refund_the_database_refused_is_retried_after_a_pause(engine_kit: EngineKit) -> None:
    """Recording the crash failed (disk full for a moment): the job is not left claimed and charged, and
    not spun on either; it runs again after `db_trouble_retry_s` and then ends refunded."""
    kit = engine_kit
    kit.engine.db_trouble_retry_s = 0.3
    crashes: list[float] = []

    async def broken_prompt(*args: object, **kwargs: object) -> str:
        crashes.append(asyncio.get_running_loop().time())
        raise RuntimeError("a bug of ours")

    real_fail = kit.jobs.fail_and_refund
    refusals = [sqlite3.OperationalError("database or disk is full")]

    async def fail_once_refused(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if refusals:
            raise refusals.pop()
        return await real_fail(*args, **kwargs)  # type: ignore[arg-type]

    kit.jobs.fail_and_refund = fail_once_refused  # type: ignore[method-assign]
    kit.engine.prompts.build = broken_prompt  # type: ignore[method-assign]
    [job_id] = await kit.order()
    [job] = await kit.wait(failed)
    assert len(crashes) == 2 and crashes[1] - crashes[0] >= 0.25
    assert job.error_class == "unknown" and not job.claimed
    assert await kit.users.balance(1) == 100
    assert kit.notifier.events.count(("failed:unknown", job_id)) == 1


async def test_a_crash_after_a_ban_leaves_the_cancelled_job_as_it_is(engine_kit: EngineKit) -> None:
    """The admin's ban refunded the job while the engine prepared it; the engine then crashes: the job
    stays cancelled, the seller gets no failure message, and no failed job is counted."""
    kit = engine_kit

    async def ban_then_crash(*args: object, **kwargs: object) -> str:
        assert await kit.jobs.cancel_queued(1, "banned by admin") == [1]
        raise RuntimeError("a bug of ours")

    kit.engine.prompts.build = ban_then_crash  # type: ignore[method-assign]
    await kit.order()
    [job] = await kit.wait(lambda js: failed(js) and not kit.engine.in_flight)  # the crash was handled
    assert job.error_class == "cancelled" and job.error_text == "banned by admin"
    assert kit.notifier.events == [] and await kit.users.balance(1) == 100
    assert kit.metric("neurocards_job_failures_total", **{"class": "unknown"}) == 0


async def test_a_step_the_database_refused_is_tried_again_after_a_pause_not_in_a_loop(
        engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.engine.db_trouble_retry_s = 0.3
    real_build = kit.engine.prompts.build
    tries: list[float] = []

    async def locked_once(*args: object, **kwargs: object) -> str:
        tries.append(asyncio.get_running_loop().time())
        if len(tries) == 1:
            raise sqlite3.OperationalError("database is locked")
        return await real_build(*args, **kwargs)  # type: ignore[arg-type]

    kit.engine.prompts.build = locked_once  # type: ignore[method-assign]
    [job_id] = await kit.order()
    await kit.wait(done)
    assert len(tries) == 2 and tries[1] - tries[0] >= 0.25
    assert kit.notifier.videos == [job_id] and await kit.users.balance(1) == 90


async def test_a_job_moved_on_by_another_writer_mid_step_continues_at_once_from_there(
        engine_kit: EngineKit) -> None:
    """While the engine wrote the prompt, another writer (an adopted callback, an operator) moved the job
    on: this run stops without overwriting it and the job is taken up again at once, from its new state
    (the watchdog, 10 s away, is not needed)."""
    kit = engine_kit
    real_build = kit.engine.prompts.build

    async def moved_meanwhile(*args: object, **kwargs: object) -> str:
        await kit.jobs.update(1, expect={"state": JobState.QUEUED}, state=JobState.SUBMITTING,
                              prompt="written elsewhere", image_url="mem://photo/elsewhere.jpg")
        return await real_build(*args, **kwargs)  # type: ignore[arg-type]

    kit.engine.prompts.build = moved_meanwhile  # type: ignore[method-assign]
    [job_id] = await kit.order()
    [job] = await kit.wait(done, timeout=3.0)
    assert kit.notifier.videos == [job_id] and job.image_url == "mem://photo/elsewhere.jpg"
    assert [t.request.image_url for t in kit.provider.tasks.values()] == ["mem://photo/elsewhere.jpg"]


async def test_a_job_records_when_work_on_it_started_once(engine_kit: EngineKit) -> None:
    """The order status shows "in progress for N min" and the wait notices count from this moment;
    a retry does not restart it."""
    kit = engine_kit
    kit.provider.submit_faults.append(ProviderError("submit: ConnectError", kind=ErrorKind.CONNECT))
    [job_id] = await kit.order()
    [job] = await kit.wait(done)
    assert job.started_at is not None and job.finished_at is not None
    assert job.created_at <= job.started_at <= job.finished_at
    prompt_ready = await kit.db.fetchone(
        "SELECT at FROM job_events WHERE job_id = ? AND detail = 'prompt ready'", (job_id,))
    assert prompt_ready is not None and job.started_at <= prompt_ready["at"]  # not reset by the retry


async def test_the_videos_of_one_photo_share_one_upload_until_it_is_half_a_day_old(engine_kit: EngineKit) -> None:
    kit = engine_kit
    await kit.order(count=3)
    await kit.wait(lambda js: len(js) == 3 and done(js))
    assert len(kit.provider.uploads) == 1 and len(kit.provider.tasks) == 3
    await kit.order(product_id=1)  # the same photo again: the upload is reused
    await kit.wait(lambda js: len(js) == 4 and done(js))
    assert len(kit.provider.uploads) == 1
    Image.new("RGB", (64, 48), "white").save(kit.tmp / "photo1.jpg", "JPEG")  # reshaping needs a real photo
    await kit.order(product_id=1, aspect_ratio="9:16")  # another shape: a photo prepared for it
    await kit.order(product_id=1, aspect_ratio="9:16")  # that shape again: its upload is reused
    await kit.wait(lambda js: len(js) == 6 and done(js))
    assert len(kit.provider.uploads) == 2
    # KIE keeps an upload 24 h: one made 13 h ago is not trusted for a new video of the same photo.
    await kit.db.execute("UPDATE products SET upload_url_at = upload_url_at - 13 * 3600")
    await kit.order(product_id=1, aspect_ratio="9:16")
    await kit.wait(lambda js: len(js) == 7 and done(js))
    assert len(kit.provider.uploads) == 3 and len(kit.provider.tasks) == 7


async def test_an_order_whose_template_was_removed_fails_as_our_bug_and_is_refunded(engine_kit: EngineKit) -> None:
    kit = engine_kit
    await kit.engine.stop()
    [job_id] = await kit.order()
    await kit.db.execute("UPDATE jobs SET template = 'removed-from-config' WHERE id = ?", (job_id,))
    await kit.restart()
    [job] = await kit.wait(failed)
    await kit.event(("failed:our_bug", job_id))
    assert job.error_class == "our_bug" and kit.provider.uploads == [] and kit.provider.tasks == {}
    assert await kit.users.balance(1) == 100


async def test_a_photo_gone_before_its_upload_fails_without_a_task_and_is_refunded(engine_kit: EngineKit) -> None:
    kit = engine_kit
    await kit.engine.stop()
    [job_id] = await kit.order()
    (kit.tmp / "photo1.jpg").unlink()  # the retention sweep, a disk cleanup
    await kit.restart()
    [job] = await kit.wait(failed)
    await kit.event(("failed:photo_gone", job_id))
    assert job.error_class == "photo_gone" and kit.provider.uploads == [] and kit.provider.tasks == {}
    assert await kit.users.balance(1) == 100


async def test_no_more_than_max_parallel_videos_are_worked_on_at_once(tmp_path: Path) -> None:
    async with running_kit(tmp_path, overrides={"generation": {"max_parallel": 2}}) as kit:
        kit.provider.finish_after_polls = 1000
        await kit.order(count=4)
        await kit.wait(lambda js: sum(j.state is JobState.GENERATING for j in js) == 2)
        await asyncio.sleep(0.1)  # would a third one start?
        assert len(kit.provider.tasks) == 2 and kit.engine.in_flight == 2
        kit.provider.finish("t1")
        await kit.wait(lambda js: len(kit.provider.tasks) == 3 and js[0].state is JobState.DONE)
        assert kit.engine.in_flight <= 2


async def test_retries_of_the_download_do_not_count_against_the_delivery(engine_kit: EngineKit) -> None:
    """Two CDN blips while downloading, then one Telegram blip while sending: the seller is not told the
    video is waiting for Telegram (that needs two failed sends), and it is delivered."""
    kit = engine_kit
    for _ in range(2):
        kit.provider.download_faults.append(ProviderError("download: HTTP 502", kind=ErrorKind.DOWNLOAD, code=502))
    kit.notifier.delivery_faults.append(DeliveryError(DeliveryErrorKind.NETWORK, "Bad Gateway"))
    [job_id] = await kit.order()
    await kit.wait(done)
    assert kit.notifier.videos == [job_id] and not kit.provider.download_faults
    assert ("delivery_delayed", job_id) not in kit.notifier.events


async def test_a_restart_reports_how_many_unfinished_jobs_it_resumes(engine_kit: EngineKit) -> None:
    """The number the operator's "jobs resumed" alert carries: every job not yet delivered or failed."""
    kit = engine_kit
    assert kit.engine.resumed_at_start == 0
    await kit.order()
    await kit.wait(done)
    kit.provider.finish_after_polls = 1000
    await kit.order(count=2)
    await kit.wait(lambda js: sum(j.state is JobState.GENERATING for j in js) == 2)
    engine = await kit.restart()
    assert engine.resumed_at_start == 2
    kit.provider.finish_after_polls = 0
    await kit.wait(lambda js: len(js) == 3 and done(js))
