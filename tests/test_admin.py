"""Admins act on users from the chat and from the command line; everyone else sees nothing new."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from tests.harness import Harness, launch, videos, walk_to_confirm
from tests.test_cli import run_cli


async def cli_beside_the_bot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it while the bot works: in its own process, the bot's event loop
    free to finish its own writes meanwhile (a blocking call here would hold the bot's transaction)."""
    return await asyncio.to_thread(run_cli, *args, cwd=cwd)


ADMIN = 900


async def _start(harness: Harness, user_id: int, name: str = "Test"):
    user = harness.tg.user(user_id, name)
    cursor = user.cursor()
    await user.send_text("/start")
    await user.wait_for_message(lambda m: "Баланс" in m.text, after=cursor)
    return user


async def _command(user, text: str, expect) -> str:
    cursor = user.cursor()
    await user.send_text(text)
    return (await user.wait_for_message(expect, after=cursor)).text


async def test_only_admins_can_use_admin_commands(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}}
    await harness.start()
    stranger = await _start(harness, 6001)
    reply = await _command(stranger, "/admin_add_credits 6001 1000", lambda m: True)
    assert "Не понял" in reply
    await _command(stranger, "/admin_stats", lambda m: "Не понял" in m.text)
    assert harness.balance(6001) == 30
    assert harness.query("SELECT COUNT(*) AS n FROM admin_audit")[0]["n"] == 0


async def test_admin_adds_credits_looks_up_and_sees_stats(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}}
    await harness.start()
    admin = await _start(harness, ADMIN, "Admin")
    user = await _start(harness, 6002, "Вера")
    reply = await _command(admin, "/admin_add_credits 6002 50 компенсация", lambda m: "6002" in m.text)
    assert "+50" in reply and "80" in reply
    await user.wait_for_message(lambda m: "начислено 50" in m.text)
    rows = harness.query("SELECT delta, reason, admin_id, note FROM credit_ledger WHERE user_id = 6002 ORDER BY id")
    assert [tuple(r) for r in rows][-1] == (50, "admin", ADMIN, "компенсация")
    reply = await _command(admin, "/admin_add_credits 6002 -500", lambda m: "Нельзя" in m.text)
    assert "80" in reply and harness.balance(6002) == 80

    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    info = await _command(admin, "/admin_user_info 6002", lambda m: "Баланс" in m.text and "6002" in m.text)
    assert "70" in info and "done: 1" in info and "Вера" in info
    stats = await _command(admin, "/admin_stats", lambda m: "Сегодня" in m.text)
    assert "Видео доставлено: 1" in stats and "Списано: 10" in stats and "🔑" in stats
    await _command(admin, "/admin_user_info 424242", lambda m: "ещё не пользовался" in m.text)
    for wrong in ("/admin_add_credits", "/admin_user_info x", "/admin_ban"):
        usage = await _command(admin, wrong, lambda m: "Использование" in m.text)
        assert "<user_id>" in usage


async def test_ban_cancels_queued_jobs_with_refund_and_silences_the_user(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}, "generation": {"max_parallel": 1}}
    harness.kie.generation_delay_s = 3600
    await harness.start()
    admin = await _start(harness, ADMIN, "Admin")
    user = harness.tg.user(6003)
    await launch(user, quantity=3)  # one job runs, two wait for a slot in the table
    await harness.wait_jobs(lambda rows: sorted(r["state"] for r in rows) == ["generating", "queued", "queued"])
    reply = await _command(admin, "/admin_ban 6003", lambda m: "забанен" in m.text)
    assert "Отменено задач с возвратом: 2" in reply
    assert harness.balance(6003) == 30 - 10  # the running job stays charged, the two queued are refunded
    reply = await _command(user, "/start", lambda m: "ограничен" in m.text)
    assert "поддержку" in reply
    audit = harness.query("SELECT admin_id, action, user_id FROM admin_audit")
    assert [tuple(r) for r in audit] == [(ADMIN, "ban", 6003)]
    await _command(admin, "/admin_unban 6003", lambda m: "разбанен" in m.text)
    await _command(user, "/start", lambda m: "Баланс" in m.text)


