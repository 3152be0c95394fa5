"""The database refuses to break the money rules, whoever writes to it.

Each case is forbidden SQL as someone at a sqlite3 prompt (or a buggy code path) would issue it,
on a plain connection without `PRAGMA foreign_keys`: the triggers and indexes alone must refuse it,
and nothing may change.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from neurocards.store.db import Database
from neurocards.store.jobs import JobState, JobStore
from neurocards.store.orders import OrderStore
from neurocards.store.payments import PaymentStore
from neurocards.store.users import ProductStore, UserStore

SELLER, OTHER = 7, 8


@dataclass(frozen=True)
class Shop:
    path: Path
    charged: int  # a job charged 10 credits, still running
    refunded: int  # a job charged 10 and refunded
    delivered: int  # a job charged 10 and delivered
    uncharged: int  # a job row with no charge (as written by hand)
    payment: int  # a 100-credit pack bought by SELLER


async def _open_shop(tmp_path: Path) -> Shop:
    """A real database built by the real code: two sellers, jobs in every money state, a payment."""
    path = tmp_path / "shop.sqlite3"
    db = await Database.open(path)
    try:
        users, jobs = UserStore(db), JobStore(db)
        for user_id in (SELLER, OTHER):
            await users.touch(user_id, username=None, first_name="S", language="ru", welcome_credits=30)
        product = await ProductStore(db).create(SELLER, "file", "/nonexistent.jpg")
        charged, refunded, delivered = (await OrderStore(db).create_charged(
            user_id=SELLER, chat_id=SELLER, request_key="k", product_ids=[product], per_product=3,
            template="studio", wishes="", provider="kie", model="veo3_fast", cost_each=10)).job_ids
        await jobs.fail_and_refund(refunded, error_class="temporary", error_text="boom")
        await jobs.update(delivered, state=JobState.DONE)
        now = time.time()
        async with db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO jobs (user_id, chat_id, product_id, request_key, template, provider, model, cost,"
                " state, run_after, created_at, updated_at) VALUES (?, ?, ?, 'hand', 'studio', 'kie', 'veo3_fast',"
                " 10, 'queued', ?, ?, ?)", (SELLER, SELLER, product, now, now, now))
            uncharged = int(cur.lastrowid or 0)
        paid = await PaymentStore(db).record(
            user_id=SELLER, charge_id="ch1", provider_charge_id=None, pack_id="p100", credits=100, stars=50,
            currency="XTR", payload="cr1:p100:100:50:7", referral_bonus=0)
        assert paid is not None
    finally:
        await db.close()
    return Shop(path, charged, refunded, delivered, uncharged, paid.payment.id)


def _snapshot(path: Path) -> tuple:
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("SELECT * FROM credit_ledger ORDER BY id").fetchall(),
                conn.execute("SELECT id, balance FROM users ORDER BY id").fetchall(),
                conn.execute("SELECT id, state FROM jobs ORDER BY id").fetchall())
    finally:
        conn.close()


def _row(user: int, delta: object, reason: str, *, job: object = None, payment: object = None,
         invited: object = None) -> tuple[str, tuple]:
    return ("INSERT INTO credit_ledger (user_id, delta, reason, job_id, payment_id, invited_user_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 0)", (user, delta, reason, job, payment, invited))


# (name, sql builder over the shop, what the refusal says)
ATTACKS = [
    ("a job is charged twice",
     lambda s: _row(SELLER, -10, "job_charge", job=s.charged), "UNIQUE"),
    ("a job is refunded twice",
     lambda s: _row(SELLER, 10, "job_refund", job=s.refunded), "UNIQUE"),
    ("a refund without a charge",
     lambda s: _row(SELLER, 10, "job_refund", job=s.uncharged), "refund"),
    ("a refund larger than the charge",
     lambda s: _row(SELLER, 11, "job_refund", job=s.charged), "exactly the charge"),
    ("a refund smaller than the charge",
     lambda s: _row(SELLER, 9, "job_refund", job=s.charged), "exactly the charge"),
    ("a refund that takes credits instead of returning them",
     lambda s: _row(SELLER, -10, "job_refund", job=s.charged), "exactly the charge"),
    ("a refund paid to another user",
     lambda s: _row(OTHER, 10, "job_refund", job=s.charged), "exactly the charge"),
    ("money back for a job under another reason",
     lambda s: _row(SELLER, 10, "admin", job=s.charged), "job_charge/job_refund rows only"),
    ("a refund row that names no job",
     lambda s: _row(SELLER, 10, "job_refund"), "refund"),
    ("a delivered video refunded",
     lambda s: _row(SELLER, 10, "job_refund", job=s.delivered), "delivered video"),
    ("someone else's job charged to a user",
     lambda s: _row(OTHER, -10, "job_charge", job=s.uncharged), "owner of the job"),
    ("a charge that adds credits",
     lambda s: _row(SELLER, 10, "job_charge", job=s.uncharged), "owner of the job"),
    ("a payment credited twice",
     lambda s: _row(SELLER, 100, "payment", payment=s.payment), "UNIQUE"),
    ("a payment credited with more than its pack",
     lambda s: _row(SELLER, 1000, "payment", payment=s.payment), "its own pack"),
    ("a payment credited to someone who did not pay",
     lambda s: _row(OTHER, 100, "payment", payment=s.payment), "its own pack"),
    ("a payment refund taking more than the pack",
     lambda s: _row(SELLER, -101, "payment_refund", payment=s.payment), "at most the pack"),
    ("a payment refund that adds credits",
     lambda s: _row(SELLER, 100, "payment_refund", payment=s.payment), "at most the pack"),
    ("a payment refund from another user",
     lambda s: _row(OTHER, -10, "payment_refund", payment=s.payment), "at most the pack"),
    ("a referral bonus that takes credits",
     lambda s: _row(OTHER, -5, "referral", invited=SELLER), "adds credits"),
    ("a grant above the bound",
     lambda s: _row(SELLER, 1_000_001, "admin"), "out of bounds"),
    ("a removal above the bound",
     lambda s: _row(SELLER, -1_000_001, "admin"), "out of bounds"),
    ("an int64-sized grant",
     lambda s: _row(SELLER, 9223372036854775807, "admin"), "out of bounds"),
    ("a grant past int64 given as text (SQLite would store REAL 1e20)",
     lambda s: _row(SELLER, "100000000000000000000", "admin"), "out of bounds"),
    ("a fractional grant",
     lambda s: _row(SELLER, 2.5, "admin"), "out of bounds"),
    ("a user id past int64",
     lambda s: _row("100000000000000000000", 5, "admin"), "out of bounds"),
    ("a negative user id",
     lambda s: _row(-SELLER, 5, "admin"), "out of bounds"),
    ("a ledger row edited",
     lambda s: ("UPDATE credit_ledger SET delta = 500 WHERE reason = 'welcome'", ()), "append-only"),
    ("a charge erased",
     lambda s: ("DELETE FROM credit_ledger WHERE job_id = ?", (s.charged,)), "append-only"),
    ("the whole ledger erased",
     lambda s: ("DELETE FROM credit_ledger", ()), "append-only"),
    ("a balance written directly",
     lambda s: ("UPDATE users SET balance = balance + 1000 WHERE id = ?", (SELLER,)), "only through the ledger"),
    ("a balance overflowing into REAL",
     lambda s: ("UPDATE users SET balance = 9223372036854775807 + 1 WHERE id = ?", (SELLER,)),
     "only through the ledger"),
    ("a new user created with credits",
     lambda s: ("INSERT INTO users (id, balance, first_seen, last_seen) VALUES (99, 500, 0, 0)", ()),
     "only through the ledger"),
    ("a refunded job marked delivered",
     lambda s: ("UPDATE jobs SET state = 'done' WHERE id = ?", (s.refunded,)), "not delivered"),
    ("a payment row for a pack past the bound",
     lambda s: ("INSERT INTO payments (user_id, telegram_payment_charge_id, pack_id, credits, stars, currency,"
                " payload, created_at) VALUES (?, 'big', 'x', 10000000, 1, 'XTR', '', 0)", (SELLER,)),
     "payment amount"),
]


@pytest.fixture
async def shop(tmp_path: Path) -> Shop:
    return await _open_shop(tmp_path)


@pytest.mark.parametrize(("attack", "build", "refusal"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_the_database_refuses(shop: Shop, attack: str, build, refusal: str) -> None:
    before = _snapshot(shop.path)
    sql, params = build(shop)
    conn = sqlite3.connect(shop.path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match=refusal):
            conn.execute(sql, params)
    finally:
        conn.close()
    assert _snapshot(shop.path) == before, f"{attack}: something changed although it was refused"


def test_honest_rows_still_go_through(shop: Shop) -> None:
    """The rules refuse the wrong rows only: the right ones, written by hand, keep balance = ledger."""
    conn = sqlite3.connect(shop.path, isolation_level=None)
    try:
        for sql, params in (_row(SELLER, 10, "job_refund", job=shop.charged),
                            _row(SELLER, -100, "payment_refund", payment=shop.payment),
                            _row(SELLER, 1_000_000, "admin"), _row(SELLER, -1_000_000, "admin"),
                            _row(OTHER, 5, "referral", invited=SELLER)):
            conn.execute(sql, params)
        balances = dict(conn.execute("SELECT id, balance FROM users"))
        assert all(isinstance(b, int) for b in balances.values())
        # 30 welcome - 30 charged + 10 refunded + 100 paid, then +10 refund -100 pack back, ±1,000,000.
        assert balances == {SELLER: 20, OTHER: 35}
    finally:
        conn.close()
