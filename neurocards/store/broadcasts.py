"""Broadcasts and their recipients, one row per recipient with its outcome.

A send is claimed (`pending → sending`) and committed before the request goes out, and its
outcome written after. The schema (migration 7) keeps the promises: at most one `sending` row
per broadcast, and an outcome is final, so a recipient is never sent a broadcast twice. A row
found `sending` at start-up was cut off by a crash: it becomes `unknown`, not a second send.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, fields

from neurocards.store.db import Database

SEGMENTS = ("all", "paid", "active30", "no_video")
OUTCOMES = ("sent", "blocked", "failed", "unknown")
ACTIVE_DAYS = 30

# Banned, opted-out and unreachable (blocked the bot) sellers never receive a broadcast.
_REACHABLE = "u.seen = 1 AND u.is_banned = 0 AND u.news_opt_out = 0 AND u.unreachable_at IS NULL"
_SEGMENT_SQL = {
    "all": "",
    "paid": " AND EXISTS (SELECT 1 FROM payments p WHERE p.user_id = u.id AND p.status != 'refunded')",
    "active30": " AND u.last_seen >= :active_since",
    "no_video": " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.user_id = u.id AND j.state = 'done')",
}


@dataclass(frozen=True)
class Broadcast:
    id: int
    draft_key: str
    admin_id: int
    admin_chat_id: int
    kind: str  # text | photo | video
    body: str  # HTML
    file_id: str | None
    button_text: str | None
    button_url: str | None
    segment: str
    state: str  # sending | stopped | done
    progress_message_id: int | None
    created_at: float
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Broadcast:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Counts:
    total: int = 0
    pending: int = 0  # not tried yet (the one in flight included)
    sent: int = 0
    blocked: int = 0
    failed: int = 0
    unknown: int = 0


@dataclass(frozen=True)
class Draft:
    kind: str
    body: str
    file_id: str | None = None
    button_text: str | None = None
    button_url: str | None = None


def _segment_where(segment: str) -> str:
    if segment not in _SEGMENT_SQL:
        raise ValueError(f"unknown segment {segment!r}")
    return _REACHABLE + _SEGMENT_SQL[segment]


class BroadcastStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def count_recipients(self, segment: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        row = await self.db.fetchone(
            f"SELECT COUNT(*) AS n FROM users u WHERE {_segment_where(segment)}",
            {"active_since": now - ACTIVE_DAYS * 86400})
        return int(row["n"]) if row else 0

    async def create(self, *, draft_key: str, admin_id: int, admin_chat_id: int, draft: Draft, segment: str,
                     now: float | None = None) -> Broadcast | None:
        """The broadcast and its recipients, fixed now; None if this draft was sent already."""
        now = time.time() if now is None else now
        where = _segment_where(segment)
        try:
            async with self.db.transaction() as conn:
                row = await (await conn.execute(
                    "INSERT INTO broadcasts (draft_key, admin_id, admin_chat_id, kind, body, file_id, button_text,"
                    " button_url, segment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                    (draft_key, admin_id, admin_chat_id, draft.kind, draft.body, draft.file_id, draft.button_text,
                     draft.button_url, segment, now))).fetchone()
                await conn.execute(
                    f"INSERT INTO broadcast_recipients (broadcast_id, user_id) SELECT :id, u.id FROM users u"
                    f" WHERE {where}", {"id": row["id"], "active_since": now - ACTIVE_DAYS * 86400})
        except sqlite3.IntegrityError as exc:
            if "draft_key" in str(exc):
                return None
            raise
        return Broadcast.from_row(row)

    async def get(self, broadcast_id: int) -> Broadcast | None:
        row = await self.db.fetchone("SELECT * FROM broadcasts WHERE id = ?", (broadcast_id,))
        return Broadcast.from_row(row) if row else None

    async def running(self) -> list[Broadcast]:
        rows = await self.db.fetchall("SELECT * FROM broadcasts WHERE state = 'sending' ORDER BY id")
        return [Broadcast.from_row(r) for r in rows]

    async def all(self) -> list[Broadcast]:
        return [Broadcast.from_row(r) for r in await self.db.fetchall("SELECT * FROM broadcasts ORDER BY id")]

    async def settle_interrupted(self) -> int:
        """At start-up: a send in flight when the process died may have arrived; never repeat it."""
        return await self.db.execute(
            "UPDATE broadcast_recipients SET state = 'unknown', error = 'interrupted', updated_at = ?"
            " WHERE state = 'sending'", (time.time(),))

    async def claim_next(self, broadcast_id: int) -> tuple[int, bool] | None:
        """Mark the next pending recipient as in flight (committed before the send); returns
        (user id, still eligible), or None when nobody is left or the broadcast was stopped."""
        row = await self.db.fetchone(
            "UPDATE broadcast_recipients SET state = 'sending', updated_at = :now"
            " WHERE broadcast_id = :id AND user_id = (SELECT user_id FROM broadcast_recipients"
            "   WHERE broadcast_id = :id AND state = 'pending' ORDER BY user_id LIMIT 1)"
            " AND EXISTS (SELECT 1 FROM broadcasts WHERE id = :id AND state = 'sending')"
            " RETURNING user_id", {"id": broadcast_id, "now": time.time()})
        if row is None:
            return None
        user = await self.db.fetchone(
            "SELECT is_banned = 0 AND news_opt_out = 0 AS ok FROM users WHERE id = ?", (row["user_id"],))
        return int(row["user_id"]), bool(user and user["ok"])

    async def settle(self, broadcast_id: int, user_id: int, outcome: str, error: str | None = None) -> None:
        assert outcome in OUTCOMES
        await self.db.execute(
            "UPDATE broadcast_recipients SET state = ?, error = ?, updated_at = ?"
            " WHERE broadcast_id = ? AND user_id = ? AND state = 'sending'",
            (outcome, error, time.time(), broadcast_id, user_id))

    async def release(self, broadcast_id: int, user_id: int) -> None:
        """Telegram refused the send before doing it (flood wait): the recipient waits again."""
        await self.db.execute(
            "UPDATE broadcast_recipients SET state = 'pending', updated_at = ?"
            " WHERE broadcast_id = ? AND user_id = ? AND state = 'sending'", (time.time(), broadcast_id, user_id))

    async def mark_unreachable(self, user_id: int) -> None:
        await self.db.execute("UPDATE users SET unreachable_at = ? WHERE id = ?", (time.time(), user_id))

    async def opt_out(self, user_id: int) -> bool:
        return await self.db.execute(
            "UPDATE users SET news_opt_out = 1 WHERE id = ? AND news_opt_out = 0", (user_id,)) == 1

    async def set_progress_message(self, broadcast_id: int, message_id: int) -> None:
        await self.db.execute("UPDATE broadcasts SET progress_message_id = ? WHERE id = ?", (message_id, broadcast_id))

    async def stop(self, broadcast_id: int | None = None) -> list[int]:
        """Stop one running broadcast (or all); the recipients not reached yet stay pending."""
        rows = await self.db.fetchall(
            "UPDATE broadcasts SET state = 'stopped', finished_at = ? WHERE state = 'sending'"
            " AND (? IS NULL OR id = ?) RETURNING id", (time.time(), broadcast_id, broadcast_id))
        return sorted(int(r["id"]) for r in rows)

    async def finish(self, broadcast_id: int) -> bool:
        return await self.db.execute(
            "UPDATE broadcasts SET state = 'done', finished_at = ? WHERE id = ? AND state = 'sending'",
            (time.time(), broadcast_id)) == 1

    async def counts(self, broadcast_id: int) -> Counts:
        rows = await self.db.fetchall(
            "SELECT state, COUNT(*) AS n FROM broadcast_recipients WHERE broadcast_id = ? GROUP BY state",
            (broadcast_id,))
        by_state = {r["state"]: int(r["n"]) for r in rows}
        return Counts(total=sum(by_state.values()),
                      pending=by_state.get("pending", 0) + by_state.get("sending", 0),
                      **{k: by_state.get(k, 0) for k in OUTCOMES})
