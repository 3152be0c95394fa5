"""One aiosqlite connection per process, WAL, serialized access.

aiosqlite runs every statement on one worker thread; a shared connection
would silently mix two coroutines' statements into one transaction, so every
use goes through an asyncio lock: `read()` for queries, `transaction()` for
writes (BEGIN IMMEDIATE, so another process such as the CLI waits on the
busy timeout instead of failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from neurocards.store.privacy import PRIVATE_DIR, PRIVATE_FILE, make_private
from neurocards.store.schema import MIGRATIONS

log = logging.getLogger("neurocards.store")

BUSY_TIMEOUT_MS = 10_000


class DatabaseUnavailable(Exception):
    """The database file cannot be used: one line naming the file and the reason."""


def _create_private(path: Path) -> None:
    # SQLite gives -wal/-shm the mode of the main file, so a private file keeps all three private.
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))


class Database:
    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path

    @classmethod
    async def open(cls, path: Path, *, create: bool = True) -> Database:
        """Open (and migrate) the database. `create=False` (the operator's commands) refuses a
        missing file instead of making an empty database at a mistyped path. Every failure is
        DatabaseUnavailable with one line, and nothing stays open behind it."""
        if path.is_dir():
            raise DatabaseUnavailable(f"database {path} is a directory, not a database file")
        if path.parent.is_dir() and not os.access(path.parent, os.R_OK | os.X_OK):
            raise DatabaseUnavailable(f"database {path}: no permission to read {path.parent}"
                                      " (run as the service user, e.g. sudo -u neurocards)")
        if not path.exists():
            if not create:
                raise DatabaseUnavailable(
                    f"no database at {path}: check storage.dir / storage.database in the config"
                    " (the bot creates it on its first `neurocards run`)")
            try:
                _create_private(path)
            except OSError as exc:
                raise DatabaseUnavailable(f"database {path} cannot be created: {exc.strerror or exc}") from None
        try:
            conn = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"database {path} cannot be opened: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            db = cls(conn, path)
            await db._migrate()
        except BaseException as exc:
            await conn.close()  # its thread would otherwise keep the process alive forever
            if isinstance(exc, sqlite3.Error):
                raise DatabaseUnavailable(f"database {path} is unusable: {exc}") from None
            raise
        for suffix in ("", "-wal", "-shm"):
            make_private(path.with_name(path.name + suffix))
        return db

    async def _migrate(self) -> None:
        async with self._lock:
            row = await (await self._conn.execute("PRAGMA user_version")).fetchone()
            version = int(row[0])
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                # executescript commits on its own; the version bump rides inside the script.
                await self._conn.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                )
                log.info("database migrated to version %d", number)

    async def close(self) -> None:
        await self._conn.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                # Inside the try: a caller cancelled while BEGIN is queued still gets its ROLLBACK
                # (aiosqlite runs both in order on its thread), so no transaction is left open.
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):  # "no transaction is active"
                    await self._conn.execute("ROLLBACK")
                raise
            else:
                await self._conn.execute("COMMIT")

    # One aiosqlite call per statement: every call is a hop to its thread and back (~0.2 ms).
    async def fetchone(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        async with self.read() as conn:
            rows = await conn.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        async with self.read() as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def execute(self, sql: str, params: tuple | dict = ()) -> int:
        """Run one write statement; return rowcount. The connection is in autocommit mode, so a
        single statement (with the triggers it fires) is its own transaction; the lock keeps it
        out of another coroutine's open transaction."""
        async with self._lock:
            cur = await self._conn.execute(sql, params)
            return cur.rowcount
