"""After a provider error: another key, a retry, another provider, or a refund (in-memory provider).

What the operator pays KIE for, what the admin is told and whether the seller's credits come back
are asked of each case; the end-to-end versions over the fake KIE are in test_faults_kie.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from neurocards.jobs.alerts import JobNeedsAttention, KeyDisabled, NoPayingKey
from neurocards.jobs.chain import ChainEntry
from neurocards.jobs.failures import Failure
from neurocards.jobs.templates import Template, TemplateCatalog
from neurocards.providers.base import ErrorKind, ProviderError, TaskState, TaskStatus
from neurocards.services.support import recent_jobs
from neurocards.store.costs import CostStore
from neurocards.store.jobs import Job
from tests.engine_kit import EngineKit, MemoryProvider, done, failed, running_kit


def out_of_credits(key_id: str | None, text: str = "The current credits are insufficient") -> ProviderError:
    return ProviderError(text, kind=ErrorKind.API, code=402, key_id=key_id)


def backup_entry(backup: MemoryProvider, *, cost: int = 10, keys: MemoryProvider | None = None) -> ChainEntry:
    """A second KIE-like provider behind the main one (the fall-over target)."""
    return ChainEntry(name="kie:backup", backend=backup, fixed_model=None, cost=cost, simple=False,
                      default_model="backup_default", keys=keys, balance=None, callbacks=None,
                      poll_interval_s=0.05, callback_poll_interval_s=0.05, timeout_s=5, cache_uploads=False,
                      takes_template_model=True)


async def test_a_key_out_of_credits_is_set_aside_and_the_next_key_makes_the_video(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.submit_faults.append(out_of_credits("key-a"))
    [job_id] = await kit.order()
    [job] = await kit.wait(done)
    assert kit.notifier.videos == [job_id] and await kit.users.balance(1) == 90
    assert kit.provider.disabled == {"key-a"}
    assert [a for a in kit.notifier.alerts if isinstance(a, KeyDisabled)] == [
        KeyDisabled("key-a", "The current credits are insufficient", 1)]
    # Another key is tried at once: no retry is counted and the seller hears of no trouble.
    assert ("retrying", job_id) not in kit.notifier.events
    assert kit.metric("neurocards_job_retries_total", **{"class": "billing"}) == 0


async def test_keys_running_dry_one_after_another_each_alert_then_a_refund(engine_kit: EngineKit) -> None:
    kit = engine_kit
    long_answer = "insufficient credits: " + "x" * 500  # e.g. an HTML page instead of JSON
    kit.provider.submit_faults.extend([out_of_credits("key-a"), out_of_credits("key-b", long_answer)])
    [job_id] = await kit.order()
    await kit.wait(failed)
    assert kit.provider.tasks == {}  # no key left: nothing more is sent to KIE
    assert kit.provider.disabled == {"key-a", "key-b"}
    assert await kit.users.balance(1) == 100
    keys = [a for a in kit.notifier.alerts if isinstance(a, KeyDisabled)]
    assert [(a.key_id, a.keys_left) for a in keys] == [("key-a", 1), ("key-b", 0)]
    assert keys[1].reason == long_answer[:200]  # the admin reads the start of the answer, not a page of it
    assert any(isinstance(a, NoPayingKey) for a in kit.notifier.alerts)
    assert kit.metric("neurocards_job_failures_total", **{"class": "billing"}) == 1
    assert any(isinstance(a, JobNeedsAttention) and a.job_id == job_id for a in kit.notifier.alerts)
    await kit.event(("failed:billing", job_id))


async def test_out_of_credits_without_a_known_key_refunds_and_takes_no_key_out(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.submit_faults.append(out_of_credits(None))
    [job_id] = await kit.order()
    await kit.wait(failed)
    assert kit.provider.tasks == {} and kit.provider.disabled == set()
    assert await kit.users.balance(1) == 100
    assert not any(isinstance(a, (KeyDisabled, NoPayingKey)) for a in kit.notifier.alerts)
    assert [type(a) for a in kit.notifier.alerts] == [JobNeedsAttention]


async def test_a_task_failed_for_want_of_credits_is_made_again_on_the_next_key(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.next_outcome.append(TaskStatus(TaskState.FAILED, fail_code=402, fail_msg="Credits insufficient"))
    [job_id] = await kit.order()
    [job] = await kit.wait(done, timeout=3.0)
    assert kit.notifier.videos == [job_id] and await kit.users.balance(1) == 90
    assert [t.key_id for t in kit.provider.tasks.values()] == ["key-a", "key-b"]
    assert kit.provider.disabled == {"key-a"} and job.task_id == "t2"


async def test_the_failed_task_paid_by_a_dry_key_is_the_one_fresh_task_a_job_gets(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.next_outcome.extend([TaskStatus(TaskState.FAILED, fail_code=402, fail_msg="Credits insufficient"),
                                      TaskStatus(TaskState.FAILED, fail_code=500, fail_msg="Internal Error")])
    [job_id] = await kit.order()
    [job] = await kit.wait(failed, timeout=3.0)
    assert len(kit.provider.tasks) == 2  # a failed task is paid for: no third one
    await kit.event(("failed:temporary", job_id))
    assert await kit.users.balance(1) == 100


async def test_the_last_key_out_tells_the_admin_no_key_can_pay(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.disabled.add("key-a")
    long_answer = "insufficient credits: " + "y" * 500
    kit.provider.submit_faults.append(out_of_credits("key-b", long_answer))
    await kit.order()
    await kit.wait(failed)
    [no_key] = [a for a in kit.notifier.alerts if isinstance(a, NoPayingKey)]
    assert no_key.reason == long_answer[:200]
    assert kit.provider.tasks == {} and await kit.users.balance(1) == 100


async def test_a_provider_without_keys_out_of_credits_refunds_and_alerts(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.engine.chain.get("kie").keys = None  # e.g. a backend with one account and no key rotation
    kit.provider.submit_faults.append(out_of_credits(None))
    [job_id] = await kit.order()
    [job] = await kit.wait(failed)
    await kit.event(("failed:billing", job_id))
    assert job.error_class == "billing"
    assert [type(a) for a in kit.notifier.alerts] == [JobNeedsAttention]
    assert await kit.users.balance(1) == 100


async def test_each_kind_of_failure_that_needs_the_admin_reaches_them_once(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.engine.chain.get("kie").keys = None  # no key rotation: a 402 is the account's
    page = "The current credits are insufficient. " + "z" * 500
    kit.provider.submit_faults.extend([
        out_of_credits(None, page),
        ProviderError("aspect_ratio is not supported", kind=ErrorKind.API, code=422),
        out_of_credits(None),  # the same trouble again: the admin has heard of it
    ])
    first = await kit.order(user_id=1)
    await kit.wait(failed)
    second = await kit.order(user_id=2)
    await kit.wait(failed)
    third = await kit.order(user_id=3)
    await kit.wait(failed)
    told = [a for a in kit.notifier.alerts if isinstance(a, JobNeedsAttention)]
    assert told == [JobNeedsAttention(first[0], "billing", 402, page[:300]),
                    JobNeedsAttention(second[0], "our_bug", 422, "aspect_ratio is not supported")]
    assert third and [await kit.users.balance(u) for u in (1, 2, 3)] == [100, 100, 100]


class Told:
    """What the seller's failure message said: the attempts made and the balance after the refund."""

    def __init__(self, kit: EngineKit) -> None:
        self.messages: list[tuple[str, int, int]] = []
        self.cool_downs: list[tuple[str, float]] = []
        job_failed, cool_down = kit.notifier.job_failed, kit.provider.cool_down_key

        async def note_failed(job: Job, failure: Failure, attempts: int, balance: int) -> None:
            self.messages.append((failure.cls.value, attempts, balance))
            await job_failed(job, failure, attempts, balance)

        def note_cool_down(key_id: str, seconds: float) -> bool:
            self.cool_downs.append((key_id, round(seconds, 3)))
            return cool_down(key_id, seconds)

        kit.notifier.job_failed = note_failed  # type: ignore[method-assign]
        kit.provider.cool_down_key = note_cool_down  # type: ignore[method-assign]


