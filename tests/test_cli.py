"""The operator's command line: credits by hand and clear configuration errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neurocards.config import ConfigError, load_config
from neurocards.store.db import Database
from tests.harness import with_source_tree

BASE_CONFIG = """
[telegram]
token = "123456:TEST-TOKEN-abcdefghijklmnop"
api_base = "http://127.0.0.1:9"
[kie]
api_keys = ["kie-secret-key-1"]
[storage]
dir = "store"
database = "store/bot.sqlite3"
[credits]
welcome = 10
per_video = 10
"""


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neurocards", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=with_source_tree(dict(os.environ) if env is None else env))


def create_database(path: Path) -> None:
    """What the bot's first `run` does: the operator's commands never create a database."""
    async def made() -> None:
        await (await Database.open(path)).close()

    asyncio.run(made())


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(BASE_CONFIG, encoding="utf-8")
    create_database(tmp_path / "store" / "bot.sqlite3")
    return path


def test_credits_add_and_show(config_file: Path, tmp_path: Path) -> None:
    added = run_cli("credits", "add", "555", "40", "--reason", "gift", "--config", str(config_file), cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "balance 40" in added.stdout
    removed = run_cli("credits", "add", "555", "-15", "--config", str(config_file), cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    shown = run_cli("credits", "show", "555", "--json", "--config", str(config_file), cwd=tmp_path)
    data = json.loads(shown.stdout)
    assert data["user_id"] == 555 and data["balance"] == 25 and data["ledger_sum"] == 25
    assert [r["delta"] for r in data["ledger"]] == [-15, 40]
    assert data["ledger"][1]["note"] == "gift"
    # relative paths are relative to the config file, not to the working directory
    assert (tmp_path / "store" / "bot.sqlite3").exists()


def test_credits_cannot_go_negative(config_file: Path, tmp_path: Path) -> None:
    result = run_cli("credits", "add", "556", "-5", "--config", str(config_file), cwd=tmp_path)
    assert result.returncode == 1
    assert "balance is 0" in result.stderr
    shown = run_cli("credits", "show", "556", "--json", "--config", str(config_file), cwd=tmp_path)
    assert json.loads(shown.stdout)["balance"] == 0


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda s: s.replace('token = "123456:TEST-TOKEN-abcdefghijklmnop"', ""), "telegram.token"),
        (lambda s: s.replace('api_keys = ["kie-secret-key-1"]', "api_keys = []"), "kie.api_keys"),
        (lambda s: s.replace("per_video = 10", 'per_video = "ten"'), "credits.per_video"),
        (lambda s: s + "\n[generation]\nmax_parallel = 0\n", "generation.max_parallel"),
        (lambda s: s.replace("[kie]", "[kie\n"), "not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_line(config_file: Path, tmp_path: Path, edit, key: str) -> None:
    config_file.write_text(edit(BASE_CONFIG), encoding="utf-8")
    result = run_cli("run", "--config", str(config_file), cwd=tmp_path,
                     env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert result.returncode == 2 and "not found" in result.stderr


def test_secrets_from_environment(config_file: Path) -> None:
    config_file.write_text(BASE_CONFIG.replace('token = "123456:TEST-TOKEN-abcdefghijklmnop"', "")
                           .replace('api_keys = ["kie-secret-key-1"]', ""), encoding="utf-8")
    config = load_config(config_file, env={"NEUROCARDS_TELEGRAM_TOKEN": "42:ENV-TOKEN",
                                           "NEUROCARDS_KIE_API_KEYS": "a-key, b-key", "OPENAI_API_KEY": "sk-x"})
    assert config.telegram.token.get_secret_value() == "42:ENV-TOKEN"
    assert [k.get_secret_value() for k in config.kie.api_keys] == ["a-key", "b-key"]
    assert config.openai.api_key.get_secret_value() == "sk-x"
    assert not any(secret in repr(config) for secret in ("ENV-TOKEN", "a-key", "sk-x"))
    with pytest.raises(ConfigError, match="telegram.token"):
        load_config(config_file, env={})


def test_offline_commands_need_no_token_or_keys(config_file: Path) -> None:
    config_file.write_text(BASE_CONFIG.replace('token = "123456:TEST-TOKEN-abcdefghijklmnop"', "")
                           .replace('api_keys = ["kie-secret-key-1"]', ""), encoding="utf-8")
    config = load_config(config_file, env={}, online=False)
    assert config.storage.database == config_file.parent / "store" / "bot.sqlite3"
    with pytest.raises(ConfigError, match="telegram.token"):
        config.require_online()


def test_offline_commands_need_no_callback_secret(config_file: Path) -> None:
    """The secret lives in /etc/neurocards.env, which `sudo -u neurocards neurocards credits …` does not read."""
    config_file.write_text(BASE_CONFIG.replace('[kie]', '[kie]\ncallback_url = "https://bot.example.com"'),
                           encoding="utf-8")
    config = load_config(config_file, env={}, online=False)
    assert config.kie.callback_url == "https://bot.example.com"
    with pytest.raises(ConfigError, match="kie.callback_secret"):
        config.require_online()


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (lambda s: s.replace("per_video = 10", "per_vidoe = 10"), "unknown key credits.per_vidoe"),
        (lambda s: s + "\n[telegarm]\ntoken = \"1:x\"\n", "unknown key telegarm"),
        (lambda s: s + "\n[payments]\npacks = [{ id = \"s\", credits = 5, stars = 5, price = 1 }]\n",
         "unknown key payments.packs[1].price"),
        (lambda s: s + "\n[ops]\nlisten = \"9108\"\n", "ops.listen must look like"),
        (lambda s: s.replace('[kie]', '[kie]\ncallback_url = "https://bot.example.com"'),
         "kie.callback_secret must be set"),
    ],
)
def test_typos_and_broken_rules_name_the_key(config_file: Path, edit, line: str) -> None:
    config_file.write_text(edit(BASE_CONFIG), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config_file, env={})
    assert line in str(info.value) and "\n" not in str(info.value)


def test_shipped_config_is_complete(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "config.toml"
    text = shipped.read_text(encoding="utf-8")
    config = load_config(shipped, env={"NEUROCARDS_TELEGRAM_TOKEN": "1:x", "NEUROCARDS_KIE_API_KEYS": "k"})
    assert config.kie.model and config.generation.max_parallel > 0
    for key in ("token", "api_base", "admin_ids", "support_username", "api_keys", "base_url", "upload_base_url",
                "model", "poll_interval_s", "timeout_s", "api_key", "dir", "database", "retention_days",
                "welcome", "per_video", "max_parallel"):
        assert f"\n{key} =" in text, key
