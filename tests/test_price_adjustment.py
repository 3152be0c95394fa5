"""Fair price on fall-over: the database returns the difference once, only for a delivered job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from neurocards.store.db import Database
from neurocards.store.jobs import JobState, JobStore
from neurocards.store.ledger import LedgerConflict, insert_ledger_row
from neurocards.store.orders import OrderStore
from neurocards.store.users import ProductStore, UserStore
from tests.harness import Harness, walk_to_confirm


@pytest.fixture
async def db(tmp_path: Path):
    database = await Database.open(tmp_path / "t.sqlite3")
    yield database
    await database.close()


async def _charged_job(db: Database, cost: int = 10) -> tuple[UserStore, JobStore, int]:
    users = UserStore(db)
    await users.touch(7, username="u", first_name="U", language="ru", welcome_credits=30)
    product_id = await ProductStore(db).create(7, "file", "/nonexistent.jpg")
    jobs = JobStore(db)
    created = await OrderStore(db).create_charged(
        user_id=7, chat_id=7, request_key="k", product_ids=[product_id], per_product=1, template="studio",
        wishes="", provider="kie", model="veo3_fast", cost_each=cost)
    return users, jobs, created.job_ids[0]


async def _adjustments(db: Database, job_id: int) -> list[int]:
    rows = await db.fetchall(
        "SELECT delta FROM credit_ledger WHERE job_id = ? AND reason = 'price_adjustment'", (job_id,))
    return [int(r["delta"]) for r in rows]


async def test_delivery_at_a_lower_price_returns_the_difference_once(db: Database) -> None:
    users, jobs, job_id = await _charged_job(db)
    await jobs.update(job_id, provider="sandbox", price=4, state=JobState.SENDING)
    assert await _adjustments(db, job_id) == []  # nothing comes back before the video is there
    await jobs.update(job_id, state=JobState.DONE, finished_at=time.time())
    assert await _adjustments(db, job_id) == [6]
    assert await users.balance(7) == 26
    # Bookkeeping on the finished job (and a replayed "done") changes nothing.
    await jobs.update(job_id, video_path=None, allow_finished=True)
    await jobs.update(job_id, state=JobState.DONE, allow_finished=True)
    assert await _adjustments(db, job_id) == [6] and await users.balance(7) == 26
    async with db.transaction() as conn:
        with pytest.raises(LedgerConflict):
            await insert_ledger_row(conn, user_id=7, delta=6, reason="price_adjustment", job_id=job_id)
    # A delivered job is never refunded, and after an adjustment the database refuses it too.
    _, refunded = await jobs.fail_and_refund(job_id, error_class="x", error_text="y")
    assert not refunded and await users.balance(7) == 26
    async with db.transaction() as conn:
        with pytest.raises(LedgerConflict):
            await insert_ledger_row(conn, user_id=7, delta=10, reason="job_refund", job_id=job_id)


async def test_the_database_refuses_adjustments_that_do_not_fit_a_charge(db: Database) -> None:
    users, jobs, job_id = await _charged_job(db)
    for delta, job in ((10, job_id), (11, job_id), (-1, job_id), (3, None), (3, job_id + 1)):
        async with db.transaction() as conn:
            with pytest.raises(LedgerConflict):
                await insert_ledger_row(conn, user_id=7, delta=delta, reason="price_adjustment", job_id=job)
    await jobs.fail_and_refund(job_id, error_class="x", error_text="y")
    async with db.transaction() as conn:  # a refunded job gets nothing more back
        with pytest.raises(LedgerConflict):
            await insert_ledger_row(conn, user_id=7, delta=3, reason="price_adjustment", job_id=job_id)
    assert await users.balance(7) == 30


async def test_a_failed_job_with_a_lower_price_is_refunded_in_full(db: Database) -> None:
    users, jobs, job_id = await _charged_job(db)
    await jobs.update(job_id, provider="sandbox", price=4)
    _, refunded = await jobs.fail_and_refund(job_id, error_class="temporary", error_text="down")
    assert refunded and await users.balance(7) == 30 and await _adjustments(db, job_id) == []


async def test_the_simple_mode_note_says_cheaper_only_when_it_is(harness: Harness) -> None:
    harness.overrides = {"generation": {"providers": ["kie", "sandbox"]}}
    await harness.start()
    assert harness.app is not None
    harness.app.chain.primary.down_until = time.monotonic() + 600
    confirm = await walk_to_confirm(harness.tg.user(9101))
    assert "упрощённом" in confirm.text and "дешевле" not in confirm.text