def skip_waits(kit: EngineKit) -> list[float]:
    """Record each retry's wait and let the job run again at once (the test does not sit through it)."""
    waits: list[float] = []
    update = kit.jobs.update

    async def note_waits(job_id: int, **changes: object) -> Job:
        job = await update(job_id, **changes)  # type: ignore[arg-type]
        if "run_after" in changes and "attempts" in changes:
            waits.append(round(job.run_after - job.updated_at, 2))
            await update(job_id, run_after=0.0)
            kit.engine.wake()
        return job

    kit.jobs.update = note_waits  # type: ignore[method-assign]
    return waits


async def test_temporary_errors_are_retried_on_schedule_then_refunded_with_the_count(engine_kit: EngineKit) -> None:
    kit = engine_kit  # temporary_delays_s = [0.05, 0.1, 0.2, 0.4]: four retries, five createTasks
    told, waits = Told(kit), skip_waits(kit)
    kit.provider.submit_faults.extend(
        ProviderError("Internal Error, please try again later", kind=ErrorKind.API, code=500, key_id="key-a")
        for _ in range(5))
    [job_id] = await kit.order()
    [job] = await kit.wait(failed)
    await kit.event(("failed:temporary", job_id))
    assert waits == [0.05, 0.1, 0.2, 0.4] and not kit.provider.submit_faults and kit.provider.tasks == {}
    assert told.messages == [("temporary", 5, 100)]  # "tried 5 times", and the balance after the refund
    assert kit.notifier.events.count(("retrying", job_id)) == 1  # "we are retrying" once, not each time
    assert kit.metric("neurocards_job_retries_total", **{"class": "temporary"}) == 4
    assert told.cool_downs == []  # a key is rested only when KIE says it is rate-limited
    assert job.error_class == "temporary" and not any(isinstance(a, JobNeedsAttention) for a in kit.notifier.alerts)


