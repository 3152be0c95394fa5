"""`neurocards doctor`: one line per check with ✓/✗ and the fix, `--json` for monitoring."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from neurocards.store.db import Database
from tests.fakes.proxy import FakeHttpConnectProxy, FakeSocks5Proxy
from tests.harness import KIE_KEY, TOKEN, Harness, config_text, with_source_tree

NOBODY = 65534


async def _doctor(harness: Harness, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(harness.tmp)}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "neurocards", "doctor", "--config", str(harness.config_path), *args],
        cwd=harness.tmp, env=with_source_tree({**base, **(env or {})}), capture_output=True, text=True, timeout=60)


async def create_database(path: Path) -> None:
    await (await Database.open(path)).close()


def _by_name(stdout: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


async def test_doctor_checks_token_kie_balance_database_and_permissions(harness: Harness) -> None:
    harness.overrides = {"kie": {"low_balance_alert": 500}}
    harness.write_config()
    os.chmod(harness.config_path, 0o640)  # it holds the token: not for every local user
    await create_database(harness.db_path)
    result = await _doctor(harness, "--json")
    checks = _by_name(result.stdout)
    assert checks["telegram token"]["status"] == "ok" and "@neurocards_test_bot" in checks["telegram token"]["detail"]
    kie = checks[f"kie key …{KIE_KEY[-4:]}"]
    assert kie["status"] == "warn" and "low" in kie["detail"] and "100" in kie["detail"]
    assert checks["database"]["status"] == "ok" and "integrity ok" in checks["database"]["detail"]
    assert checks["file permissions"]["status"] == "ok"
    assert checks["storage writable"]["status"] == "ok"
    assert result.returncode == 0, result.stdout
    assert TOKEN not in result.stdout and KIE_KEY not in result.stdout

    human = await _doctor(harness)
    lines = human.stdout.strip().splitlines()
    assert lines and all(line[0] in "✓✗!–" for line in lines), human.stdout
    assert any(line.startswith("! kie key") and "→ top up" in line for line in lines)


async def test_doctor_names_each_mistake_with_its_fix(harness: Harness) -> None:
    harness.overrides = {"telegram": {"token": "123456:WRONG-TOKEN-but-well-formed-xxxxxxxx"}}
    harness.write_config()
    os.chmod(harness.config_path, 0o644)  # the token in a file every local user can read
    await create_database(harness.db_path)
    os.chmod(harness.db_path, 0o644)
    harness.kie.credits = 1e6
    result = await _doctor(harness, "--json")
    harness.tg.state.rejected.clear()  # the wrong token is the point
    assert result.returncode == 1
    checks = _by_name(result.stdout)
    assert checks["telegram token"]["status"] == "fail" and "BotFather" in checks["telegram token"]["fix"]
    assert checks["file permissions"]["status"] == "fail" and "chmod" in checks["file permissions"]["fix"]
    assert checks[f"kie key …{KIE_KEY[-4:]}"]["status"] == "ok"
    assert checks["config file permissions"]["status"] == "fail"  # world-readable with a token in it
    harness.tg.state.rejected.clear()  # the wrong token was the point


async def test_doctor_sees_a_corrupt_database_and_the_unit_user(harness: Harness, tmp_path: Path) -> None:
    harness.write_config()
    storage = harness.tmp / "storage"
    storage.mkdir(mode=0o700)
    harness.db_path.write_bytes(b"garbage, not SQLite" * 100)
    unit = tmp_path / "neurocards.service"
    unit.write_text(f"[Service]\nUser=nobody\nProtectSystem=strict\nReadWritePaths={storage}\n", encoding="utf-8")
    result = await _doctor(harness, "--json", "--offline", "--unit", str(unit))
    checks = _by_name(result.stdout)
    assert checks["database"]["status"] == "fail" and "restore" in checks["database"]["fix"]
    assert checks["systemd unit"]["status"] == "fail" and "chown" in checks["systemd unit"]["fix"]
    assert "telegram token" not in checks and checks["network checks"]["status"] == "skip"
    os.chown(storage, NOBODY, NOBODY)
    harness.db_path.unlink()
    again = _by_name((await _doctor(harness, "--json", "--offline", "--unit", str(unit))).stdout)
    assert again["systemd unit"]["status"] == "ok"


async def test_doctor_reads_the_secrets_file_and_refuses_a_broken_config(harness: Harness) -> None:
    harness.overrides = {"telegram": {"token": ""}, "kie": {"api_keys": []}}
    harness.config_path.write_text(config_text(harness.tg, harness.kie, overrides=harness.overrides),
                                   encoding="utf-8")  # no secrets in it: they live in the env file
    await create_database(harness.db_path)
    env_file = harness.tmp / "neurocards.env"
    env_file.write_text(f"# secrets\nNEUROCARDS_TELEGRAM_TOKEN={TOKEN}\nNEUROCARDS_KIE_API_KEYS=\"{KIE_KEY}\"\n",
                        encoding="utf-8")
    without = _by_name((await _doctor(harness, "--json", "--offline")).stdout)
    assert without["config telegram.token"]["status"] == "fail"
    with_file = _by_name((await _doctor(harness, "--json", "--env-file", str(env_file))).stdout)
    assert with_file["telegram token"]["status"] == "ok" and with_file["config kie.api_keys"]["status"] == "ok"
    harness.config_path.write_text("[telegram\n", encoding="utf-8")
    broken = await _doctor(harness, "--json")
    assert broken.returncode == 1
    assert _by_name(broken.stdout)["config"]["status"] == "fail"


async def test_doctor_tries_every_proxy_and_the_callback_url(harness: Harness) -> None:
    good = FakeSocks5Proxy(username="u1", password="s3cr3t-proxy-pass")
    wrong = FakeHttpConnectProxy(username="u2", password="right-pass")
    for proxy in (good, wrong):
        await proxy.start()
    try:
        bad_url = wrong.url.replace("right-pass", "wrong-pass")
        (harness.tmp / "proxies.txt").write_text(f"{good.url}\n{bad_url}\n", encoding="utf-8")
        harness.overrides = {"network": {"proxies_file": "proxies.txt"},
                             "kie": {"callback_url": f"{harness.kie.base_url}/kie-callback",
                                     "callback_secret": "x" * 20}}
        harness.write_config()
        os.chmod(harness.config_path, 0o600)
        await create_database(harness.db_path)
        result = await _doctor(harness, "--json")
        checks = _by_name(result.stdout)
        assert checks[f"proxy 127.0.0.1:{good.port}"]["status"] == "ok"
        refused = checks[f"proxy 127.0.0.1:{wrong.port}"]
        assert refused["status"] == "fail" and "proxies.txt" in refused["fix"]
        assert checks["kie callback url"]["status"] == "ok"
        assert "s3cr3t-proxy-pass" not in result.stdout and "wrong-pass" not in result.stdout
        assert result.returncode == 1
    finally:
        for proxy in (good, wrong):
            await proxy.switch_off()
