"""What a user has made: delivered videos (re-sendable by file_id) and the cabinet's counters."""

from __future__ import annotations

from dataclasses import dataclass

from neurocards.store.db import Database

# A video can be re-sent only while Telegram knows its file_id; that is what "delivered" means here.
_DELIVERED = "j.user_id = ? AND j.state = 'done' AND j.video_file_id IS NOT NULL"


@dataclass(frozen=True)
class VideoItem:
    job_id: int
    product_id: int
    file_id: str
    finished_at: float
    description: str
    template: str


@dataclass(frozen=True)
class JobCounts:
    done: int
    failed: int


class HistoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def videos(self, user_id: int, *, offset: int, limit: int) -> tuple[list[VideoItem], int]:
        """A page of delivered videos, newest first, and how many there are in all."""
        total = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM jobs j WHERE {_DELIVERED}", (user_id,))
        rows = await self.db.fetchall(
            "SELECT j.id, j.product_id, j.video_file_id, COALESCE(j.finished_at, j.updated_at) AS finished_at,"
            " COALESCE(p.description, '') AS description, j.template"
            f" FROM jobs j JOIN products p ON p.id = j.product_id WHERE {_DELIVERED}"
            " ORDER BY j.id DESC LIMIT ? OFFSET ?", (user_id, limit, offset))
        items = [VideoItem(r["id"], r["product_id"], r["video_file_id"], r["finished_at"], r["description"],
                           r["template"]) for r in rows]
        return items, int(total["n"]) if total else 0

    async def video(self, user_id: int, job_id: int) -> VideoItem | None:
        """One delivered video of this user (someone else's job id finds nothing)."""
        row = await self.db.fetchone(
            "SELECT j.id, j.product_id, j.video_file_id, COALESCE(j.finished_at, j.updated_at) AS finished_at,"
            " COALESCE(p.description, '') AS description, j.template"
            f" FROM jobs j JOIN products p ON p.id = j.product_id WHERE {_DELIVERED} AND j.id = ?",
            (user_id, job_id))
        if row is None:
            return None
        return VideoItem(row["id"], row["product_id"], row["video_file_id"], row["finished_at"],
                         row["description"], row["template"])

    async def job_counts(self, user_id: int) -> JobCounts:
        row = await self.db.fetchone(
            "SELECT COALESCE(SUM(state = 'done'), 0) AS done, COALESCE(SUM(state = 'failed'), 0) AS failed"
            " FROM jobs WHERE user_id = ?", (user_id,))
        return JobCounts(int(row["done"]), int(row["failed"])) if row else JobCounts(0, 0)
