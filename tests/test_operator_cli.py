"""An operator's command line on a VPS: offline commands need no secrets, typos and bad numbers
get one clear line, and nothing is created or changed by a mistake."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from neurocards.cli import main
from tests.harness import Harness
from tests.test_cli import BASE_CONFIG, create_database, run_cli

NO_SECRETS = BASE_CONFIG.replace('token = "123456:TEST-TOKEN-abcdefghijklmnop"', "").replace(
    'api_keys = ["kie-secret-key-1"]', "")


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """A shell like `sudo -u neurocards`: the secrets live in /etc/neurocards.env, not here."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(BASE_CONFIG, encoding="utf-8")
    create_database(tmp_path / "store" / "bot.sqlite3")
    return path


@pytest.fixture
def no_secrets(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(NO_SECRETS, encoding="utf-8")
    create_database(tmp_path / "store" / "bot.sqlite3")
    return path


def test_offline_commands_need_no_token_or_kie_keys(no_secrets: Path, tmp_path: Path) -> None:
    env, cfg = _clean_env(tmp_path), str(no_secrets)
    added = run_cli("credits", "add", "777", "15", "--config", cfg, cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    shown = run_cli("credits", "show", "777", "--json", "--config", cfg, cwd=tmp_path, env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["balance"] == 15, shown.stderr
    stats = run_cli("stats", "--json", "--config", cfg, cwd=tmp_path, env=env)
    assert stats.returncode == 0 and "today" in json.loads(stats.stdout), stats.stderr
    backup = run_cli("backup", "--config", cfg, cwd=tmp_path, env=env)
    assert backup.returncode == 0 and "backup written" in backup.stdout, backup.stderr
    info = run_cli("user", "info", "777", "--json", "--config", cfg, cwd=tmp_path, env=env)
    assert info.returncode == 0 and json.loads(info.stdout)["balance"] == 15
    # the bot itself still demands them, with one line naming the key
    run = run_cli("run", "--config", cfg, cwd=tmp_path, env=env)
    assert run.returncode == 2 and "telegram.token" in run.stderr and len(run.stderr.splitlines()) == 1


def test_mistyped_database_path_is_refused_not_created(config_file: Path, tmp_path: Path) -> None:
    config_file.write_text(BASE_CONFIG.replace('database = "store/bot.sqlite3"', 'database = "stor/bot.sqlite3"'),
                           encoding="utf-8")
    for args in (("credits", "show", "5"), ("credits", "add", "5", "10"), ("stats",), ("user", "info", "5"),
                 ("user", "ban", "5")):
        result = run_cli(*args, "--config", str(config_file), cwd=tmp_path)
        assert result.returncode == 1, (args, result.stdout)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(tmp_path / "stor" / "bot.sqlite3") in lines[0], result.stderr
        assert "balance 0" not in result.stdout
    assert not (tmp_path / "stor").exists()
    as_json = run_cli("credits", "show", "5", "--json", "--config", str(config_file), cwd=tmp_path)
    assert as_json.returncode == 1 and "no database" in json.loads(as_json.stdout)["error"]


@pytest.mark.parametrize(("args", "needle"), [
    (("credits", "add", "5", "99999999999999999999"), "amount"),
    (("credits", "add", "5", "9223372036854775807"), "amount"),
    (("credits", "add", "5", "1000001"), "amount"),
    (("credits", "add", "5", "-1000001"), "amount"),
    (("credits", "add", "5", "0"), "amount"),
    (("credits", "add", "-5", "10"), "user id"),
    (("credits", "add", "99999999999999999999", "10"), "user id"),
    (("credits", "show", "0"), "user id"),
    (("user", "ban", "-3"), "user id"),
    (("user", "info", "18446744073709551616"), "user id"),
])
def test_out_of_range_ids_and_amounts_get_one_line(config_file: Path, args: tuple[str, ...], needle: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--config", str(config_file)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    conn = sqlite3.connect(config_file.parent / "store" / "bot.sqlite3")
    try:  # nothing was written for anyone
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0
    finally:
        conn.close()


def test_the_issues_literal_command_as_a_subprocess(config_file: Path, tmp_path: Path) -> None:
    result = run_cli("credits", "add", "5", "99999999999999999999", "--config", str(config_file), cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "amount" in result.stderr and "Traceback" not in result.stderr


def test_json_stays_json_for_errors(config_file: Path, tmp_path: Path) -> None:
    unknown = run_cli("user", "info", "42", "--json", "--config", str(config_file), cwd=tmp_path)
    assert unknown.returncode == 1
    assert "never used the bot" in json.loads(unknown.stdout)["error"]
    bad = run_cli("user", "info", "-42", "--json", "--config", str(config_file), cwd=tmp_path)
    assert bad.returncode == 2 and "user id" in json.loads(bad.stdout)["error"]
    broken = run_cli("stats", "--json", "--config", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert broken.returncode == 2 and "not found" in json.loads(broken.stdout)["error"]


def test_cli_files_are_private_whatever_the_umask(config_file: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        made = run_cli("backup", "--config", str(config_file), cwd=tmp_path)
    finally:
        os.umask(old)
    assert made.returncode == 0, made.stderr
    backup = Path(made.stdout.split("backup written: ")[1].strip())
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.parent.stat().st_mode) == 0o700


async def test_credit_and_ban_ahead_keep_the_first_visit(harness: Harness) -> None:
    """An admin credits (or bans) someone before their /start: no phantom user."""
    harness.overrides = {"telegram": {"admin_ids": [900]}}
    await harness.start()
    inviter = harness.tg.user(6100, "Пригласивший")
    cursor = inviter.cursor()
    await inviter.send_text("/start")
    await inviter.wait_for_message(lambda m: "Баланс" in m.text, after=cursor)
    code = harness.query("SELECT ref_code FROM users WHERE id = 6100")[0]["ref_code"]
    if code is None:  # the code is made when the inviter first opens their link
        assert harness.app is not None
        code = await harness.app.services.referrals.store.code_for(6100)
    cfg = str(harness.config_path)
    added = await asyncio.to_thread(run_cli, "credits", "add", "6101", "50", "--config", cfg, cwd=harness.tmp)
    assert added.returncode == 0, added.stderr
    stats = json.loads((await asyncio.to_thread(run_cli, "stats", "--json", "--config", cfg, cwd=harness.tmp)).stdout)
    assert stats["today"]["new_users"] == 1  # the credited id is not a "new user" yet
    shown = await asyncio.to_thread(run_cli, "credits", "show", "6101", "--config", cfg, cwd=harness.tmp)
    assert "has not started the bot yet" in shown.stdout

    seller = harness.tg.user(6101, "Продавец")
    cursor = seller.cursor()
    await seller.send_text(f"/start ref_{code}")
    await seller.wait_for_message(lambda m: "Баланс" in m.text, after=cursor)
    assert harness.ledger(6101) == [(50, "admin"), (30, "welcome")]
    row = harness.query("SELECT referrer_id, seen, username FROM users WHERE id = 6101")[0]
    assert (row["referrer_id"], row["seen"]) == (6100, 1)
    stats = json.loads((await asyncio.to_thread(run_cli, "stats", "--json", "--config", cfg, cwd=harness.tmp)).stdout)
    assert stats["today"]["new_users"] == 2


async def test_ban_ahead_is_no_phantom_user(harness: Harness) -> None:
    await harness.start()
    cfg = str(harness.config_path)
    banned = await asyncio.to_thread(run_cli, "user", "ban", "6102", "--config", cfg, cwd=harness.tmp)
    assert banned.returncode == 0 and "banned" in banned.stdout, banned.stderr
    info = json.loads((await asyncio.to_thread(run_cli, "user", "info", "6102", "--json", "--config", cfg, cwd=harness.tmp)).stdout)
    assert info["banned"] is True and info["seen"] is False
    stats = json.loads((await asyncio.to_thread(run_cli, "stats", "--json", "--config", cfg, cwd=harness.tmp)).stdout)
    assert stats["today"]["new_users"] == 0
    seller = harness.tg.user(6102)
    cursor = seller.cursor()
    await seller.send_text("/start")
    await seller.wait_for_message(lambda m: "ограничен" in m.text and "@nc_help" in m.text, after=cursor)
    assert harness.query("SELECT seen FROM users WHERE id = 6102")[0]["seen"] == 1