async def test_a_rate_limited_key_is_rested_and_the_seller_is_not_bothered(engine_kit: EngineKit) -> None:
    kit = engine_kit  # rate_limit_delays_s = [0.1, 0.2, 0.4]
    told, waits = Told(kit), skip_waits(kit)
    kit.provider.submit_faults.append(ProviderError("Too many requests", kind=ErrorKind.API, code=429,
                                                    key_id="key-a"))
    [job_id] = await kit.order()
    await kit.wait(done)
    assert told.cool_downs == [("key-a", 0.1)] and waits == [0.1]
    assert ("retrying", job_id) not in kit.notifier.events and kit.notifier.videos == [job_id]


async def test_a_refused_create_task_does_not_use_up_the_jobs_fresh_task(engine_kit: EngineKit) -> None:
    kit = engine_kit
    skip_waits(kit)
    kit.provider.submit_faults.append(ProviderError("Internal Error", kind=ErrorKind.API, code=500))
    kit.provider.next_outcome.append(TaskStatus(TaskState.FAILED, fail_code=500, fail_msg="Internal Error"))
    [job_id] = await kit.order()
    await kit.wait(done, timeout=3.0)
    assert len(kit.provider.tasks) == 2 and kit.notifier.videos == [job_id]  # the failed task, then a new one


async def test_a_download_retried_after_a_cdn_blip_keeps_the_videos_task_on_the_bill(engine_kit: EngineKit) -> None:
    kit = engine_kit
    kit.provider.name = "kie"
    kit.engine.generation.costs = CostStore(kit.db, price_of=lambda backend, model: 60.0)
    skip_waits(kit)
    download = kit.provider.download
    blips = [ProviderError("download: HTTP 503 for https://cdn.example/v.mp4", kind=ErrorKind.DOWNLOAD,
                           http_status=503)]

    async def flaky_cdn(url: str, dest: Path, max_bytes: int) -> int:
        if blips:
            raise blips.pop()
        return await download(url, dest, max_bytes)

    kit.provider.download = flaky_cdn  # type: ignore[method-assign]
    [job_id] = await kit.order()
    await kit.wait(done)
    costs = await CostStore(kit.db).period(0)
    # The owner's digest: one task paid, and it made the delivered video (nothing wasted).
    assert (costs.kie_tasks, costs.kie_credits, costs.wasted_kie_credits) == (1, 60.0, 0.0)
    assert kit.notifier.videos == [job_id]


async def test_the_operator_answering_a_seller_sees_why_a_job_is_being_retried(engine_kit: EngineKit) -> None:
    kit = engine_kit
    seen: list[tuple[str, str | None]] = []
    update = kit.jobs.update

    async def note_support_view(job_id: int, **changes: object) -> Job:
        job = await update(job_id, **changes)  # type: ignore[arg-type]
        if "attempts" in changes and "run_after" in changes:  # the retry is scheduled
            seen.extend((j.state, j.error_class) for j in await recent_jobs(kit.db, 1))
        return job

    kit.jobs.update = note_support_view  # type: ignore[method-assign]
    kit.provider.submit_faults.append(ProviderError("Internal Error", kind=ErrorKind.API, code=500))
    await kit.order()
    await kit.wait(done)
    assert seen == [("submitting", "temporary")]  # the relayed message's line: "#1 studio: submitting (temporary)"


async def test_a_job_moved_to_the_backup_provider_gets_the_templates_model_and_the_fair_price(
        tmp_path: Path) -> None:
    backup = MemoryProvider()
    entry = backup_entry(backup, cost=5)
    template = Template("studio", "Студия", "{description} in a studio", "veo3_quality", "9:16", 8)
    async with running_kit(tmp_path, more_entries=(entry,), templates=TemplateCatalog([template]),
                           chain_options={"failures_to_switch": 2, "format_surcharge": {"16:9": 3}}) as kit:
        unavailable = ProviderError("Service Unavailable", kind=ErrorKind.API, code=503)
        kit.provider.submit_faults.extend([unavailable, unavailable])  # one retry, then KIE is set aside
        backup.submit_faults.extend([unavailable] * 4)  # the backup gets its own four retries
        photo = tmp_path / "mug.jpg"
        Image.new("RGB", (64, 64), "white").save(photo)
        await kit.users.touch(1, username=None, first_name="S", language="ru", welcome_credits=100)
        product_id = await kit.products.create(1, "file-id", str(photo))
        await kit.products.set_description(product_id, "Кружка")
        [job_id] = await kit.order(product_id=product_id, aspect_ratio="16:9")
        [job] = await kit.wait(done)
        assert job.provider == "kie:backup" and kit.notifier.videos == [job_id]
        [task] = backup.tasks.values()
        assert task.request.model == "veo3_quality"  # the template's model, not the backup's default
        # Ordered at 10; the backup makes it for 5 + 3 for the wide format: the seller pays 8.
        assert await kit.users.balance(1) == 92


