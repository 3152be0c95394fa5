"""The persistent job table: every state change is written with an event row."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import aiosqlite

from neurocards.store.db import Database
from neurocards.store.ledger import LedgerConflict, insert_ledger_row


class JobState(StrEnum):
    QUEUED = "queued"  # prompt + photo upload still to do
    SUBMITTING = "submitting"  # creating the provider task
    GENERATING = "generating"  # task exists, polling it
    DOWNLOADING = "downloading"  # result URL known, fetching the file
    SENDING = "sending"  # file on disk, delivering to the chat
    DONE = "done"
    FAILED = "failed"


TERMINAL = (JobState.DONE, JobState.FAILED)


@dataclass(frozen=True)
class Job:
    id: int
    user_id: int
    chat_id: int
    product_id: int
    request_key: str
    template: str
    wishes: str
    provider: str
    model: str
    cost: int
    state: JobState
    prompt: str | None
    image_url: str | None
    task_id: str | None
    key_id: str | None
    submitted_at: float | None
    result_url: str | None
    video_path: str | None
    video_file_id: str | None
    attempts: int
    retry_notified: bool
    queue_notified: bool
    error_class: str | None
    error_text: str | None
    run_after: float
    claimed: bool
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    # Set when the job moved to a provider cheaper than `cost`; delivery then costs this much.
    price: int | None = None
    aspect_ratio: str | None = None  # the shape the seller chose; None: the template's

    @property
    def price_paid(self) -> int:
        return self.price if self.price is not None and self.price < self.cost else self.cost
    submit_attempt: int = 0
    submit_unsure_at: float | None = None
    fresh_tasks: int = 0
    send_pending: bool = False
    send_unsure: int = 0
    delivery_failing_since: float | None = None
    delivery_notified: bool = False
    order_id: int | None = None
    order_pos: int | None = None  # 1-based place in the order

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data: dict[str, Any] = {f.name: row[f.name] for f in fields(cls)}
        data["state"] = JobState(data["state"])
        for flag in ("retry_notified", "queue_notified", "claimed", "send_pending", "delivery_notified"):
            data[flag] = bool(data[flag])
        return cls(**data)


class InsufficientCredits(Exception):
    def __init__(self, balance: int, cost: int) -> None:
        super().__init__(f"balance {balance} < cost {cost}")
        self.balance = balance
        self.cost = cost

    @property
    def missing(self) -> int:
        return self.cost - self.balance


class JobMoved(Exception):
    """The job is no longer where the writer expected it: someone else changed it in between."""


class JobFinished(JobMoved):
    """The job ended (cancelled by an admin, refunded) while something was still working on it."""


class DuplicateRequest(Exception):
    """The same confirmation was already turned into jobs."""


def _sql_value(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    return int(value) if isinstance(value, bool) else value


_UPDATABLE = {f.name for f in fields(Job)} - {"id", "user_id", "chat_id", "product_id", "request_key", "created_at",
                                              "order_id", "order_pos"}


# Runnable jobs in the engine's order, each user's numbered; a user's job is taken only while the
# user's claimed jobs plus its number stay within the cap.
_CLAIM_PER_USER = """
UPDATE jobs SET claimed = 1 WHERE id IN (
    SELECT id FROM (
        SELECT j.id, j.run_after,
               ROW_NUMBER() OVER (PARTITION BY j.user_id ORDER BY j.run_after, j.id) AS n,
               (SELECT COUNT(*) FROM jobs r WHERE r.user_id = j.user_id AND r.claimed = 1
                AND r.state NOT IN ('done', 'failed')) AS running
        FROM jobs j WHERE j.claimed = 0 AND j.state NOT IN ('done', 'failed') AND j.run_after <= ?)
    WHERE running + n <= ? ORDER BY run_after, id LIMIT ?)
