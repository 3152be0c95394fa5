"""Backups taken while the bot writes restore every row; rotation; restore refusals."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from neurocards.store.backup import (
    AlreadyRunning,
    RestoreRefused,
    RunLock,
    backup_database,
    backup_database_async,
    list_backups,
    restore_database,
)
from neurocards.store.db import Database
from neurocards.store.orders import OrderStore
from neurocards.store.users import ProductStore, UserStore


async def add_customer(db: Database, user_id: int, *, jobs: int = 2) -> None:
    """One user with the welcome credits, a product and `jobs` charged jobs (ledger stays balanced)."""
    await UserStore(db).touch(user_id, username=f"u{user_id}", first_name="U", language="ru", welcome_credits=100)
    pid = await ProductStore(db).create(user_id, f"file-{user_id}", f"/photos/{user_id}.jpg")
    await OrderStore(db).create_charged(
        user_id=user_id, chat_id=user_id, request_key=f"req-{user_id}", product_ids=[pid], per_product=jobs,
        template="t", wishes="", provider="sandbox", model="m", cost_each=10)


def snapshot(path: Path) -> dict[str, set[tuple]]:
    conn = sqlite3.connect(path)
    try:
        return {
            "users": set(conn.execute("SELECT id, balance FROM users")),
            "jobs": set(conn.execute("SELECT id, user_id, request_key, state FROM jobs")),
            "ledger": set(conn.execute("SELECT id, user_id, delta, reason, job_id FROM credit_ledger")),
        }
    finally:
        conn.close()


async def make_db(path: Path, customers: int) -> Database:
    db = await Database.open(path)
    for uid in range(1, customers + 1):
        await add_customer(db, uid)
    return db


async def test_backup_while_writing_then_restore(tmp_path: Path) -> None:
    live = tmp_path / "live" / "neurocards.sqlite3"
    db = await make_db(live, 150)
    before = snapshot(live)
    stop = asyncio.Event()
    written: list[int] = []

    async def writer() -> None:
        uid = 10_000
        while not stop.is_set():
            await add_customer(db, uid)
            written.append(uid)
            uid += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.05)  # the writer is mid-stream when the backup starts
        backups = [await backup_database_async(live, tmp_path / "backups", keep=3,
                                               now=datetime(2024, 5, 1, 3, 0, i)) for i in range(3)]
        await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    assert written, "the writer never ran concurrently with the backup"
    final = snapshot(live)
    await db.close()

    restored = tmp_path / "restored" / "neurocards.sqlite3"
    assert restore_database(backups[-1], restored) is None  # nothing was there before
    got = snapshot(restored)
    for table in ("users", "jobs", "ledger"):
        assert before[table] <= got[table], table  # every row from before the backup
        assert {r[0] for r in got[table]} <= {r[0] for r in final[table]}, table  # nothing invented
    assert backups[-1].name == "neurocards-20240501-030002.sqlite3"
    # The backup stands alone: no journal mode that would need a -wal beside it.
    assert not backups[-1].with_name(backups[-1].name + "-wal").exists()

    # The restored file is a working database for the bot.
    reopened = await Database.open(restored)
    try:
        assert await UserStore(reopened).balance(1) == 80
        await add_customer(reopened, 99_999)
    finally:
        await reopened.close()


async def test_restore_keeps_the_old_database_and_drops_stale_wal(tmp_path: Path) -> None:
    live = tmp_path / "neurocards.sqlite3"
    db = await make_db(live, 2)
    backup = backup_database(live, tmp_path / "backups", now=datetime(2024, 1, 1))
    await add_customer(db, 3)  # after the backup: must be gone after restore, kept aside
    await db.close()
    live.with_name(live.name + "-shm").write_bytes(b"stale")

    kept = restore_database(backup, live, now=datetime(2024, 1, 2, 12, 0, 0))
    assert kept == tmp_path / "neurocards.sqlite3.before-restore-20240102-120000"
    assert {r[0] for r in snapshot(live)["users"]} == {1, 2}
    assert {r[0] for r in snapshot(kept)["users"]} == {1, 2, 3}
    assert not live.with_name(live.name + "-shm").exists()
    assert not live.with_name(live.name + "-wal").exists()


def test_rotation_keeps_the_newest(tmp_path: Path) -> None:
    live = tmp_path / "neurocards.sqlite3"
    sqlite3.connect(live).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);").close()
    dest = tmp_path / "backups"
    start = datetime(2024, 3, 1, 4, 0, 0)
    made = [backup_database(live, dest, keep=4, now=start + timedelta(days=i)) for i in range(9)]
    # Same second twice: a second file, never an overwrite, and it counts as the newest.
    extra = backup_database(live, dest, keep=4, now=start + timedelta(days=8))
    assert extra.name == "neurocards-20240309-040000-1.sqlite3"
    assert list_backups(dest) == [*made[6:], extra]
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError):
        backup_database(live, dest, keep=0)


def test_run_lock(tmp_path: Path) -> None:
    path = tmp_path / "storage" / "neurocards.lock"
    assert not RunLock.is_held(path)
    with RunLock(path) as lock:
        assert lock.held and RunLock.is_held(path)
        assert RunLock.holder_pid(path) is not None
        with pytest.raises(AlreadyRunning):
            RunLock(path).acquire()
    assert not RunLock.is_held(path)
    RunLock(path).acquire().release()  # reusable once released


async def test_restore_refused_while_the_bot_runs(tmp_path: Path) -> None:
    live = tmp_path / "storage" / "neurocards.sqlite3"
    db = await make_db(live, 3)
    backup = await backup_database_async(live, tmp_path / "backups")
    await db.close()
    original = live.read_bytes()
    lock_path = tmp_path / "storage" / "neurocards.lock"
    with RunLock(lock_path):
        with pytest.raises(RestoreRefused, match="running"):
            restore_database(backup, live)  # default lock path: beside the database
        with pytest.raises(RestoreRefused, match="running"):
            restore_database(backup, live, lock_check=lambda: RunLock.is_held(lock_path),
                             lock_path=tmp_path / "elsewhere.lock")
    with pytest.raises(RestoreRefused, match="running"):
        restore_database(backup, live, lock_check=lambda: True)
    assert live.read_bytes() == original
    assert not list(live.parent.glob("*before-restore*"))
    restore_database(backup, live)  # stopped: allowed


async def test_corrupt_or_foreign_backup_refused(tmp_path: Path) -> None:
    live = tmp_path / "neurocards.sqlite3"
    db = await make_db(live, 40)
    good = await backup_database_async(live, tmp_path / "backups")
    await db.close()
    original = snapshot(live)

    garbage = tmp_path / "garbage.bak"
    garbage.write_bytes(b"definitely not sqlite" * 300)
    truncated = tmp_path / "truncated.bak"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    damaged = tmp_path / "damaged.bak"  # right size, a page in the middle overwritten
    page = 4096
    mid = (len(data) // page // 2) * page
    damaged.write_bytes(data[:mid] + b"\xff" * page + data[mid + page:])
    foreign = tmp_path / "foreign.bak"
    sqlite3.connect(foreign).executescript("CREATE TABLE users (id); CREATE TABLE jobs (id);").close()

    for bad, reason in ((garbage, "not a readable|integrity"), (truncated, "not a readable|integrity"),
                        (damaged, "not a readable|integrity"), (foreign, "credit_ledger"),
                        (tmp_path / "missing.bak", "does not exist")):
        with pytest.raises(RestoreRefused, match=reason):
            restore_database(bad, live)
    assert snapshot(live) == original
    assert not [p for p in tmp_path.iterdir() if "before-restore" in p.name or "restore-tmp" in p.name]


def test_backup_of_missing_database_fails_without_creating_it(tmp_path: Path) -> None:
    from neurocards.store.backup import BackupError

    with pytest.raises(BackupError):
        backup_database(tmp_path / "nope.sqlite3", tmp_path / "backups")
    assert not (tmp_path / "nope.sqlite3").exists()
