"""The README's systemd deployment, followed literally where a test can: the operator's commands
run as written (secrets only in the env file, none in the shell), the service user is simulated
by another uid owning storage, and restore runs as root as the README shows."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neurocards.app import Application
from neurocards.config import load_config
from tests.harness import KIE_KEY, TOKEN, Harness, config_text, with_source_tree
from tests.test_operator_files import writes_as

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "nobody"  # stands for the README's `neurocards` system user


def _deployment_block() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deployment with systemd", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line and not line.startswith("#")]


def _readme_line(prefix: str) -> str:
    """The README's command starting with `prefix` (it must exist: the test follows the README)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(re.escape(prefix) + r"[^`\n]*", readme)
    assert found, f"README no longer says {prefix!r}"
    return found.group(0).strip()


async def _run(line: str, opt: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    """`sudo -u neurocards venv/bin/neurocards ...` or `sudo venv/bin/neurocards ...` from the README,
    run as root in a shell without any NEUROCARDS_* variable, in the stand-in for /opt/neurocards."""
    words = shlex.split(line.replace("/etc/neurocards.env", str(env_file)), comments=True)
    args = words[words.index("venv/bin/neurocards") + 1:]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(opt)}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "neurocards", *args], cwd=opt,
                                   env=with_source_tree(env), capture_output=True, text=True, timeout=60)


async def test_readme_deployment_as_written(harness: Harness, service_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to simulate the service user's ownership")
    opt, uid = service_dir, pwd.getpwnam(SERVICE).pw_uid
    steps = _deployment_block()
    # 3. storage private to the service user; config without secrets; secrets in the env file
    assert "sudo install -d -m 700 -o neurocards -g neurocards storage" in steps
    storage = opt / "storage"
    storage.mkdir(mode=0o700)
    os.chown(storage, uid, uid)
    harness.overrides = {"telegram": {"token": ""}, "kie": {"api_keys": []}}
    (opt / "config.toml").write_text(config_text(harness.tg, harness.kie, overrides=harness.overrides),
                                     encoding="utf-8")
    env_file = opt / "neurocards.env"
    env_file.write_text(f"NEUROCARDS_TELEGRAM_TOKEN={TOKEN}\nNEUROCARDS_KIE_API_KEYS={KIE_KEY}\n", encoding="utf-8")
    os.chmod(env_file, 0o600)
    os.chown(env_file, uid, uid)
    unit = (ROOT / "neurocards.service").read_text(encoding="utf-8")
    (opt / "neurocards.service").write_text(
        unit.replace("User=neurocards", f"User={SERVICE}").replace("/opt/neurocards", str(opt)), encoding="utf-8")

    # 4. doctor right after filling the config: no ✗ (the database does not exist yet: a warning)
    doctor_line = next(s for s in steps if " doctor " in s)
    doctor = await _run(doctor_line, opt, env_file)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "✓ telegram token: @neurocards_test_bot" in doctor.stdout and "✗" not in doctor.stdout

    # 5. the service starts (here in-process, with what systemd's EnvironmentFile would give it)
    secrets = dict(line.split("=", 1) for line in env_file.read_text(encoding="utf-8").splitlines())
    app = Application(load_config(opt / "config.toml", env=secrets))
    await app.start()
    try:
        seller = harness.tg.user(123456789)
        cursor = seller.cursor()
        await seller.send_text("/start")
        await seller.wait_for_message(lambda m: "Баланс" in m.text, after=cursor)
    finally:
        await app.stop()
    for path in storage.rglob("*"):  # what the service would own after running as its user
        os.chown(path, uid, uid)
    db = storage / "neurocards.sqlite3"

    # the operator's commands as the service user, without the secrets in the environment
    credits = await _run(_readme_line("sudo -u neurocards venv/bin/neurocards credits show"), opt, env_file)
    assert credits.returncode == 0 and "balance 30" in credits.stdout, credits.stderr
    backup = await _run(_readme_line("sudo -u neurocards venv/bin/neurocards backup"), opt, env_file)
    assert backup.returncode == 0, backup.stderr
    made = Path(backup.stdout.split("backup written: ")[1].strip())

    # restore as root, the bot stopped: the service can still write its database afterwards
    restore_line = _readme_line("sudo venv/bin/neurocards restore").replace("FILE", str(made))
    restored = await _run(restore_line.replace("\n", " "), opt, env_file)
    assert restored.returncode == 0, restored.stderr
    assert db.stat().st_uid == uid and (db.stat().st_mode & 0o777) == 0o600
    assert writes_as(uid, db)
    shutil.rmtree(storage / "backups", ignore_errors=True)


def test_bench_readme_commands_run_from_any_clone() -> None:
    text = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    commands = [line.strip() for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
                for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands
    for command in commands:
        program = command.split()[0]
        assert not program.startswith("/"), f"bench/README.md runs {program}: exists on one machine only"
        if program.endswith("python") or "/python" in program:
            assert (ROOT / program).exists() or program == "python" or program.startswith(".venv/"), command
    assert not re.search(r"/(root|home|work|Users)/\S+", text), "bench/README.md names a path of one machine"
