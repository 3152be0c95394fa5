"""Online backups of the SQLite database, rotation, and an offline restore.

Backups use SQLite's backup API, which copies a consistent snapshot page by
page while the bot keeps writing (WAL: readers never block the writer), unlike
copying the file, which can catch a half-applied transaction or miss the WAL.

Restore replaces the database file, so it must never run under a live bot: the
bot holds `RunLock` (an exclusive flock on `storage/neurocards.lock`) for its
whole lifetime and restore refuses while anyone holds it. flock locks vanish
with the process, so a crashed bot never leaves a stale lock behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import shutil
import sqlite3
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from neurocards.store.privacy import PRIVATE_DIR, PRIVATE_FILE, make_private, match_owner

log = logging.getLogger("neurocards.backup")

LOCK_NAME = "neurocards.lock"
REQUIRED_TABLES = ("jobs", "users", "credit_ledger")
_NAME = re.compile(r"^neurocards-(\d{8}-\d{6})(?:-(\d+))?\.sqlite3$")


class BackupError(Exception):
    """The backup could not be made or did not verify; nothing was kept."""


class RestoreRefused(Exception):
    """Restore did not touch the database; the message says why."""


class AlreadyRunning(Exception):
    """Another process holds the run lock."""


class RunLock:
    """Exclusive, process-lifetime lock; the file also records the holder's PID for humans."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        match_owner(self.path, self.path.parent)  # root's restore must not lock the service out
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.holder_pid(self.path)
            raise AlreadyRunning(f"{self.path} is held by another process"
                                 + (f" (pid {pid})" if pid else "")) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        # The file stays: unlinking it would let a newcomer lock a fresh inode while an
        # old opener still holds the unlinked one, and both would think they are alone.
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def is_held(path: Path) -> bool:
        """True while some process (this one included) holds the lock at `path`."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    @staticmethod
    def holder_pid(path: Path) -> int | None:
        try:
            text = path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


# ---- backup ---------------------------------------------------------------------------------


def backup_database(db_path: Path, dest_dir: Path, keep: int = 7, *, now: datetime | None = None) -> Path:
    """Snapshot `db_path` into `dest_dir/neurocards-YYYYmmdd-HHMMSS.sqlite3`, verify it, and
    delete all but the newest `keep` backups. Safe while the bot runs."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}")
    created = not dest_dir.exists()
    dest_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if created:
        match_owner(dest_dir, db_path)
    make_private(dest_dir, PRIVATE_DIR)
    final = _free_name(dest_dir, (now or datetime.now()).strftime("%Y%m%d-%H%M%S"))
    # Hidden temp name outside the backup pattern: a crash mid-copy never looks like a backup.
    tmp = dest_dir / f".{final.name}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        # mode=rw: never create an empty database at a mistyped path.
        src = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=rw", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)  # all pages in one step: one consistent read snapshot
                # The copy inherits WAL mode; a standalone file should not spawn -wal/-shm files.
                dst.execute("PRAGMA journal_mode = DELETE")
                problems = _integrity_problems(dst)
                if problems:
                    raise BackupError(f"backup failed integrity_check: {problems[:5]}")
            finally:
                dst.close()
        finally:
            src.close()
        make_private(tmp)
        match_owner(tmp, db_path)
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync_dir(dest_dir)
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {db_path} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    removed = rotate_backups(dest_dir, keep)
    log.info("database backed up to %s (%d bytes, %d old removed)", final, final.stat().st_size, len(removed))
    return final


async def backup_database_async(db_path: Path, dest_dir: Path, keep: int = 7, *,
                                now: datetime | None = None) -> Path:
    """Same, in a worker thread so the event loop (polling, engine) keeps running."""
    return await asyncio.to_thread(backup_database, db_path, dest_dir, keep, now=now)


def list_backups(dest_dir: Path) -> list[Path]:
    """Backups in `dest_dir`, oldest first (by the timestamp in the name, not the mtime)."""
    if not dest_dir.is_dir():
        return []
    found: list[tuple[str, int, Path]] = []
    for path in dest_dir.iterdir():
        m = _NAME.match(path.name)
        if m and path.is_file():
            found.append((m.group(1), int(m.group(2) or 0), path))
    return [p for *_, p in sorted(found)]