async def test_an_unanswered_create_task_on_kie_is_no_double_payment_risk_on_the_backup(tmp_path: Path) -> None:
    backup = MemoryProvider()
    entry = backup_entry(backup)
    async with running_kit(tmp_path, more_entries=(entry,), chain_options={"failures_to_switch": 2}) as kit:
        skip_waits(kit)
        kit.provider.submit_faults.extend(("after", ProviderError("createTask: timed out", kind=ErrorKind.TIMEOUT))
                                          for _ in range(2))
        [job_id] = await kit.order()
        [job] = await kit.wait(done)
        assert job.provider == "kie:backup" and kit.notifier.videos == [job_id]
        # KIE may have made a task for each unanswered createTask: the second one is the possible
        # double payment; the backup's first createTask is not.
        assert len(kit.provider.tasks) == 2 and len(backup.tasks) == 1
        assert kit.metric("neurocards_kie_tasks_orphaned_total", reason="callbacks_off") == 1


@pytest.mark.parametrize("next_step", ["retry", "fall-over"])
async def test_a_task_adopted_from_its_callback_meanwhile_is_not_paid_for_twice(tmp_path: Path, next_step: str) -> None:
    backup = MemoryProvider()
    entry = backup_entry(backup)
    more, options = ((), {}) if next_step == "retry" else ((entry,), {"failures_to_switch": 1})
    async with running_kit(tmp_path, callbacks=True, more_entries=more, chain_options=options) as kit:
        kit.provider.submit_faults.append(("after", ProviderError("createTask: timed out", kind=ErrorKind.TIMEOUT)))
        update = kit.jobs.update
        adopted: list[bool] = []

        async def callback_lands_first(job_id: int, **changes: object) -> Job:
            if not adopted and ("run_after" in changes or "provider" in changes) and "attempts" in changes:
                # KIE's callback for the task the unanswered createTask made arrives just before
                # the engine's next step is written.
                adopted.append(await kit.engine.on_task_callback("t1", TaskStatus(TaskState.SUCCESS), (job_id, 1)))
            return await update(job_id, **changes)  # type: ignore[arg-type]

        kit.jobs.update = callback_lands_first  # type: ignore[method-assign]
        [job_id] = await kit.order()
        [job] = await kit.wait(done)
        assert adopted == [True] and job.task_id == "t1" and job.provider == "kie"
        assert list(kit.provider.tasks) == ["t1"] and backup.tasks == {}  # one paid task, the one adopted
        assert kit.notifier.videos == [job_id]


async def test_a_backup_failing_in_turn_hands_the_job_back_to_kie_once_its_pause_is_over(tmp_path: Path) -> None:
    backup = MemoryProvider()
    entry = backup_entry(backup, keys=backup)
    options = {"failures_to_switch": 2, "cooldown_s": 0.05}
    async with running_kit(tmp_path, more_entries=(entry,), chain_options=options) as kit:
        unavailable = ProviderError("Service Unavailable", kind=ErrorKind.API, code=503)
        kit.provider.submit_faults.extend([unavailable, unavailable])  # KIE is set aside for 0.05 s
        backup.submit_faults.extend([out_of_credits("key-a"), unavailable, unavailable, unavailable])
        [job_id] = await kit.order()
        [job] = await kit.wait(done)
        assert backup.disabled == {"key-a"} and kit.provider.disabled == set()  # the backup's own key
        assert job.provider == "kie" and kit.notifier.videos == [job_id]  # back on KIE, which works again
        assert len(backup.tasks) == 0 and len(kit.provider.tasks) == 1


async def test_an_unclassified_error_is_logged_with_its_code_for_a_new_rule(
        engine_kit: EngineKit, caplog: pytest.LogCaptureFixture) -> None:
    """The operator adds a rule to the classifier from this log line: it must name KIE's code."""
    kit = engine_kit
    kit.provider.submit_faults.append(ProviderError("Something odd happened", kind=ErrorKind.API, code=577))
    await kit.order()
    await kit.wait(done)
    assert any("unclassified provider error" in r.getMessage() and "code 577" in r.getMessage()
               for r in caplog.records)