async def test_cli_user_info_ban_and_stats(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(6004, "Глеб")
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    cfg = str(harness.config_path)
    info = await cli_beside_the_bot("user", "info", "6004", "--json", "--config", cfg, cwd=harness.tmp)
    data = json.loads(info.stdout)
    assert data["balance"] == 20 and data["jobs_by_state"] == {"done": 1} and data["first_name"] == "Глеб"
    banned = await cli_beside_the_bot("user", "ban", "6004", "--config", cfg, cwd=harness.tmp)
    assert banned.returncode == 0 and "banned" in banned.stdout
    cursor = user.cursor()
    await user.send_text("/start")  # the running bot sees the ban at once
    await user.wait_for_message(lambda m: "ограничен" in m.text, after=cursor)
    stats = json.loads((await cli_beside_the_bot("stats", "--json", "--config", cfg, cwd=harness.tmp)).stdout)
    assert stats["today"]["delivered"] == 1 and stats["week"]["credits_charged"] == 10
    audit = harness.query("SELECT admin_id, action FROM admin_audit")
    assert [tuple(r) for r in audit] == [(None, "ban")]


async def test_per_user_limits_explain_what_and_when(harness: Harness) -> None:
    harness.overrides = {"limits": {"videos_per_day": 3, "min_seconds_between_orders": 0, "max_jobs_in_flight": 0},
                         "credits": {"welcome": 100}}
    await harness.start()
    user = harness.tg.user(6005)
    await launch(user, quantity=2)
    confirm = await walk_to_confirm(user, quantity=2)
    query_id = await user.click(confirm, "✅ Запустить")
    answer = await user.wait_for_callback_answer(query_id)
    assert answer.show_alert and "Дневной лимит — 3 видео" in (answer.text or "")
    await harness.tg.wait_until(lambda: len(videos(user)) == 2)
    assert len(harness.jobs(6005)) == 2 and harness.balance(6005) == 80


async def test_order_spacing_limit(harness: Harness) -> None:
    harness.overrides = {"limits": {"videos_per_day": 0, "min_seconds_between_orders": 600, "max_jobs_in_flight": 0}}
    await harness.start()
    user = harness.tg.user(6006)
    await launch(user)
    confirm = await walk_to_confirm(user)
    answer = await user.wait_for_callback_answer(await user.click(confirm, "✅ Запустить"))
    assert "Новый заказ можно оформить через" in (answer.text or "")
    assert len(harness.jobs(6006)) == 1


async def test_flooding_user_is_throttled(harness: Harness) -> None:
    harness.overrides = {"telegram": {"user_rate_per_s": 1, "user_burst": 3}}
    await harness.start()
    user = harness.tg.user(6007)
    for _ in range(15):
        await user.send_text("привет")
    await harness.tg.wait_until(lambda: len(user.messages) >= 3)
    await harness.tg.wait_until(lambda: not harness.tg.pending_updates, timeout=10)
    assert 3 <= len(user.messages) <= 5  # the burst is answered, the flood is not


async def test_cli_credits_while_the_bot_runs(harness: Harness) -> None:
    await harness.start()
    user = await _start(harness, 6008)
    cfg = str(harness.config_path)
    added = await cli_beside_the_bot("credits", "add", "6008", "25", "--reason", "извинение", "--config", cfg, cwd=harness.tmp)
    assert added.returncode == 0, added.stderr
    await user.click(None, "💰 Баланс")
    await user.wait_for_message(lambda m: "Ваш баланс: 55" in m.text)
    shown = json.loads((await cli_beside_the_bot("credits", "show", "6008", "--json", "--config", cfg, cwd=harness.tmp)).stdout)
    assert shown["balance"] == 55 == shown["ledger_sum"]
