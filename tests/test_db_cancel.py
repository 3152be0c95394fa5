"""A coroutine cancelled at any point of a transaction (a stop, a kill of its task) leaves none open."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from neurocards.store.db import Database


async def test_cancelled_transactions_never_leave_one_open(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "cancel.sqlite3")
    try:
        for spins in range(40):  # cancel at BEGIN, inside, at COMMIT: whatever the spin count hits
            async def write() -> None:
                async with db.transaction() as conn:
                    await conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                    await conn.execute("INSERT INTO t VALUES (1)")

            task = asyncio.create_task(write())
            for _ in range(spins % 8):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            async with db.transaction() as conn:  # "cannot start a transaction within a transaction"?
                await conn.execute("SELECT 1")
    finally:
        await db.close()
