"""Start-up tells systemd the truth: a wrong token, a late network, a broken database, polling
that dies for good — each is one line and the right exit code, and nothing hangs."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from neurocards import startup
from neurocards.app import Application
from neurocards.startup import EXIT_CONFIG
from neurocards.store.backup import RunLock
from tests.harness import Harness, with_source_tree


async def _run_cli(harness: Harness, *args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(harness.tmp)}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "neurocards", *args, "--config", str(harness.config_path)],
        cwd=harness.tmp, env=with_source_tree(env), capture_output=True, text=True, timeout=timeout)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("neurocards:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr + result.stdout
    return lines[0]


async def test_wrong_token_is_one_line_and_exit_78(harness: Harness) -> None:
    harness.overrides = {"telegram": {"token": "123456:WRONG-TOKEN-but-well-formed-xxxxxxxx"}}
    harness.write_config()
    result = await _run_cli(harness, "run")
    assert result.returncode == EXIT_CONFIG
    line = _one_line(result)
    assert "token was rejected" in line and "WRONG-TOKEN" not in result.stderr + result.stdout
    assert harness.tg.count("getUpdates") == 0  # never "Start polling"
    harness.tg.state.rejected.clear()  # the wrong token was the point


async def test_network_up_late_is_waited_for(harness: Harness, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(startup, "RETRY_DELAYS_S", (0.05, 0.1))
    harness.tg.fail_next("getMe", mode="drop", times=2)
    harness.tg.fail_next("getMe", status=502, description="Bad Gateway")
    with caplog.at_level("WARNING", logger="neurocards.startup"):
        await harness.start()
    retries = [r for r in caplog.records if "not reachable yet" in r.getMessage()]
    assert len(retries) == 3 and all("\n" not in r.getMessage() for r in retries)
    await harness.tg.wait_until(lambda: harness.tg.count("getUpdates") > 0)


@pytest.mark.parametrize("breakage", ["garbage", "directory"])
async def test_broken_database_is_one_line_and_no_hang(harness: Harness, breakage: str) -> None:
    harness.overrides = {"storage": {"database": "storage/broken.db"}}
    harness.write_config()
    db_path = harness.tmp / "storage" / "broken.db"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    if breakage == "garbage":
        db_path.write_bytes(b"this is not an SQLite file at all" * 200)
    else:
        db_path.mkdir()
    for args in (("run",), ("credits", "show", "5"), ("stats",)):
        result = await _run_cli(harness, *args)  # subprocess.run's timeout fails the test on a hang
        assert result.returncode == 1, (args, result.stderr)
        assert str(db_path) in _one_line(result)


async def test_failed_start_releases_what_it_opened(harness: Harness) -> None:
    """In-process: a start that fails after the database opened leaves no thread or lock behind."""
    harness.overrides = {"telegram": {"token": "123456:WRONG-TOKEN-but-well-formed-xxxxxxxx"}}
    app = Application(harness.write_config())
    with pytest.raises(startup.StartupFailed):
        await app.run_until_signal()
    assert not RunLock.is_held(harness.tmp / "storage" / "neurocards.lock")
    assert app.db._conn._connection is None  # closed: no aiosqlite thread keeps the process alive
    harness.tg.state.rejected.clear()  # the wrong token was the point


async def test_polling_that_dies_for_good_exits_non_zero(harness: Harness) -> None:
    await harness.spawn_ready()
    assert harness.process is not None
    harness.tg.fail_next("getUpdates", status=401, description="Unauthorized", times=1000)
    code = await asyncio.to_thread(harness.process.wait, 30)
    harness.process = None
    assert code == EXIT_CONFIG
    assert "rejected the bot token" in harness.log_text()


async def test_command_menu_is_published_in_russian(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [900]}}
    await harness.start()
    commands = await harness.tg.wait_until(lambda: len(harness.tg.commands) >= 2 and harness.tg.commands)
    default = next(v for k, v in commands.items() if '"default"' in k)
    names = [c["command"] for c in default]
    assert {"start", "paysupport", "terms", "support"} <= set(names)
    assert all(any("а" <= ch <= "я" for ch in c["description"].lower()) for c in default)
    admin = next(v for k, v in commands.items() if "900" in k)
    assert "admin_stats" in [c["command"] for c in admin]
