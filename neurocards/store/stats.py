"""Read-only queries for admins: one user's picture and the bot's numbers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from neurocards.store.costs import CostStore, ModelCosts
from neurocards.store.db import Database
from neurocards.store.promo import PromoStore


@dataclass(frozen=True)
class UserReport:
    user_id: int
    username: str | None
    first_name: str | None
    balance: int
    banned: bool
    referrer_id: int | None
    first_seen: float
    last_seen: float
    jobs_by_state: dict[str, int]
    last_errors: list[tuple[int, str, str]]  # (job id, class, text)
    payments: list[tuple[str, int, float]] = field(default_factory=list)  # (label, amount, at)
    seen: bool = True  # False: credited or banned ahead, has not pressed /start yet


@dataclass(frozen=True)
class PeriodStats:
    days: int
    new_users: int
    delivered: int
    failures_by_class: dict[str, int]
    credits_charged: int
    credits_refunded: int
    promo_redemptions: dict[str, int] = field(default_factory=dict)  # code -> sellers who redeemed it
    # What it cost and brought (store/costs.py): KIE tasks created and their credits, of which
    # wasted on tasks that brought no delivered video, OpenAI tokens, Stars not refunded.
    kie_tasks: int = 0
    kie_credits: float = 0.0
    wasted_kie_credits: float = 0.0
    openai_tokens: int = 0
    openai_prompt_tokens: int = 0
    openai_completion_tokens: int = 0
    stars_received: int = 0
    by_model: dict[str, ModelCosts] = field(default_factory=dict)


async def user_report(db: Database, user_id: int) -> UserReport | None:
    user = await db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
    if user is None:
        return None
    states = await db.fetchall(
        "SELECT state, COUNT(*) AS n FROM jobs WHERE user_id = ? GROUP BY state", (user_id,))
    errors = await db.fetchall(
        "SELECT id, error_class, error_text FROM jobs WHERE user_id = ? AND state = 'failed'"
        " ORDER BY id DESC LIMIT 5", (user_id,))
    payments = await db.fetchall(
        "SELECT reason, delta, created_at FROM credit_ledger WHERE user_id = ?"
        " AND reason IN ('payment', 'payment_refund', 'admin', 'referral') ORDER BY id DESC LIMIT 10",
        (user_id,))
    return UserReport(
        user_id=user_id, username=user["username"], first_name=user["first_name"], balance=user["balance"],
        banned=bool(user["is_banned"]), referrer_id=user["referrer_id"], first_seen=user["first_seen"],
        last_seen=user["last_seen"], jobs_by_state={r["state"]: r["n"] for r in states},
        last_errors=[(r["id"], r["error_class"] or "", r["error_text"] or "") for r in errors],
        payments=[(r["reason"], r["delta"], r["created_at"]) for r in payments],
        seen=bool(user["seen"]),
    )


async def period_stats(db: Database, days: int, now: float | None = None) -> PeriodStats:
    now = time.time() if now is None else now
    since = (now - now % 86400) - (days - 1) * 86400  # whole UTC days, today included
    new_users = await db.fetchone("SELECT COUNT(*) AS n FROM users WHERE seen = 1 AND first_seen >= ?", (since,))
    delivered = await db.fetchone(
        "SELECT COUNT(*) AS n FROM jobs WHERE state = 'done' AND finished_at >= ?", (since,))
    failures = await db.fetchall(
        "SELECT COALESCE(error_class, 'unknown') AS c, COUNT(*) AS n FROM jobs WHERE state = 'failed'"
        " AND finished_at >= ? GROUP BY c ORDER BY n DESC", (since,))
    ledger = await db.fetchone(
        "SELECT COALESCE(SUM(CASE WHEN reason = 'job_charge' THEN -delta END), 0) AS charged,"
        " COALESCE(SUM(CASE WHEN reason = 'job_refund' THEN delta END), 0) AS refunded"
        " FROM credit_ledger WHERE created_at >= ?", (since,))
    return PeriodStats(
        days=days, new_users=int(new_users["n"]) if new_users else 0,
        delivered=int(delivered["n"]) if delivered else 0,
        failures_by_class={r["c"]: r["n"] for r in failures},
        credits_charged=int(ledger["charged"]) if ledger else 0,
        credits_refunded=int(ledger["refunded"]) if ledger else 0,
        promo_redemptions=await PromoStore(db).redemptions_since(since),
        **vars(await CostStore(db).period(since)),
    )


async def record_admin_action(db: Database, *, admin_id: int | None, action: str, user_id: int | None,
                              detail: str | None = None) -> None:
    await db.execute(
        "INSERT INTO admin_audit (admin_id, action, user_id, detail, at) VALUES (?, ?, ?, ?, ?)",
        (admin_id, action, user_id, detail, time.time()))


@dataclass(frozen=True)
class DayNumbers:
    """One UTC day of the business, as the owner's daily digest shows it."""

    day: str  # YYYY-MM-DD (UTC)
    delivered: int
    failures_by_class: dict[str, int]
    revenue_stars: int  # Stars paid that day, refunded payments left out
    new_users: int
    credits_charged: int
    credits_refunded: int

    @property
    def failed(self) -> int:
        return sum(self.failures_by_class.values())


async def daily_numbers(db: Database, days: int = 14, now: float | None = None) -> list[DayNumbers]:
    """The last `days` UTC days, oldest first, today included (so far). Every number of the
    digest comes from here: add a field and a query to show another one."""
    now = time.time() if now is None else now
    since = (now - now % 86400) - (days - 1) * 86400
    day_names = [time.strftime("%Y-%m-%d", time.gmtime(since + i * 86400)) for i in range(days)]

    async def per_day(sql: str) -> dict[str, int]:
        return {r["d"]: int(r["n"] or 0) for r in await db.fetchall(sql, (since,))}

    delivered = await per_day("SELECT date(finished_at, 'unixepoch') AS d, COUNT(*) AS n FROM jobs"
                              " WHERE state = 'done' AND finished_at >= ? GROUP BY d")
    revenue = await per_day("SELECT date(created_at, 'unixepoch') AS d, SUM(stars) AS n FROM payments"
                            " WHERE status != 'refunded' AND created_at >= ? GROUP BY d")
    new_users = await per_day("SELECT date(first_seen, 'unixepoch') AS d, COUNT(*) AS n FROM users"
                              " WHERE seen = 1 AND first_seen >= ? GROUP BY d")
    charged = await per_day("SELECT date(created_at, 'unixepoch') AS d, -SUM(delta) AS n FROM credit_ledger"
                            " WHERE reason = 'job_charge' AND created_at >= ? GROUP BY d")
    refunded = await per_day("SELECT date(created_at, 'unixepoch') AS d, SUM(delta) AS n FROM credit_ledger"
                             " WHERE reason = 'job_refund' AND created_at >= ? GROUP BY d")
    failures: dict[str, dict[str, int]] = {}
    for r in await db.fetchall(
            "SELECT date(finished_at, 'unixepoch') AS d, COALESCE(error_class, 'unknown') AS c, COUNT(*) AS n"
            " FROM jobs WHERE state = 'failed' AND finished_at >= ? GROUP BY d, c", (since,)):
        failures.setdefault(r["d"], {})[r["c"]] = int(r["n"])
    return [DayNumbers(day=d, delivered=delivered.get(d, 0), failures_by_class=failures.get(d, {}),
                       revenue_stars=revenue.get(d, 0), new_users=new_users.get(d, 0),
                       credits_charged=charged.get(d, 0), credits_refunded=refunded.get(d, 0))
            for d in day_names]
