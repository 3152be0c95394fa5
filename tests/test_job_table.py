"""The job table's money writes: who may move a job, when a failure gives the credits back, and what the
seller and the operator read about it afterwards (a real SQLite file, no engine)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from neurocards.bot.statement import row_text
from neurocards.services.orders import LimitReached, Orders
from neurocards.store.db import Database
from neurocards.store.jobs import JobFinished, JobMoved, JobState, JobStore
from neurocards.store.orders import OrderStore
from neurocards.store.statement import StatementStore
from neurocards.store.users import ProductStore, UserStore
from tests.engine_kit import make_engine_kit

SELLER = 7


@pytest.fixture
async def db(tmp_path: Path):
    database = await Database.open(tmp_path / "t.sqlite3")
    yield database
    await database.close()


async def _order(db: Database, count: int = 1) -> tuple[UserStore, JobStore, list[int]]:
    """A seller with 30 credits who ordered `count` videos at 10 credits each."""
    users = UserStore(db)
    await users.touch(SELLER, username=None, first_name="S", language="ru", welcome_credits=30)
    product = await ProductStore(db).create(SELLER, "file", "/nonexistent.jpg")
    await ProductStore(db).set_description(product, "Кружка")
    made = await OrderStore(db).create_charged(
        user_id=SELLER, chat_id=SELLER, request_key="k", product_ids=[product], per_product=count,
        template="studio", wishes="", provider="kie", model="veo3_fast", cost_each=10)
    return users, JobStore(db), made.job_ids


async def _history(db: Database, job_id: int) -> list[tuple[str, str | None]]:
    rows = await db.fetchall("SELECT state, detail FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))
    return [(r["state"], r["detail"]) for r in rows]


async def test_a_delivered_video_is_never_refunded(db: Database) -> None:
    users, jobs, [job_id] = await _order(db)
    await jobs.update(job_id, state=JobState.DONE, video_file_id="file-1")
    job, refunded = await jobs.fail_and_refund(job_id, error_class="delivery", error_text="late error")
    assert not refunded and job.state is JobState.DONE and job.error_class is None
    assert await users.balance(SELLER) == 20
    with pytest.raises(JobFinished):
        await jobs.update(job_id, state=JobState.SENDING)


async def test_a_failed_job_is_refunded_once_and_its_history_says_so(db: Database) -> None:
    users, jobs, [job_id] = await _order(db)
    failed, refunded = await jobs.fail_and_refund(job_id, error_class="temporary", error_text="KIE 500")
    assert refunded and failed.state is JobState.FAILED and not failed.claimed
    assert (failed.error_class, failed.error_text) == ("temporary", "KIE 500")
    finished_at = failed.finished_at
    assert finished_at is not None
    again, refunded = await jobs.fail_and_refund(job_id, error_class="delivery", error_text="late")
    assert not refunded and again.finished_at == finished_at  # it ended when it first ended
    assert await users.balance(SELLER) == 30
    assert (await _history(db, job_id))[-2:] == [("failed", "temporary: KIE 500 (refunded)"),
                                                 ("failed", "delivery: late")]


async def test_a_page_long_error_is_kept_short_in_the_job_and_its_history(db: Database) -> None:
    _, jobs, [job_id] = await _order(db)
    html = "<html>" + "x" * 5000
    failed, _ = await jobs.fail_and_refund(job_id, error_class="unknown", error_text=html)
    assert failed.error_text == html[:1000]
    assert (await _history(db, job_id))[-1] == ("failed", f"unknown: {html[:500]} (refunded)")


async def test_the_statement_names_why_a_job_was_refunded(db: Database) -> None:
    _, jobs, [cancelled, failed] = await _order(db, count=2)
    assert await jobs.cancel_queued(SELLER, "banned by admin") == [cancelled, failed]
    rows = await StatementStore(db).rows(SELLER)
    refunds = [(r.job_id, row_text(r)) for r in rows if r.kind == "job_refund"]
    assert refunds == [(cancelled, "возврат: заказ отменён"), (failed, "возврат: заказ отменён")]


async def test_a_ban_cancels_only_the_jobs_still_queued_when_each_is_written(db: Database) -> None:
    """The ban read two queued jobs; the engine takes the second to KIE before the ban gets to it:
    that one is left to be delivered (and stays paid), the first is cancelled and refunded."""
    users, jobs, [first, second] = await _order(db, count=2)
    real_fail = jobs.fail_and_refund

    async def engine_moves_second_first(job_id: int, **kwargs):  # type: ignore[no-untyped-def]
        if job_id == second:
            await jobs.update(second, expect={"state": JobState.QUEUED}, state=JobState.SUBMITTING,
                              image_url="https://x/p.jpg")
        return await real_fail(job_id, **kwargs)

    jobs.fail_and_refund = engine_moves_second_first  # type: ignore[method-assign]
    assert await jobs.cancel_queued(SELLER, "banned by admin") == [first]
    moved = await jobs.get(second)
    assert moved is not None and moved.state is JobState.SUBMITTING and moved.error_class is None
    assert await users.balance(SELLER) == 20


async def test_a_job_cannot_be_handed_to_another_seller_or_order(db: Database) -> None:
    _, jobs, [job_id] = await _order(db)
    for field in ("user_id", "chat_id", "order_id", "request_key"):
        with pytest.raises(ValueError, match=field):
            await jobs.update(job_id, **{field: 8})
    with pytest.raises(ValueError, match="user_id"):
        await jobs.update(job_id, expect={"user_id": SELLER}, state=JobState.SUBMITTING)
    job = await jobs.get(job_id)
    assert job is not None and (job.user_id, job.chat_id, job.state) == (SELLER, SELLER, JobState.QUEUED)


async def test_a_write_that_lost_a_race_to_a_live_job_is_told_moved_not_finished(db: Database) -> None:
    _, jobs, [job_id] = await _order(db)
    with pytest.raises(JobMoved) as info:
        await jobs.update(job_id, expect={"state": JobState.GENERATING}, state=JobState.DOWNLOADING)
    assert not isinstance(info.value, JobFinished)
    await jobs.fail_and_refund(job_id, error_class="cancelled", error_text="ban")
    with pytest.raises(JobMoved) as info:  # bookkeeping on a finished job that expected something else
        await jobs.update(job_id, allow_finished=True, expect={"video_path": "/old.mp4"}, video_path=None)
    assert not isinstance(info.value, JobFinished)
    with pytest.raises(KeyError):
        await jobs.update(job_id + 100, state=JobState.SUBMITTING)


async def test_the_history_and_the_live_status_follow_each_state_and_retry(db: Database) -> None:
    """The operator reads a job's states and events in job_events; the order's live status is woken on
    a new state or a retry, not on every bookkeeping write."""
    _, jobs, [job_id] = await _order(db)
    woken: list[tuple[JobState, int]] = []
    jobs.on_change = lambda job: woken.append((job.state, job.attempts))
    await jobs.update(job_id, prompt="A mug on a table", event="prompt ready")
    await jobs.update(job_id, image_url="https://x/p.jpg", state=JobState.SUBMITTING)
    await jobs.update(job_id, key_id="key-a")
    await jobs.update(job_id, attempts=1, run_after=0.0)
    assert await _history(db, job_id) == [("queued", "order 1: charged 10"), ("queued", "prompt ready"),
                                          ("submitting", None)]
    assert woken == [(JobState.SUBMITTING, 0), (JobState.SUBMITTING, 1)]


async def _sellers_order(db: Database, seller: int, count: int) -> list[int]:
    await UserStore(db).touch(seller, username=None, first_name="S", language="ru", welcome_credits=10 * count)
    product = await ProductStore(db).create(seller, "file", "/nonexistent.jpg")
    made = await OrderStore(db).create_charged(
        user_id=seller, chat_id=seller, request_key=f"k{seller}", product_ids=[product], per_product=count,
        template="studio", wishes="", provider="kie", model="veo3_fast", cost_each=10)
    return made.job_ids


async def test_with_one_video_in_flight_per_seller_a_big_order_waits_its_turn(db: Database) -> None:
    """limits.max_jobs_in_flight = 1: a seller's 3-video order runs one at a time, while another seller's
    video starts alongside instead of queueing behind it."""
    jobs = JobStore(db)
    jobs.per_user_running = 1
    big = await _sellers_order(db, 7, 3)
    [small] = await _sellers_order(db, 8, 1)
    assert [j.id for j in await jobs.claim_runnable(10)] == [big[0], small]
    assert await jobs.claim_runnable(10) == []
    await jobs.update(big[0], state=JobState.DONE)
    assert [j.id for j in await jobs.claim_runnable(10)] == [big[1]]


async def test_with_two_in_flight_per_seller_two_start_at_once(db: Database) -> None:
    jobs = JobStore(db)
    jobs.per_user_running = 2
    big = await _sellers_order(db, 7, 3)
    assert [j.id for j in await jobs.claim_runnable(10)] == big[:2]
    assert [j.id for j in await jobs.claim_runnable(1)] == []


async def test_one_free_slot_takes_the_oldest_waiting_job(db: Database) -> None:
    jobs = JobStore(db)
    first, second, third = await _sellers_order(db, 7, 3)
    await jobs.update(first, run_after=time.time() + 60)  # waiting for its retry
    assert [j.id for j in await jobs.claim_runnable(1)] == [second]
    assert [j.id for j in await jobs.claim_runnable(1)] == [third]
    assert await jobs.claim_runnable(1) == []
    assert [j.id for j in await jobs.claim_runnable(1, now=time.time() + 61)] == [first]


async def test_the_watchdog_frees_every_claim_no_coroutine_holds_and_only_those(db: Database) -> None:
    jobs = JobStore(db)
    stuck_a, running, stuck_b, finished = await _sellers_order(db, 7, 4)
    assert len(await jobs.claim_runnable(10)) == 4
    await jobs.fail_and_refund(finished, error_class="cancelled", error_text="ban")
    await db.execute("UPDATE jobs SET claimed = 1 WHERE id = ?", (finished,))  # a finished job's stale flag
    assert await jobs.release_orphaned_claims({running}) == [stuck_a, stuck_b]
    assert [j.id for j in await jobs.claim_runnable(10)] == [stuck_a, stuck_b]
    assert await jobs.release_orphaned_claims({stuck_a, running, stuck_b}) == []


async def test_a_new_seller_may_order_the_whole_daily_limit_at_once(tmp_path: Path) -> None:
    kit = await make_engine_kit(tmp_path, overrides={"limits": {"videos_per_day": 2,
                                                                "min_seconds_between_orders": 600}})
    try:
        orders = Orders(kit.config, kit.jobs, kit.engine.templates, kit.engine.chain)
        await orders.check_limits(1, 2)  # never ordered: nothing counted today, no last order
        await kit.order(user_id=1, count=2)
        with pytest.raises(LimitReached) as info:
            await orders.check_limits(1, 1)
        assert info.value.kind == "too_soon"
        unspaced = kit.config.model_copy(update={"limits": kit.config.limits.model_copy(
            update={"min_seconds_between_orders": 0})})
        with pytest.raises(LimitReached) as info:
            await Orders(unspaced, kit.jobs, kit.engine.templates, kit.engine.chain).check_limits(1, 1)
        assert info.value.kind == "per_day"
    finally:
        await kit.db.close()


async def test_a_job_nobody_paid_for_fails_without_a_refund(db: Database) -> None:
    """A job row written by hand (an operator's test, a restored dump) was never charged: failing it gives
    nothing back and reports no refund (the seller is not told "credits returned")."""
    users, jobs, _ = await _order(db)
    now = time.time()
    await db.execute(
        "INSERT INTO jobs (user_id, chat_id, product_id, request_key, template, provider, model, cost, state,"
        " run_after, created_at, updated_at) VALUES (?, ?, 1, 'hand', 'studio', 'kie', 'veo3_fast', 10,"
        " 'queued', ?, ?, ?)", (SELLER, SELLER, now, now, now))
    row = await db.fetchone("SELECT id FROM jobs WHERE request_key = 'hand'")
    assert row is not None
    failed, refunded = await jobs.fail_and_refund(int(row["id"]), error_class="unknown", error_text="boom")
    assert not refunded and failed.state is JobState.FAILED
    assert await users.balance(SELLER) == 20
