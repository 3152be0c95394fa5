"""The bot as a subprocess: config, spawn, /proc sampling (RSS, CPU), bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import config_text

from .fakes import BenchKie, BenchTelegram

CLK_TCK = os.sysconf("SC_CLK_TCK")
BOT_SRC = ""  # set by --bot-src


def bench_overrides(keys: list[str], *, max_parallel: int, poll_interval_s: float,
                    welcome: int, accounts: bool,
                    send_per_s: float | None = None) -> dict[str, dict[str, Any]]:
    """Production-like settings (config.toml defaults) except what the bench must change.
    ``accounts``: every key is its own KIE account (``[kie.accounts]``); otherwise all keys
    fall into the one "default" account, as with a plain ``api_keys`` list."""
    overrides: dict[str, dict[str, Any]] = {
        "telegram": {"polling_timeout_s": 30, "request_timeout_s": 60,
                     "user_rate_per_s": 3, "user_burst": 10},
        "kie": {"api_keys": keys, "model": "veo3_fast", "poll_interval_s": poll_interval_s,
                "timeout_s": 900, "http_timeout_s": 60, "low_balance_alert": 0},
        "credits": {"welcome": welcome, "per_video": 10},
        "generation": {"max_parallel": max_parallel, "dispatch_interval_s": 1.0},
        # Production schedule, except a 429 waits 10/20/40 s instead of 60/120/240 s so a
        # rate-limit mistake shows up as a slow run instead of a run that never ends.
        "generation.retry": {"temporary_delays_s": [5, 10, 20, 40],
                             "rate_limit_delays_s": [10, 20, 40], "jitter": 0.2,
                             "delivery_delays_s": [3, 10], "queue_notice_after_s": 300},
    }
    if send_per_s is not None:  # the bot's own pacing of new messages (default 30/s; 0 = off)
        overrides["telegram"]["send_per_s"] = send_per_s
    if accounts:
        overrides["kie.accounts"] = {f"acct{i}": [key] for i, key in enumerate(keys)}
    return overrides


async def poll_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Check ``condition`` every ``step_s`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / step_s) + 2):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(step_s)
    return condition()


@dataclass
class ProcSample:
    at: float
    rss_kb: int
    hwm_kb: int


@dataclass
class BotProcess:
    tmp: Path
    tg: BenchTelegram
    kie: BenchKie
    overrides: dict[str, dict[str, Any]]
    accounts: bool  # every key its own KIE account
    process: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0
    samples: list[ProcSample] = field(default_factory=list)
    _sampler: asyncio.Task[None] | None = None
    _pyspy: subprocess.Popen[bytes] | None = None
    final_hwm_kb: int = 0
    launcher: str = ""

    @property
    def config_path(self) -> Path:
        return self.tmp / "config.toml"

    @property
    def db_path(self) -> Path:
        return self.tmp / "storage" / "neurocards.sqlite3"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def write_config(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        text = config_text(self.tg, self.kie, overrides=self.overrides)
        self.config_path.write_text(text, encoding="utf-8")

    def spawn(self) -> None:
        self.write_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEUROCARDS_", "BENCH_"))}
        if BOT_SRC:  # --bot-src: run a scratch copy of the bot (PathFinder wins over the editable finder)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [BOT_SRC, env.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "-m", "neurocards"]
        self.launcher = "neurocards run"
        if os.environ.get("BENCH_PROFILE_DIR"):  # investigation aid, see README
            profile = Path(os.environ["BENCH_PROFILE_DIR"]) / f"{self.tmp.name}.prof"
            cmd[1:1] = ["-m", "cProfile", "-o", str(profile)]
        cmd += ["run", "--config", str(self.config_path)]
        with open(self.tmp / "bot.log", "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S") + f",{int(time.time() * 1000) % 1000:03d}"
            log.write(f"{stamp} BENCH spawning: {' '.join(cmd)}\n".encode())
            log.flush()
            self.spawned_at = time.monotonic()
            self.process = subprocess.Popen(cmd, cwd=self.tmp, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        self._sampler = asyncio.create_task(self._sample_loop(), name="rss-sampler")

    def profile(self, label: str, seconds: float) -> None:
        """With BENCH_PYSPY_DIR set, sample the bot with py-spy for `seconds` (investigation aid)."""
        if not os.environ.get("BENCH_PYSPY_DIR") or self.process is None:
            return
        out = Path(os.environ["BENCH_PYSPY_DIR"]) / f"{self.tmp.name}-{label}.txt"
        self._pyspy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(self.process.pid),
             "--format", "raw", "--rate", "100", "--threads",
             "--duration", str(max(1, round(seconds))), "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Until the bot's first getUpdates (the engine has started by then); returns seconds."""
        deadline = time.monotonic() + timeout_s
        while self.tg.arrivals["getUpdates"] == 0:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"bot exited with {self.process.returncode}; see {self.tmp / 'bot.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError("bot did not start polling in time")
            await asyncio.sleep(0.02)
        return time.monotonic() - self.spawned_at

    # -- /proc -----------------------------------------------------------------------
    def read_status(self) -> tuple[int, int]:
        rss = hwm = 0
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm = int(line.split()[1])
        except (OSError, ValueError):
            pass
        return rss, hwm

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        except (OSError, ValueError, IndexError):
            return 0.0

    async def _sample_loop(self) -> None:
        while self.process is not None and self.process.poll() is None:
            rss, hwm = self.read_status()
            if rss:
                self.samples.append(ProcSample(time.monotonic(), rss, hwm))
            await asyncio.sleep(0.2)

    def peak_rss_mb(self, since: float = 0.0, until: float = float("inf")) -> float:
        values = [s.rss_kb for s in self.samples if since <= s.at <= until]
        return max(values, default=0) / 1024

    # -- shutdown --------------------------------------------------------------------
    async def stop(self, timeout_s: float = 10.0) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            self.final_hwm_kb = self.read_status()[1]
            proc.send_signal(signal.SIGTERM)
            if not await poll_until(lambda: proc.poll() is not None, timeout_s):
                proc.kill()
                await poll_until(lambda: proc.poll() is not None, 10.0)
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler

    # -- the bot's database (read-only, WAL lets us read while it writes) -------------
    def job_states(self) -> dict[str, int]:
        if not self.db_path.exists():
            return {}
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
            try:
                rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return {}
        return {state: count for state, count in rows}

    def log_tail(self, lines: int = 20) -> str:
        path = self.tmp / "bot.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
