"""What the videos really cost: every provider task created and every OpenAI answer's tokens.

A task is recorded the moment the provider returns its id, before anything else is done with
it, so failed, doubled (a job paid for twice) and abandoned tasks are all in the bill. Its cost
is the configured price until KIE reports `creditsConsumed`, which then replaces it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from neurocards.store.db import Database

PriceOf = Callable[[str, str], float]  # (backend, model) -> credits

_SPEND = ("SELECT COALESCE(SUM(credits), 0) AS c, MIN(created_at) AS first FROM provider_tasks"
          " WHERE backend = 'kie' AND created_at >= ?")


def _per_day(row: sqlite3.Row | None, days: int, now: float) -> float:
    if row is None or row["first"] is None:
        return 0.0
    # A bot younger than `days` days: average over the time it has been spending (at least a day).
    span_days = max((now - float(row["first"])) / 86400, 1.0)
    return float(row["c"]) / min(float(days), span_days)


def kie_daily_spend_readonly(db_path: Path, days: int = 7) -> float:
    """The same average, read without the bot's connection (for `neurocards doctor`)."""
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0.0
    try:
        conn.row_factory = sqlite3.Row
        now = time.time()
        return _per_day(conn.execute(_SPEND, (now - days * 86400,)).fetchone(), days, now)
    except sqlite3.Error:  # an older schema without the table: nothing recorded yet
        return 0.0
    finally:
        conn.close()


@dataclass(frozen=True)
class ModelCosts:
    delivered: int = 0
    kie_tasks: int = 0
    kie_credits: float = 0.0
    credits_charged: int = 0


@dataclass(frozen=True)
class PeriodCosts:
    kie_tasks: int = 0
    kie_credits: float = 0.0
    wasted_kie_credits: float = 0.0  # tasks that brought no delivered video: failed or doubled
    openai_tokens: int = 0
    openai_prompt_tokens: int = 0
    openai_completion_tokens: int = 0
    stars_received: int = 0
    by_model: dict[str, ModelCosts] = field(default_factory=dict)


class CostStore:
    def __init__(self, db: Database, price_of: PriceOf | None = None) -> None:
        self.db = db
        self.price_of = price_of or (lambda backend, model: 0.0)

    async def task_created(self, *, task_id: str, job_id: int | None, backend: str, model: str,
                           key_id: str | None, at: float | None = None) -> None:
        """One task paid for; recording the same task again (a resumed or adopted one) changes nothing."""
        await self.db.execute(
            "INSERT OR IGNORE INTO provider_tasks (task_id, job_id, attempt, backend, model, key_id, created_at,"
            " credits) VALUES (:task, :job, (SELECT COUNT(*) + 1 FROM provider_tasks WHERE job_id = :job),"
            " :backend, :model, :key, :at, :credits)",
            {"task": task_id, "job": job_id, "backend": backend, "model": model, "key": key_id,
             "at": time.time() if at is None else at, "credits": self.price_of(backend, model)})

    async def task_finished(self, task_id: str, *, success: bool, credits_consumed: float | None) -> None:
        await self.db.execute(
            "UPDATE provider_tasks SET outcome = :outcome,"
            " credits = COALESCE(:reported, credits), reported = (:reported IS NOT NULL) OR reported"
            " WHERE task_id = :task",
            {"outcome": "success" if success else "failed", "reported": credits_consumed, "task": task_id})

    async def openai_used(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        await self.db.execute(
            "INSERT INTO openai_usage (at, model, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?)",
            (time.time(), model, max(0, prompt_tokens), max(0, completion_tokens)))

    async def kie_daily_spend(self, days: int = 7, now: float | None = None) -> float:
        """Average KIE credits per day over the last `days` days (0 with no tasks)."""
        now = time.time() if now is None else now
        row = await self.db.fetchone(_SPEND, (now - days * 86400,))
        return _per_day(row, days, now)

    async def period(self, since: float) -> PeriodCosts:
        kie = await self.db.fetchone(
            "SELECT COUNT(*) AS n, COALESCE(SUM(t.credits), 0) AS c,"
            " COALESCE(SUM(CASE WHEN j.state = 'done' AND j.task_id = t.task_id THEN 0 ELSE t.credits END), 0)"
            "   AS wasted"
            " FROM provider_tasks t LEFT JOIN jobs j ON j.id = t.job_id"
            " WHERE t.backend = 'kie' AND t.created_at >= ?", (since,))
        gpt = await self.db.fetchone(
            "SELECT COALESCE(SUM(prompt_tokens), 0) AS p, COALESCE(SUM(completion_tokens), 0) AS c"
            " FROM openai_usage WHERE at >= ?", (since,))
        stars = await self.db.fetchone(
            "SELECT COALESCE(SUM(stars), 0) AS s FROM payments WHERE created_at >= ? AND status != 'refunded'",
            (since,))
        assert kie is not None and gpt is not None and stars is not None
        return PeriodCosts(
            kie_tasks=int(kie["n"]), kie_credits=float(kie["c"]), wasted_kie_credits=float(kie["wasted"]),
            openai_tokens=int(gpt["p"]) + int(gpt["c"]), openai_prompt_tokens=int(gpt["p"]),
            openai_completion_tokens=int(gpt["c"]), stars_received=int(stars["s"]),
            by_model=await self._by_model(since))

    async def _by_model(self, since: float) -> dict[str, ModelCosts]:
        rows = await self.db.fetchall(
            "SELECT model, SUM(delivered) AS delivered, SUM(tasks) AS tasks, SUM(credits) AS credits,"
            " SUM(charged) AS charged FROM ("
            "  SELECT model, 1 AS delivered, 0 AS tasks, 0 AS credits, 0 AS charged FROM jobs"
            "   WHERE state = 'done' AND finished_at >= :since"
            "  UNION ALL SELECT model, 0, 1, credits, 0 FROM provider_tasks"
            "   WHERE backend = 'kie' AND created_at >= :since"
            "  UNION ALL SELECT j.model, 0, 0, 0, -l.delta FROM credit_ledger l JOIN jobs j ON j.id = l.job_id"
            "   WHERE l.reason = 'job_charge' AND l.created_at >= :since"
            " ) GROUP BY model ORDER BY model", {"since": since})
        return {r["model"]: ModelCosts(delivered=int(r["delivered"]), kie_tasks=int(r["tasks"]),
                                       kie_credits=float(r["credits"]), credits_charged=int(r["charged"]))
                for r in rows}
