"""The database itself refuses to break the credit rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurocards.store.db import Database
from neurocards.store.jobs import DuplicateRequest, InsufficientCredits, JobState, JobStore
from neurocards.store.orders import OrderStore
from neurocards.store.users import ProductStore, UserStore


@pytest.fixture
async def db(tmp_path: Path):
    database = await Database.open(tmp_path / "t.sqlite3")
    yield database
    await database.close()


async def _user_with_product(db: Database, balance: int) -> tuple[UserStore, JobStore, int]:
    users = UserStore(db)
    await users.touch(7, username="u", first_name="U", language="ru", welcome_credits=balance)
    product_id = await ProductStore(db).create(7, "file", "/nonexistent.jpg")
    return users, JobStore(db), product_id


async def _create(jobs: JobStore, product_id: int, key: str, count: int = 2, cost: int = 10):
    return await OrderStore(jobs.db).create_charged(
        user_id=7, chat_id=7, request_key=key, product_ids=[product_id], per_product=count, template="studio",
        wishes="", provider="kie", model="veo3_fast", cost_each=cost)


async def test_welcome_once_and_charge_per_job(db: Database) -> None:
    users, jobs, product_id = await _user_with_product(db, 30)
    again, created = await users.touch(7, username="u", first_name="U", language="ru", welcome_credits=30)
    assert not created and again.balance == 30
    new = await _create(jobs, product_id, "k1", count=2)
    assert len(new.job_ids) == 2 and new.balance == 10
    assert await users.ledger_sum(7) == 10
    with pytest.raises(DuplicateRequest):
        await _create(jobs, product_id, "k1", count=1)
    assert await users.balance(7) == 10  # the duplicate charged nothing


async def test_known_user_profile_and_last_seen_are_refreshed(db: Database) -> None:
    users = UserStore(db)
    await users.touch(8, username="old", first_name="Аня", language="ru", welcome_credits=30)
    renamed, created = await users.touch(8, username="new", first_name="Анна", language="en", welcome_credits=30)
    assert not created and (renamed.username, renamed.first_name, renamed.language) == ("new", "Анна", "en")
    assert renamed.balance == 30 and await users.ledger_sum(8) == 30  # no second welcome
    await db.execute("UPDATE users SET last_seen = last_seen - 3600 WHERE id = 8")
    seen, _ = await users.touch(8, username="new", first_name="Анна", language="en", welcome_credits=30)
    assert seen.last_seen > renamed.last_seen - 1  # written again once it is stale
    row = (await db.fetchall("SELECT username, last_seen FROM users WHERE id = 8"))[0]
    assert row["username"] == "new" and row["last_seen"] == seen.last_seen


async def test_insufficient_credits_changes_nothing(db: Database) -> None:
    users, jobs, product_id = await _user_with_product(db, 15)
    with pytest.raises(InsufficientCredits) as info:
        await _create(jobs, product_id, "k", count=2)
    assert info.value.missing == 5
    assert await users.balance(7) == 15
    assert await jobs.count_unfinished() == 0


async def test_refund_exactly_once(db: Database) -> None:
    users, jobs, product_id = await _user_with_product(db, 20)
    job_id = (await _create(jobs, product_id, "k", count=1)).job_ids[0]
    failed, refunded = await jobs.fail_and_refund(job_id, error_class="temporary", error_text="boom")
    assert refunded and failed.state is JobState.FAILED
    _, refunded_again = await jobs.fail_and_refund(job_id, error_class="temporary", error_text="boom")
    assert not refunded_again
    assert await users.balance(7) == 20


async def test_claims_are_exclusive_and_released_at_start(db: Database) -> None:
    _, jobs, product_id = await _user_with_product(db, 50)
    ids = (await _create(jobs, product_id, "k", count=3)).job_ids
    first = await jobs.claim_runnable(2)
    second = await jobs.claim_runnable(5)
    assert [j.id for j in first] == ids[:2] and [j.id for j in second] == ids[2:]
    assert await jobs.claim_runnable(5) == []
    assert await jobs.release_claims() == 3
    assert len(await jobs.claim_runnable(5)) == 3


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    first = await Database.open(path)
    await first.close()
    second = await Database.open(path)
    row = await second.fetchone("PRAGMA user_version")
    assert row[0] >= 1
    await second.close()
