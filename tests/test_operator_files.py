"""Files holding user data are private whatever the umask; a restore run as root keeps the owner
and mode of the database it replaces; the sweep covers the sandbox's files too."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neurocards.builders import sweep_storage
from neurocards.config import load_config
from tests.harness import Harness, launch, videos, with_source_tree
from tests.test_cli import BASE_CONFIG, create_database

SERVICE_UID = 4242  # "neurocards" on the VPS: any uid other than root's


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_bot_files_are_private_whatever_the_umask(harness: Harness) -> None:
    old = os.umask(0o022)
    try:
        (harness.tmp / "storage" / "photos").mkdir(parents=True)
        leftover = harness.tmp / "storage" / "photos" / "from-an-older-version.jpg"
        leftover.write_bytes(b"x")
        os.chmod(leftover, 0o644)
        await harness.start()
        user = harness.tg.user(7100)
        await launch(user)
        await harness.tg.wait_until(lambda: len(videos(user)) == 1)
        await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    finally:
        os.umask(old)
    storage = harness.tmp / "storage"
    assert _mode(storage) == 0o700 and _mode(leftover) == 0o600
    files = [p for p in storage.rglob("*") if p.is_file()]
    folders = [p for p in storage.rglob("*") if p.is_dir()]
    assert any(p.suffix == ".jpg" and p != leftover for p in files)
    assert {p.name for p in files} >= {"neurocards.sqlite3", "neurocards.sqlite3-wal", "neurocards.sqlite3-shm"}
    exposed = [f"{p} {_mode(p):o}" for p in files + folders if _mode(p) & 0o077]
    assert not exposed, exposed


def writes_as(uid: int, db_path: Path) -> bool:
    """Whether a process of `uid` (the service) can write the database: fork, drop root, try."""
    pid = os.fork()
    if pid == 0:  # the child only touches sqlite3 and exits
        try:
            os.setgid(uid)
            os.setuid(uid)
            conn = sqlite3.connect(db_path, timeout=5)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE users SET last_seen = last_seen")
            conn.execute("COMMIT")
            conn.close()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def test_restore_as_root_keeps_owner_and_mode(service_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give files another owner")
    config = service_dir / "config.toml"
    config.write_text(BASE_CONFIG, encoding="utf-8")
    storage, db = service_dir / "store", service_dir / "store" / "bot.sqlite3"
    create_database(db)
    for path in (storage, db):
        os.chown(path, SERVICE_UID, SERVICE_UID)
    assert writes_as(SERVICE_UID, db)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(service_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "neurocards", *args, "--config", str(config)],
                              cwd=service_dir, env=with_source_tree(env), capture_output=True, text=True, timeout=60)

    made = cli("backup")
    assert made.returncode == 0, made.stderr
    backup = Path(made.stdout.split("backup written: ")[1].strip())
    assert backup.stat().st_uid == SERVICE_UID and _mode(backup) == 0o600
    assert backup.parent.stat().st_uid == SERVICE_UID and _mode(backup.parent) == 0o700

    restored = cli("restore", str(backup))  # as root, the way the README has it
    assert restored.returncode == 0, restored.stderr
    assert db.stat().st_uid == SERVICE_UID and db.stat().st_gid == SERVICE_UID and _mode(db) == 0o600
    lock = storage / "neurocards.lock"
    assert lock.stat().st_uid == SERVICE_UID  # the service can still take its run lock
    assert writes_as(SERVICE_UID, db)


def test_sweep_covers_the_sandbox(tmp_path: Path) -> None:
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(BASE_CONFIG, encoding="utf-8")
    config = load_config(cfg_path, env={})
    old_time = time.time() - (config.storage.retention_days + 1) * 86400
    sandbox = config.storage.dir / "sandbox"
    old_files = [sandbox / "results" / "task-1.mp4", sandbox / "uploads" / "photo-1.jpg",
                 sandbox / "tmp" / "task-2" / "frame.png"]
    fresh = sandbox / "results" / "task-3.mp4"
    for path in (*old_files, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
    for path in (*old_files, old_files[2].parent):
        os.utime(path, (old_time, old_time))
    assert sweep_storage(config) == 3
    assert fresh.exists() and not any(p.exists() for p in old_files)
