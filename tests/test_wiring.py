"""A start that fails half-way releases what it had opened: the next start (or a restore) is not
refused by a lock or a database handle the failed one left behind."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from neurocards.store.backup import RunLock
from tests.harness import Harness


def files_open_under(folder: Path) -> list[str]:
    """Files of this process (the test runs the bot in-process) inside `folder`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder.resolve())):
            found.append(target)
    return found


def assert_everything_released(harness: Harness) -> None:
    storage = harness.tmp / "storage"
    assert files_open_under(storage) == []  # database, its WAL and the run lock closed
    RunLock(storage / "neurocards.lock").acquire().release()  # another process could start now


async def test_callback_port_taken_releases_database_lock_and_session(harness: Harness) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        harness.overrides = {"kie": {"callback_url": "https://bot.example.com", "callback_secret": "s" * 20,
                                     "callback_listen": f"127.0.0.1:{port}"}}
        with pytest.raises(OSError):
            await harness.start()
        assert harness.app is not None
        session = harness.app.bot.session._session
        assert session is None or session.closed
        assert_everything_released(harness)
    finally:
        taken.close()
    harness.overrides = {}
    await harness.restart()  # the same storage starts cleanly once the port is free
    assert harness.app is not None and harness.app.callbacks is None


async def test_corrupt_database_releases_the_run_lock(harness: Harness) -> None:
    broken = harness.tmp / "storage" / "broken.db"  # not *.sqlite3: the ledger check would choke on it
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"this is not an SQLite database " * 200)
    harness.overrides = {"storage": {"database": "storage/broken.db"}}
    with pytest.raises(Exception, match="not a database"):
        await harness.start()
    assert_everything_released(harness)
