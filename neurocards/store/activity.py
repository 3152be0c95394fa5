"""The activity log behind the dashboards: one cheap insert per meaningful action."""

from __future__ import annotations

import time

from neurocards.store.db import Database

MAX_DETAIL = 200


class ActivityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def log(self, user_id: int | None, action: str, detail: str | None = None) -> None:
        await self.db.execute(
            "INSERT INTO activity (user_id, at, action, detail) VALUES (?, ?, ?, ?)",
            (user_id, time.time(), action[:64], detail[:MAX_DETAIL] if detail else None))

    async def actions(self, user_id: int) -> list[str]:
        rows = await self.db.fetchall("SELECT action FROM activity WHERE user_id = ? ORDER BY id", (user_id,))
        return [r["action"] for r in rows]
