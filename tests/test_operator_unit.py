"""The systemd unit: no restart storm on a rejected token, private files, hardening that
`systemd-analyze` accepts (skipped where systemd-analyze is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from neurocards.startup import EXIT_CONFIG

UNIT = Path(__file__).resolve().parents[1] / "neurocards.service"
MAX_EXPOSURE = 2.0


def _settings() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_never_restarts_on_a_rejected_token_or_bad_config() -> None:
    unit = _settings()
    assert unit["Restart"] == ["on-failure"]
    assert {str(EXIT_CONFIG), "2"} <= set(unit["RestartPreventExitStatus"][0].split())


def test_unit_has_the_hardening() -> None:
    unit = _settings()
    assert unit["UMask"] == ["0077"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert "@system-service" in unit["SystemCallFilter"]
    for key, value in (("SystemCallArchitectures", "native"), ("ProtectClock", "true"),
                       ("ProtectKernelLogs", "true"), ("ProtectHostname", "true"), ("ProtectProc", "invisible"),
                       ("RestrictRealtime", "true"), ("NoNewPrivileges", "true"), ("ProtectSystem", "strict")):
        assert unit.get(key) == [value], key
    assert int(unit["LimitNOFILE"][0]) >= 4096


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """The unit as shipped, except ExecStart points at a binary that exists on this machine."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    text = re.sub(r"(?m)^ExecStart=\S+", "ExecStart=/bin/true", UNIT.read_text(encoding="utf-8"))
    path = tmp_path / "neurocards.service"
    path.write_text(text, encoding="utf-8")
    return path


def test_systemd_analyze_verify_accepts_the_unit(checkable_unit: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(checkable_unit)], capture_output=True, text=True,
                            timeout=30, cwd=checkable_unit.parent)
    assert result.returncode == 0 and "neurocards.service" not in result.stderr, result.stderr


def test_systemd_analyze_security_exposure_is_ok(checkable_unit: Path) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(checkable_unit)],
                            capture_output=True, text=True, timeout=30, cwd=checkable_unit.parent)
    found = re.search(r"Overall exposure level for neurocards\.service: ([\d.]+) (\w+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE and found.group(2) == "OK", found.group(0)
