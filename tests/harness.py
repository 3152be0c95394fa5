"""The real bot wired to the fake Telegram and fake KIE servers, plus helpers for scripted users."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

import neurocards
from neurocards.app import Application
from neurocards.config import Config, load_config
from tests.fakes.kie import FakeKie
from tests.fakes.telegram import FakeTelegram
from tests.fakes.telegram_state import BotMessage
from tests.fakes.telegram_user import FakeUser

TOKEN = "123456:TEST-TOKEN-abcdefghijklmnopqrstuvwxyz"
KIE_KEY = "kie-test-key-0001"


def with_source_tree(env: dict[str, str]) -> dict[str, str]:
    """`env` with the neurocards tree these tests import first on PYTHONPATH, so a bot or CLI
    subprocess runs the same code: under mutation testing that is the mutated copy, and a
    subprocess test must see the mutant too."""
    tree = str(Path(neurocards.__file__).resolve().parent.parent)
    out = {**env, "PYTHONPATH": os.pathsep.join(p for p in (tree, env.get("PYTHONPATH")) if p)}
    if "MUTANT_UNDER_TEST" in os.environ:  # a mutation run: which mutant is active, and mutmut's settings
        child = str(Path(__file__).resolve().parent / "mutation_child")
        out.update(MUTANT_UNDER_TEST=os.environ["MUTANT_UNDER_TEST"], MUTATION_TREE=tree,
                   PYTHONPATH=os.pathsep.join((child, out["PYTHONPATH"])))
    return out


def child_env() -> dict[str, str]:
    """The environment of a bot or CLI subprocess: no NEUROCARDS_* overrides from the caller's shell."""
    return with_source_tree({k: v for k, v in os.environ.items() if not k.startswith("NEUROCARDS_")})


