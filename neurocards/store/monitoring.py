"""The few counts that metrics and the watchdog read from the job table."""

from __future__ import annotations

from neurocards.store.db import Database


async def jobs_by_state(db: Database) -> dict[str, int]:
    rows = await db.fetchall("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
    return {str(row[0]): int(row[1]) for row in rows}


async def jobs_due(db: Database, now: float) -> int:
    """Jobs waiting for a slot now. Same predicate as JobStore.claim_runnable, so it is served
    by the jobs_runnable index."""
    rows = await db.fetchall(
        "SELECT COUNT(*) FROM jobs WHERE claimed = 0 AND state NOT IN ('done', 'failed')"
        " AND run_after <= ?", (now,))
    return int(rows[0][0]) if rows else 0


async def outcomes_since(db: Database, since: float) -> tuple[int, int]:
    """(finished, failed) jobs since `since`. A seller's own bad photo or a cancellation is not
    an outage, so those do not count as failed."""
    row = await db.fetchone(
        "SELECT COUNT(*) AS total, SUM(state = 'failed' AND COALESCE(error_class, '') NOT IN"
        " ('user_violation', 'cancelled')) AS failed FROM jobs"
        " WHERE finished_at >= ? AND state IN ('done', 'failed')", (since,))
    if row is None:
        return 0, 0
    return int(row["total"] or 0), int(row["failed"] or 0)
