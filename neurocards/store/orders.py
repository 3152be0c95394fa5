"""Orders: the jobs made from one confirmation, charged together, watched through one status message."""

from __future__ import annotations

import sqlite3
import statistics
import time
from dataclasses import dataclass

from neurocards.store.db import Database
from neurocards.store.jobs import DuplicateRequest, InsufficientCredits, JobState
from neurocards.store.ledger import insert_ledger_row


@dataclass(frozen=True)
class NewOrder:
    order_id: int
    job_ids: list[int]
    balance: int


@dataclass(frozen=True)
class Order:
    id: int
    user_id: int
    chat_id: int
    request_key: str
    products: int
    jobs_total: int
    status_message_id: int | None
    status_text: str | None
    status_edited_at: float | None
    summary_sent_at: float | None
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Order:
        return cls(**{k: row[k] for k in row.keys()})


@dataclass(frozen=True)
class OrderJob:
    """One video of an order as its status shows it."""

    id: int
    pos: int
    product_id: int
    product: str  # the product's description as the seller wrote it
    model: str
    cost: int
    state: JobState
    attempts: int
    error_class: str | None
    video_file_id: str | None
    claimed: bool
    started_at: float | None
    created_at: float
    finished_at: float | None
    refunded: int  # credits given back for this job (0: none)


_ORDER_JOBS = """
SELECT j.id, j.order_pos AS pos, j.product_id, COALESCE(p.description, '') AS product, j.model, j.cost,
       j.state, j.attempts, j.error_class, j.video_file_id, j.claimed, j.started_at, j.created_at,
       j.finished_at,
       COALESCE((SELECT l.delta FROM credit_ledger l WHERE l.job_id = j.id AND l.reason = 'job_refund'), 0)
           AS refunded
FROM jobs j JOIN products p ON p.id = j.product_id
WHERE j.order_id = ? ORDER BY j.order_pos
"""


class OrderStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_charged(
        self, *, user_id: int, chat_id: int, request_key: str, product_ids: list[int], per_product: int,
        template: str, wishes: str, provider: str, model: str, cost_each: int, aspect_ratio: str | None = None,
    ) -> NewOrder:
        """The order and every job of it, each charged once, in one transaction: all or nothing.

        The request key (one per confirmation screen) is unique: pressing confirm twice finds it taken."""
        total = len(product_ids) * per_product
        now = time.time()
        async with self.db.transaction() as conn:
            row = await (await conn.execute("SELECT balance FROM users WHERE id = ?", (user_id,))).fetchone()
            balance = int(row["balance"]) if row else 0
            if balance < cost_each * total:
                raise InsufficientCredits(balance, cost_each * total)
            try:
                cur = await conn.execute(
                    "INSERT INTO orders (user_id, chat_id, request_key, products, jobs_total, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", (user_id, chat_id, request_key, len(product_ids), total, now))
            except sqlite3.IntegrityError as exc:
                raise DuplicateRequest(request_key) from exc  # pragma: no mutate - equivalent: the key only names the request in a traceback; callers catch the type
            order_id = cur.lastrowid
            assert order_id is not None  # an INSERT into a rowid table always sets it
            ids: list[int] = []
            for pos, product_id in enumerate((p for p in product_ids for _ in range(per_product)), start=1):
                cur = await conn.execute(
                    "INSERT INTO jobs (user_id, chat_id, product_id, request_key, template, wishes, provider, model,"
                    " cost, state, run_after, created_at, updated_at, aspect_ratio, order_id, order_pos) VALUES (?,"
                    " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (user_id, chat_id, product_id, f"{request_key}:{pos}", template, wishes, provider, model,
                     cost_each, JobState.QUEUED, now, now, now, aspect_ratio, order_id, pos))
                job_id = cur.lastrowid
                assert job_id is not None
                ids.append(job_id)
                await insert_ledger_row(conn, user_id=user_id, delta=-cost_each, reason="job_charge", job_id=job_id)
                await conn.execute(
                    "INSERT INTO job_events (job_id, at, state, detail) VALUES (?, ?, ?, ?)",
                    (job_id, now, JobState.QUEUED, f"order {order_id}: charged {cost_each}"))
            row = await (await conn.execute("SELECT balance FROM users WHERE id = ?", (user_id,))).fetchone()
        return NewOrder(order_id=order_id, job_ids=ids, balance=int(row["balance"]))

    async def get(self, order_id: int) -> Order | None:
        row = await self.db.fetchone("SELECT * FROM orders WHERE id = ?", (order_id,))
        return Order.from_row(row) if row else None

    async def jobs(self, order_id: int) -> list[OrderJob]:
        rows = await self.db.fetchall(_ORDER_JOBS, (order_id,))
        return [OrderJob(**{**{k: r[k] for k in r.keys()}, "state": JobState(r["state"]),
                            "claimed": bool(r["claimed"])}) for r in rows]

    async def open_orders(self, user_id: int | None = None, limit: int = 1000) -> list[Order]:
        """Orders whose summary has not been sent: their status is still live."""
        where = "summary_sent_at IS NULL" + (" AND user_id = ?" if user_id is not None else "")
        params = (user_id, limit) if user_id is not None else (limit,)
        rows = await self.db.fetchall(f"SELECT * FROM orders WHERE {where} ORDER BY id LIMIT ?", params)
        return [Order.from_row(r) for r in rows]

    async def set_status(self, order_id: int, *, message_id: int, text: str, at: float) -> None:
        await self.db.execute(
            "UPDATE orders SET status_message_id = ?, status_text = ?, status_edited_at = ? WHERE id = ?",
            (message_id, text, at, order_id))

    async def claim_summary(self, order_id: int) -> bool:
        """True once per order: the caller sends the summary (a crash right after loses it, never doubles it)."""
        return await self.db.execute(
            "UPDATE orders SET summary_sent_at = ? WHERE id = ? AND summary_sent_at IS NULL",
            (time.time(), order_id)) == 1

    async def queue_places(self) -> dict[int, int]:
        """Every job still waiting for a slot, numbered from 1 in the order the engine will take them."""
        rows = await self.db.fetchall(
            "SELECT id FROM jobs"
            " WHERE state = 'queued' AND claimed = 0 AND started_at IS NULL ORDER BY run_after, id")
        return {int(r["id"]): place for place, r in enumerate(rows, start=1)}

    async def median_durations(self, window: int = 20) -> dict[str, float]:
        """Median seconds from start to delivery of the last `window` delivered jobs, per model."""
        rows = await self.db.fetchall(
            "SELECT model, finished_at - COALESCE(started_at, created_at) AS d FROM ("
            " SELECT model, finished_at, started_at, created_at,"
            "  ROW_NUMBER() OVER (PARTITION BY model ORDER BY finished_at DESC) AS n FROM jobs"
            " WHERE state = 'done' AND finished_at IS NOT NULL) WHERE n <= ?", (window,))
        by_model: dict[str, list[float]] = {}
        for r in rows:
            by_model.setdefault(r["model"], []).append(float(r["d"]))
        return {model: statistics.median(values) for model, values in by_model.items()}

    async def caption_of(self, job_id: int) -> tuple[str, int, int] | None:
        """(product description, place in the order, jobs in the order) of an order's job."""
        row = await self.db.fetchone(
            "SELECT COALESCE(p.description, '') AS product, j.order_pos, o.jobs_total FROM jobs j"
            " JOIN orders o ON o.id = j.order_id JOIN products p ON p.id = j.product_id WHERE j.id = ?", (job_id,))
        return (row["product"], int(row["order_pos"]), int(row["jobs_total"])) if row else None