def product_jpeg(width: int = 640, height: int = 800, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    img = Image.new("RGB", (width, height), (240, 240, 240))
    img.paste(Image.new("RGB", (width // 2, height // 2), color), (width // 4, height // 4))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def config_text(tg: FakeTelegram, kie: FakeKie, *, overrides: dict[str, dict[str, Any]] | None = None) -> str:
    sections: dict[str, dict[str, Any]] = {
        "telegram": {"token": TOKEN, "api_base": tg.base_url, "admin_ids": [], "support_username": "nc_help",
                     "polling_timeout_s": 1, "request_timeout_s": 10,
                     "user_rate_per_s": 50, "user_burst": 50, "chat_burst": 50, "chat_period_s": 1},
        "kie": {"api_keys": [KIE_KEY], "base_url": kie.base_url, "upload_base_url": kie.base_url,
                "model": "veo3_fast", "poll_interval_s": 0.05, "timeout_s": 30, "http_timeout_s": 5,
                "low_balance_alert": 0},
        "storage": {"dir": "storage", "database": "storage/neurocards.sqlite3", "retention_days": 7},
        "credits": {"welcome": 30, "per_video": 10},
        "generation": {"max_parallel": 20, "dispatch_interval_s": 0.05},
        "limits": {"videos_per_day": 0, "min_seconds_between_orders": 0, "max_jobs_in_flight": 0},
        "ops": {"listen": "127.0.0.1:0", "backup_interval_h": 0, "digest_time": ""},
        "generation.retry": {"temporary_delays_s": [0.05, 0.1, 0.2, 0.4], "rate_limit_delays_s": [0.1, 0.2, 0.4],
                             "jitter": 0.0, "delivery_delays_s": [0.05, 0.1], "queue_notice_after_s": 300},
    }
    for name, values in (overrides or {}).items():
        sections.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


@dataclass
class Harness:
    tmp: Path
    tg: FakeTelegram
    kie: FakeKie
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    app: Application | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.tmp / "config.toml"

    @property
    def db_path(self) -> Path:
        return self.tmp / "storage" / "neurocards.sqlite3"

    def write_config(self) -> Config:
        self.config_path.write_text(config_text(self.tg, self.kie, overrides=self.overrides), encoding="utf-8")
        return load_config(self.config_path, env={})

    async def start(self) -> Application:
        config = self.write_config()
        self.app = Application(config)
        await self.app.start()
        return self.app

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.stop()
            self.app = None

    async def restart(self) -> Application:
        await self.stop()
        return await self.start()

    # ---- the bot as a separate process (for SIGKILL tests) ----------------------
    def spawn(self) -> subprocess.Popen[bytes]:
        self.write_config()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "neurocards", "run", "--config", str(self.config_path)],
            cwd=self.tmp, env=child_env(), stdout=open(self.tmp / "bot.log", "ab"), stderr=subprocess.STDOUT)
        return self.process

    async def spawn_ready(self, timeout: float = 60.0) -> None:
        """Start the bot process and wait until it polls Telegram (a cold start imports a lot)."""
        polls = self.tg.count("getUpdates")
        self.spawn()
        await self.tg.wait_until(lambda: self.tg.count("getUpdates") > polls, timeout=timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def log_text(self) -> str:
        path = self.tmp / "bot.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    # ---- reading the real database ------------------------------------------------
    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.db_path, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()

    def balance(self, user_id: int) -> int:
        rows = self.query("SELECT balance FROM users WHERE id = ?", (user_id,))
        return int(rows[0]["balance"]) if rows else 0

    def jobs(self, user_id: int | None = None) -> list[sqlite3.Row]:
        if user_id is None:
            return self.query("SELECT * FROM jobs ORDER BY id")
        return self.query("SELECT * FROM jobs WHERE user_id = ? ORDER BY id", (user_id,))

    def ledger(self, user_id: int) -> list[tuple[int, str]]:
        return [(r["delta"], r["reason"]) for r in
                self.query("SELECT delta, reason FROM credit_ledger WHERE user_id = ? ORDER BY id", (user_id,))]

    async def wait_jobs(self, predicate: Callable[[list[sqlite3.Row]], bool], timeout: float = 15.0) -> list[sqlite3.Row]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rows = self.jobs()
            if predicate(rows):
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"jobs never reached the expected state: {[dict(r) for r in rows]}")
            await asyncio.sleep(0.05)


def videos(user: FakeUser) -> list[BotMessage]:
    return [m for m in user.messages if m.kind == "video"]


async def walk_to_confirm(user: FakeUser, *, description: str = "Белая керамическая кружка 350 мл",
                          template: str = "🔄 Студийный поворот", wishes: str | None = None,
                          quantity: int = 1, photo: bytes | None = None,
                          aspect: str | None = None) -> BotMessage:
    """The whole dialogue from /start to the confirmation screen, as a seller would do it."""

    async def step(action: Any, expect: Callable[[BotMessage], bool]) -> BotMessage:
        cursor = user.cursor()
        await action
        return await user.wait_for_message(expect, after=cursor)

    menu = await step(user.send_text("/start"), lambda m: "Баланс" in m.text and bool(m.buttons))
    await step(user.click(menu, "🎬 Создать видео"), lambda m: "Отправьте фото товара" in m.text)
    await step(user.send_photo(photo or product_jpeg()), lambda m: "опишите товар" in m.text)
    styles = await step(user.send_text(description), lambda m: "Выберите стиль" in m.text)
    formats = await step(user.click(styles, template), lambda m: "Формат видео" in m.text)
    wishes_msg = await step(user.click(formats, aspect or "⏭ Оставить"), lambda m: "пожелания" in m.text)
    action = user.click(wishes_msg, "⏭ Пропустить") if wishes is None else user.send_text(wishes)
    qty = await step(action, lambda m: "Сколько видео" in m.text)
    return await step(user.click(qty, f"{quantity} видео"),
                      lambda m: "Проверьте заказ" in m.text or "Не хватает" in m.text)


async def launch(user: FakeUser, **kwargs: Any) -> BotMessage:
    confirm = await walk_to_confirm(user, **kwargs)
    cursor = user.cursor()
    await user.click(confirm, "✅ Запустить")
    return await user.wait_for_message(lambda m: "Принял" in m.text, after=cursor)