def rotate_backups(dest_dir: Path, keep: int) -> list[Path]:
    old = list_backups(dest_dir)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def _free_name(dest_dir: Path, stamp: str) -> Path:
    # Two backups in one second (manual + scheduled) get -1, -2: never overwrite a backup.
    path, n = dest_dir / f"neurocards-{stamp}.sqlite3", 0
    while path.exists():
        n += 1
        path = dest_dir / f"neurocards-{stamp}-{n}.sqlite3"
    return path


# ---- restore --------------------------------------------------------------------------------


def restore_database(backup: Path, db_path: Path, *, lock_check: Callable[[], bool] | None = None,
                     lock_path: Path | None = None, now: datetime | None = None) -> Path | None:
    """Put `backup` in place of `db_path` while the bot is stopped.

    Refuses (RestoreRefused, nothing changed) if the bot runs or the backup is not a sound
    neurocards database. The current database is kept as `<db>.before-restore-<ts>`, whose
    path is returned (None when there was no database). `lock_path` defaults to
    `<db dir>/neurocards.lock`; it is held during the restore so the bot cannot start midway.
    """
    if lock_check is not None and lock_check():
        raise RestoreRefused("the bot is running: stop it before restoring the database")
    lock = RunLock(lock_path or db_path.parent / LOCK_NAME)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise RestoreRefused(f"the bot is running ({exc}): stop it before restoring") from None
    try:
        return _restore_locked(backup, db_path, now or datetime.now())
    finally:
        lock.release()


def _restore_locked(backup: Path, db_path: Path, now: datetime) -> Path | None:
    if not backup.is_file():
        raise RestoreRefused(f"backup {backup} does not exist")
    if db_path.exists() and backup.resolve() == db_path.resolve():
        raise RestoreRefused("the backup is the live database itself")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # Verify a private copy, so the file checked is byte for byte the file installed.
    tmp = db_path.with_name(f".{db_path.name}.restore-tmp")
    tmp.unlink(missing_ok=True)
    try:
        shutil.copyfile(backup, tmp)
        _check_restorable(tmp, backup)
        _take_owner_and_mode(tmp, db_path)
        _fsync(tmp)
        before = _set_aside(db_path, now.strftime("%Y%m%d-%H%M%S"))
        os.replace(tmp, db_path)
        _fsync_dir(db_path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    log.warning("database %s restored from %s (previous kept as %s)", db_path, backup, before)
    return before


def _take_owner_and_mode(tmp: Path, db_path: Path) -> None:
    """Owner and mode of the database being replaced (without one: of its folder, and 0600):
    an operator restoring as root must not leave the service a file it cannot write."""
    like = db_path if db_path.exists() else db_path.parent
    mode = stat.S_IMODE(db_path.stat().st_mode) if db_path.exists() else PRIVATE_FILE
    os.chmod(tmp, mode)
    match_owner(tmp, like)


def _check_restorable(path: Path, shown: Path) -> None:
    try:
        conn = sqlite3.connect(path)
        try:
            problems = _integrity_problems(conn)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            # A WAL-mode copy would look for a -wal beside it; the restored file must stand alone.
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise RestoreRefused(f"{shown} is not a readable SQLite database: {exc}") from None
    if problems:
        raise RestoreRefused(f"{shown} failed integrity_check: {problems[:5]}")
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        raise RestoreRefused(f"{shown} is not a neurocards database (missing tables: {', '.join(missing)})")


def _set_aside(db_path: Path, stamp: str) -> Path | None:
    """Move the current database away with its journals; -wal may hold committed data after a
    crash, so a non-empty one goes along (SQLite pairs `X` with `X-wal`), -shm is just an index."""
    base = db_path.with_name(f"{db_path.name}.before-restore-{stamp}")
    n = 0
    while base.exists():
        n += 1
        base = db_path.with_name(f"{db_path.name}.before-restore-{stamp}-{n}")
    moved = db_path.exists()
    if moved:
        os.replace(db_path, base)
    for suffix in ("-wal", "-journal", "-shm"):
        side = db_path.with_name(db_path.name + suffix)
        if not side.exists():
            continue
        if moved and suffix != "-shm" and side.stat().st_size > 0:
            os.replace(side, base.with_name(base.name + suffix))
        else:
            side.unlink()  # stale: would be replayed into the restored database
    return base if moved else None


# ---- helpers --------------------------------------------------------------------------------


def _integrity_problems(conn: sqlite3.Connection) -> list[str]:
    rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    return [] if rows == ["ok"] else rows


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse fsync on directories.
    with contextlib.suppress(OSError):
        _fsync(path)