RETURNING *
"""


async def _refund_charge(conn: aiosqlite.Connection, job: sqlite3.Row, error_class: str) -> bool:
    """Give the job's charge back; False when it was never charged or was refunded before."""
    charge = await (await conn.execute(
        "SELECT delta FROM credit_ledger WHERE job_id = ? AND reason = 'job_charge'", (job["id"],))).fetchone()
    if charge is None:
        return False
    try:
        await insert_ledger_row(conn, user_id=job["user_id"], delta=-int(charge["delta"]), reason="job_refund",
                                job_id=job["id"], note=error_class)
    except LedgerConflict:
        return False
    return True


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Told the job after each change of its state (e.g. to refresh its order's live status).
        self.on_change: Callable[[Job], None] | None = None
        # At most this many jobs of one user are worked on at once (limits.max_jobs_in_flight; 0: no cap).
        self.per_user_running = 0

    def _changed(self, job: Job) -> None:
        if self.on_change is not None:
            self.on_change(job)

    async def get(self, job_id: int) -> Job | None:
        row = await self.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    async def by_task_id(self, task_id: str) -> Job | None:
        row = await self.db.fetchone("SELECT * FROM jobs WHERE task_id = ?", (task_id,))
        return Job.from_row(row) if row else None

    async def release_claims(self) -> int:
        """At startup nothing is running yet, so every claim left in the table is stale."""
        return await self.db.execute("UPDATE jobs SET claimed = 0 WHERE claimed = 1")

    async def claim_runnable(self, limit: int, now: float | None = None) -> list[Job]:
        if limit <= 0:
            return []
        now = time.time() if now is None else now
        async with self.db.transaction() as conn:
            if self.per_user_running <= 0:
                rows = await (await conn.execute(
                    "UPDATE jobs SET claimed = 1 WHERE id IN ("
                    " SELECT id FROM jobs WHERE claimed = 0 AND state NOT IN ('done', 'failed')"
                    " AND run_after <= ? ORDER BY run_after, id LIMIT ?) RETURNING *",
                    (now, limit),
                )).fetchall()
            else:  # a user's jobs past the cap wait their turn (an order is never refused for it)
                rows = await (await conn.execute(_CLAIM_PER_USER, (now, self.per_user_running, limit))).fetchall()
        jobs = [Job.from_row(r) for r in rows]
        jobs.sort(key=lambda j: (j.run_after, j.id))
        return jobs

    async def update(self, job_id: int, *, event: str | None = None, allow_finished: bool = False,
                     expect: dict[str, Any] | None = None, **changes: Any) -> Job:
        """Write field changes (and an event row when the state changes or `event` is set).

        A conditional write: with `expect` (e.g. {"state": "generating"}) the row changes only if
        it still holds those values, else JobMoved. A finished job is never moved again: that
        raises JobFinished unless `allow_finished` (bookkeeping such as forgetting a deleted file)."""
        unknown = (set(changes) | set(expect or {})) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        now = time.time()
        changes["updated_at"] = now
        assignments = ", ".join(f"{k} = ?" for k in changes)
        values = [_sql_value(v) for v in changes.values()]
        guard = "" if allow_finished else " AND state NOT IN ('done', 'failed')"
        conditions = [_sql_value(v) for v in (expect or {}).values()]
        guard += "".join(f" AND {k} IS ?" for k in (expect or {}))
        async with self.db.transaction() as conn:
            row = await (await conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ?{guard} RETURNING *",
                (*values, job_id, *conditions))).fetchone()
            if row is None:
                current = await (await conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,))).fetchone()
                if current is None:
                    raise KeyError(job_id)  # pragma: no mutate - equivalent: the key only names the missing job in a traceback
                if current["state"] in TERMINAL and not allow_finished:
                    raise JobFinished(job_id)  # pragma: no mutate - equivalent: callers catch the type; the id only names the job in a traceback
                raise JobMoved(job_id)  # pragma: no mutate - equivalent: callers catch the type; the id only names the job in a traceback
            if "state" in changes or event:
                await conn.execute(
                    "INSERT INTO job_events (job_id, at, state, detail) VALUES (?, ?, ?, ?)",
                    (job_id, now, row["state"], event),
                )
        job = Job.from_row(row)
        if "state" in changes or "attempts" in changes:
            self._changed(job)
        return job

    async def fail_and_refund(self, job_id: int, *, error_class: str, error_text: str,
                              only_in: tuple[JobState, ...] | None = None) -> tuple[Job, bool]:
        """End a job as failed and refund its charge; returns (job, refunded_now).

        Idempotent: a second call finds the refund row already there and refunds nothing. With
        `only_in`, nothing happens unless the job is in one of those states at the moment of the
        write (one transaction: no one can move it in between).
        """
        now = time.time()
        allowed = tuple(s.value for s in only_in) if only_in else None
        async with self.db.transaction() as conn:
            row = await (await conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,))).fetchone()
            if row is None:
                raise KeyError(job_id)  # pragma: no mutate - equivalent: the key only names the missing job in a traceback
            if row["state"] == JobState.DONE or (allowed is not None and row["state"] not in allowed):
                return Job.from_row(row), False  # delivered, or moved on since the caller looked
            refunded = await _refund_charge(conn, row, error_class)
            row = await (await conn.execute(
                "UPDATE jobs SET state = 'failed', error_class = ?, error_text = ?, claimed = 0,"
                " finished_at = COALESCE(finished_at, ?), updated_at = ? WHERE id = ? RETURNING *",
                (error_class, error_text[:1000], now, now, job_id))).fetchone()
            await conn.execute(
                "INSERT INTO job_events (job_id, at, state, detail) VALUES (?, ?, 'failed', ?)",
                (job_id, now, f"{error_class}: {error_text[:500]}" + (" (refunded)" if refunded else "")),
            )
        job = Job.from_row(row)
        self._changed(job)
        return job, refunded

    async def average_duration_s(self, window: int = 50) -> float | None:
        """Mean time from start to delivery of the last `window` delivered jobs (for ETAs)."""
        row = await self.db.fetchone(
            "SELECT AVG(finished_at - COALESCE(started_at, created_at)) AS d FROM ("
            " SELECT finished_at, started_at, created_at FROM jobs WHERE state = 'done'"
            " AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?)", (window,))
        return float(row["d"]) if row and row["d"] is not None else None

    async def count_unfinished(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM jobs WHERE state NOT IN ('done', 'failed')")
        assert row is not None  # an aggregate always answers one row
        return int(row["n"])

    async def waiting_unnotified(self, older_than: float) -> list[Job]:
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE state IN ('queued', 'submitting', 'generating') AND queue_notified = 0"
            " AND created_at < ? ORDER BY id LIMIT 500", (older_than,))
        return [Job.from_row(r) for r in rows]

    async def mark_queue_notified(self, job_ids: list[int]) -> None:
        if not job_ids:
            return
        marks = ",".join("?" for _ in job_ids)
        await self.db.execute(f"UPDATE jobs SET queue_notified = 1 WHERE id IN ({marks})", tuple(job_ids))

    async def cancel_queued(self, user_id: int, reason: str) -> list[int]:
        """Fail and refund every job of the user that has not reached the provider yet.

        Each cancellation re-checks the state inside its own write: a job the engine moved on in
        the meantime (photo uploaded, task created) is left to finish and be delivered."""
        rows = await self.db.fetchall(
            "SELECT id FROM jobs WHERE user_id = ? AND state = 'queued'", (user_id,))
        cancelled = []
        for row in rows:
            _, refunded = await self.fail_and_refund(row["id"], error_class="cancelled", error_text=reason,
                                                     only_in=(JobState.QUEUED,))
            if refunded:
                cancelled.append(int(row["id"]))
        return cancelled

    async def release_claim(self, job_id: int, run_after: float) -> None:
        """Give a job back to the dispatcher (after a step failed in a way we could not record)."""
        await self.db.execute("UPDATE jobs SET claimed = 0, run_after = ? WHERE id = ? AND claimed = 1",
                              (run_after, job_id))

    async def release_orphaned_claims(self, running: set[int]) -> list[int]:
        """Claims held by no live coroutine of this process (a step died and its release failed)."""
        rows = await self.db.fetchall("SELECT id FROM jobs WHERE claimed = 1 AND state NOT IN ('done', 'failed')")
        orphans = [int(r["id"]) for r in rows if int(r["id"]) not in running]
        if orphans:
            marks = ",".join("?" for _ in orphans)
            await self.db.execute(f"UPDATE jobs SET claimed = 0 WHERE claimed = 1 AND id IN ({marks})",
                                  tuple(orphans))
        return orphans

    async def user_activity(self, user_id: int, since: float) -> tuple[int, float | None]:
        """(jobs created since `since`, time of the latest order) for limits."""
        row = await self.db.fetchone(
            "SELECT SUM(created_at >= ?) AS recent, MAX(created_at) AS last FROM jobs WHERE user_id = ?",
            (since, user_id))
        assert row is not None  # an aggregate always answers one row
        return int(row["recent"] or 0), row["last"]
