"""The activity log and the dashboard views (what Metabase reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neurocards.store.db import Database
from neurocards.store.payments import PaymentStore
from tests.harness import Harness, launch
from tests.test_payments import buy

DAY = 86400.0
T0 = 1741003200.0  # Monday 2025-03-03 12:00 UTC
VIEWS = ("v_users_daily", "v_jobs_daily", "v_revenue_daily", "v_retention_weekly", "v_videos_per_user",
         "v_errors", "v_kie_usage")


async def rows(db: Database, sql: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetchall(sql)]


async def seed(db: Database) -> None:
    """Three users over two weeks, four jobs, two payments."""
    for user_id, first_seen in ((1, T0), (2, T0 + DAY), (3, T0 + 7 * DAY)):
        await db.execute("INSERT INTO users (id, username, first_seen, last_seen) VALUES (?, ?, ?, ?)",
                         (user_id, f"u{user_id}", first_seen, first_seen))
        await db.execute("INSERT INTO products (user_id, photo_file_id, photo_path, description, created_at)"
                         " VALUES (?, 'f', 'p', 'кружка', ?)", (user_id, first_seen))
    for user_id, at, action in ((1, T0, "start"), (2, T0 + DAY, "start"), (1, T0 + 7 * DAY, "button:menu:create"),
                                (3, T0 + 7 * DAY, "start")):
        await db.execute("INSERT INTO activity (user_id, at, action) VALUES (?, ?, ?)", (user_id, at, action))
    jobs = [  # user, product, state, created, started, submitted, finished, key, error class, error text
        (1, 1, "done", T0, T0 + 10, T0 + 20, T0 + 70, "k1", None, None),
        (1, 1, "failed", T0, T0 + 10, T0 + 20, T0 + 30, "k1", "temporary", "HTTP 500"),
        (2, 2, "failed", T0 + DAY, None, T0 + DAY + 5, T0 + DAY + 9, "k2", "temporary", "HTTP 500"),
        (2, 2, "queued", T0 + DAY, None, None, None, None, None, None),
    ]
    for n, (user_id, product, state, created, started, submitted, finished, key, cls, text) in enumerate(jobs):
        await db.execute(
            "INSERT INTO jobs (user_id, chat_id, product_id, request_key, template, provider, model, cost, state,"
            " run_after, created_at, updated_at, started_at, submitted_at, finished_at, key_id, error_class,"
            " error_text) VALUES (?, ?, ?, ?, 'studio', 'kie', 'veo3_fast', 10, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user_id, user_id, product, f"k{n}", state, created, created, finished or created, started, submitted,
             finished, key, cls, text))
    store = PaymentStore(db)
    for user_id, charge, pack, credits, stars, at in ((1, "c1", "m", 120, 100, T0), (3, "c2", "s", 50, 50, T0 + 7 * DAY)):
        recorded = await store.record(user_id=user_id, charge_id=charge, provider_charge_id=None, pack_id=pack,
                                      credits=credits, stars=stars, currency="XTR", payload="p", referral_bonus=0)
        assert recorded is not None
        await db.execute("UPDATE payments SET created_at = ? WHERE id = ?", (at, recorded.payment.id))


async def test_every_view_on_a_seeded_database(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "analytics.sqlite3")
    try:
        await seed(db)
        names = {r["name"] for r in await rows(db, "SELECT name FROM sqlite_master WHERE type = 'view'")}
        assert set(VIEWS) <= names

        assert await rows(db, "SELECT * FROM v_users_daily ORDER BY day") == [
            {"day": "2025-03-03", "new_users": 1, "active_users": 1, "total_users": 1},
            {"day": "2025-03-04", "new_users": 1, "active_users": 1, "total_users": 2},
            {"day": "2025-03-10", "new_users": 1, "active_users": 2, "total_users": 3},
        ]
        assert await rows(db, "SELECT * FROM v_jobs_daily ORDER BY day") == [
            {"day": "2025-03-03", "jobs": 2, "done": 1, "failed": 1, "in_progress": 0, "success_rate_pct": 50.0,
             "avg_duration_s": 60.0, "credits_spent": 10},
            {"day": "2025-03-04", "jobs": 2, "done": 0, "failed": 1, "in_progress": 1, "success_rate_pct": 0.0,
             "avg_duration_s": None, "credits_spent": 0},
        ]
        assert await rows(db, "SELECT day, pack_id, payments, stars, credits_sold, stars_net, payers"
                              " FROM v_revenue_daily ORDER BY day") == [
            {"day": "2025-03-03", "pack_id": "m", "payments": 1, "stars": 100, "credits_sold": 120,
             "stars_net": 100, "payers": 1},
            {"day": "2025-03-10", "pack_id": "s", "payments": 1, "stars": 50, "credits_sold": 50,
             "stars_net": 50, "payers": 1},
        ]
        assert await rows(db, "SELECT * FROM v_retention_weekly ORDER BY cohort_week, weeks_later") == [
            {"cohort_week": "2025-03-03", "cohort_users": 2, "weeks_later": 0, "active_users": 2,
             "retention_pct": 100.0},
            {"cohort_week": "2025-03-03", "cohort_users": 2, "weeks_later": 1, "active_users": 1,
             "retention_pct": 50.0},
            {"cohort_week": "2025-03-10", "cohort_users": 1, "weeks_later": 0, "active_users": 1,
             "retention_pct": 100.0},
        ]
        per_user = {r["user_id"]: r for r in await rows(db, "SELECT * FROM v_videos_per_user")}
        assert (per_user[1]["videos"], per_user[1]["failed"], per_user[1]["payments"], per_user[1]["stars_paid"],
                per_user[1]["balance"]) == (1, 1, 1, 100, 120)
        assert (per_user[2]["videos"], per_user[2]["failed"], per_user[2]["payments"]) == (0, 1, 0)
        assert per_user[3]["first_seen"] == "2025-03-10 12:00:00"
        assert await rows(db, "SELECT error_class, error_text, jobs, failed_jobs, users FROM v_errors") == [
            {"error_class": "temporary", "error_text": "HTTP 500", "jobs": 2, "failed_jobs": 2, "users": 2}]
        assert await rows(db, "SELECT day, key_id, tasks, done, failed, avg_render_s FROM v_kie_usage"
                              " ORDER BY key_id") == [
            {"day": "2025-03-03", "key_id": "k1", "tasks": 2, "done": 1, "failed": 1, "avg_render_s": 50.0},
            {"day": "2025-03-04", "key_id": "k2", "tasks": 1, "done": 0, "failed": 1, "avg_render_s": None},
        ]
    finally:
        await db.close()


async def test_views_work_on_an_empty_database(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "empty.sqlite3")
    try:
        for view in VIEWS:
            assert await rows(db, f"SELECT * FROM {view}") == []
    finally:
        await db.close()


async def test_actions_are_logged_as_users_go(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(5001)
    await launch(user)
    await buy(user, "50 кредитов")
    await user.send_text("/terms")
    await user.wait_for_message(lambda m: "Условия" in m.text)

    def logged() -> list[str] | None:  # rows are written in batches, within a second
        found = [r["action"] for r in harness.query("SELECT action FROM activity WHERE user_id = 5001 ORDER BY id")]
        return found if "command:terms" in found else None

    actions = await harness.tg.wait_until(logged, timeout=5)
    for expected in ("start", "button:menu:create", "photo", "text", "button:template", "button:wishes:skip",
                     "button:quantity", "launch", "button:pay:list", "button:pay:buy", "invoice", "payment",
                     "command:terms"):
        assert expected in actions, (expected, actions)
    first_seen, last_seen = harness.query("SELECT first_seen, last_seen FROM users WHERE id = 5001")[0]
    assert first_seen <= last_seen
