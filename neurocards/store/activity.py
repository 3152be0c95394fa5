"""The activity log behind the dashboards, written in batches.

An insert per update would cost a write transaction on the hot path of every button press; rows are
buffered and written together at most every `flush_delay_s` (and when the bot stops). A crash loses
at most that much analytics, never anything that touches credits.
"""

from __future__ import annotations

import asyncio
import logging
import time

from neurocards.store.db import Database

MAX_DETAIL = 200
MAX_BUFFERED = 10_000  # a stuck database must not grow memory without bound

log = logging.getLogger("neurocards.activity")


class ActivityStore:
    def __init__(self, db: Database, flush_delay_s: float = 0.5) -> None:
        self.db = db
        self.flush_delay_s = flush_delay_s
        self._buffer: list[tuple[int | None, float, str, str | None]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def log(self, user_id: int | None, action: str, detail: str | None = None) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            del self._buffer[: MAX_BUFFERED // 10]
            log.warning("activity buffer full; oldest rows dropped")
        self._buffer.append((user_id, time.time(), action[:64], detail[:MAX_DETAIL] if detail else None))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_delay_s)
        try:
            await self.flush()
        except Exception as exc:  # analytics must never break the bot
            log.warning("activity flush failed: %s", type(exc).__name__)

    async def flush(self) -> int:
        rows, self._buffer = self._buffer, []
        if rows:
            async with self.db.transaction() as conn:
                await conn.executemany("INSERT INTO activity (user_id, at, action, detail) VALUES (?, ?, ?, ?)",
                                       rows)
        return len(rows)

    async def actions(self, user_id: int) -> list[str]:
        await self.flush()
        rows = await self.db.fetchall("SELECT action FROM activity WHERE user_id = ? ORDER BY id", (user_id,))
        return [r["action"] for r in rows]
