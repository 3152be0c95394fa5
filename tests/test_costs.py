"""What every video really cost: each KIE task recorded (the doubled ones too), GPT tokens, Stars,
the margin per delivered video and how long the KIE balance lasts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from neurocards.jobs.alerts import Alerts, BalanceRunningOut, LowBalance
from neurocards.store.costs import CostStore
from neurocards.store.db import Database
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Harness, launch, videos
from tests.test_cli import run_cli
from tests.test_payments import buy

ADMIN = 900


@pytest.fixture
async def gpt() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _admin_says(user, text: str, expect) -> str:
    cursor = user.cursor()
    await user.send_text(text)
    return (await user.wait_for_message(expect, after=cursor)).text


async def test_stats_show_every_kie_task_paid_including_the_retried_one(harness: Harness, gpt: FakeOpenAI) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]},
                         "openai": {"api_key": "sk-test-0000000000000000000000000000", "base_url": gpt.url + "/v1"},
                         "kie": {"task_cost": {"veo3_fast": 60}, "low_balance_days": 0}}
    harness.kie.credits = 12_400
    harness.kie.credits_consumed = {"success": 55}  # KIE reports what a finished task cost; a failed one: not
    await harness.start()
    seller = harness.tg.user(9001, "Оля")
    await buy(seller, "50 кредитов")  # 50 ⭐
    harness.kie.fail_task("next", fail_code="500", fail_msg="Internal Error - Timeout")  # retried: paid twice
    await launch(seller, quantity=2)
    await harness.tg.wait_until(lambda: len(videos(seller)) == 2, timeout=15)
    await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    created = harness.kie.count("veoGenerate")
    assert created == 3

    stats = await asyncio.to_thread(run_cli, "stats", "--json", "--config", str(harness.config_path),
                                    cwd=harness.tmp)
    assert stats.returncode == 0, stats.stderr
    today = json.loads(stats.stdout)["today"]
    assert today["kie_tasks"] == created
    assert today["kie_credits"] == 60 + 55 + 55  # the failed one at the configured price
    assert today["stars_received"] == 50
    assert today["openai_tokens"] > 0 and len(gpt.requests) >= 1
    assert today["by_model"] == {"veo3_fast": {"delivered": 2, "kie_tasks": 3, "kie_credits": 170.0,
                                               "credits_charged": 20}}
    assert json.loads(stats.stdout)["week"]["kie_tasks"] == 3
    tasks = harness.query("SELECT job_id, attempt, model, key_id, credits, reported, outcome FROM provider_tasks"
                          " ORDER BY created_at")
    assert sorted((r["attempt"], r["outcome"]) for r in tasks) == [(1, "failed"), (1, "success"), (2, "success")]
    assert all(r["key_id"] and "kie-test-key" not in r["key_id"] for r in tasks)  # an id, never the key

    text = await asyncio.to_thread(run_cli, "stats", "--config", str(harness.config_path), cwd=harness.tmp)
    assert "KIE tasks 3 (170 credits)" in text.stdout
    assert "per delivered video: revenue $0.325" in text.stdout and "35% of the KIE cost" in text.stdout

    admin = harness.tg.user(ADMIN, "Owner")
    reply = await _admin_says(admin, "/admin_stats", lambda m: "Сегодня" in m.text)
    assert "Задач KIE: 3 (170 кредитов)" in reply and "получено ⭐ 50" in reply
    assert "выручка $0.33, затраты $0.43" in reply and "ушло 35%" in reply
    assert "KIE: 12 400 кредитов ≈ 72 дня при текущем расходе" in reply


async def test_openai_usage_is_recorded_per_answer(harness: Harness, gpt: FakeOpenAI) -> None:
    harness.overrides = {"openai": {"api_key": "sk-test-0000000000000000000000000000", "base_url": gpt.url + "/v1"}}
    await harness.start()
    seller = harness.tg.user(9002)
    await launch(seller)
    await harness.tg.wait_until(lambda: len(videos(seller)) == 1, timeout=15)
    rows = harness.query("SELECT model, prompt_tokens, completion_tokens FROM openai_usage")
    assert len(rows) == len(gpt.requests) == 1
    assert rows[0]["prompt_tokens"] > 0 and rows[0]["completion_tokens"] > 0


class _Sink:
    def __init__(self) -> None:
        self.sent: list[object] = []

    async def alert_admins(self, alert: object) -> None:
        self.sent.append(alert)


class _Kie:
    def __init__(self, balance: float) -> None:
        self.balance = balance

    async def get_credits(self) -> float:
        return self.balance


async def test_low_balance_alert_fires_on_days_left(tmp_path: Path) -> None:
    from neurocards.jobs.alerts import BalanceWatch

    db = await Database.open(tmp_path / "c.sqlite3")
    try:
        costs = CostStore(db, price_of=lambda backend, model: 500.0)
        for i in range(4):  # 2,000 credits spent today
            await costs.task_created(task_id=f"t{i}", job_id=None, backend="kie", model="veo3_fast", key_id="k")
        sink = _Sink()
        kie = _Kie(5_000)  # far above the absolute threshold, but 2.5 days at this spend
        watch = BalanceWatch(kie, Alerts(sink), threshold=500, min_days=3, daily_spend=costs.kie_daily_spend)
        assert await watch.check() == 5_000
        assert sink.sent == [BalanceRunningOut(5_000, 2.5)]
        kie.balance = 100
        await watch.check()
        assert LowBalance(100, 500) in sink.sent
        quiet = BalanceWatch(_Kie(7_000), Alerts(_Sink()), threshold=500, min_days=3, daily_spend=costs.kie_daily_spend)
        await quiet.check()
        assert quiet.alerts.sink.sent == []  # type: ignore[attr-defined]
    finally:
        await db.close()


async def test_a_task_recorded_twice_counts_once_and_reported_cost_wins(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "c.sqlite3")
    try:
        costs = CostStore(db, price_of=lambda backend, model: 60.0 if backend == "kie" else 0.0)
        for _ in range(2):  # e.g. resumed after a restart, or adopted from a callback
            await costs.task_created(task_id="a", job_id=None, backend="kie", model="veo3_fast", key_id="k1")
        await costs.task_created(task_id="s", job_id=None, backend="sandbox", model="sandbox", key_id=None)
        await costs.task_finished("a", success=True, credits_consumed=42.5)
        period = await costs.period(0)
        assert (period.kie_tasks, period.kie_credits) == (1, 42.5)
    finally:
        await db.close()


async def test_doctor_tells_how_many_days_the_kie_balance_lasts(harness: Harness) -> None:
    from tests.test_doctor import _by_name, _doctor

    harness.overrides = {"kie": {"low_balance_alert": 0, "low_balance_days": 3}}
    harness.write_config()
    db = await Database.open(harness.db_path)
    try:
        costs = CostStore(db, price_of=lambda backend, model: 500.0)
        for i in range(4):  # 2,000 credits spent today
            await costs.task_created(task_id=f"t{i}", job_id=None, backend="kie", model="veo3_fast", key_id="k")
    finally:
        await db.close()
    harness.kie.credits = 5_000
    result = await _doctor(harness, "--json")
    kie = next(c for name, c in _by_name(result.stdout).items() if name.startswith("kie key"))
    assert kie["status"] == "warn" and "≈ 2.5 days at the current spend" in kie["detail"]
    assert "low_balance_days" in kie["detail"]


async def test_adopted_and_late_orphan_tasks_are_on_the_bill_once(tmp_path: Path) -> None:
    """createTask's answer is lost; the job waits for the callback, gives up and pays a second task;
    then the first task's callback arrives: confirmed by the provider, it goes on the bill too."""
    from neurocards.providers.base import TaskState, TaskStatus
    from tests.engine_kit import running_kit
    from tests.test_engine_states import done, read_timeout

    async with running_kit(tmp_path, callbacks=True, overrides={"kie": {"timeout_s": 0.3}}) as kit:
        kit.engine.generation.costs = CostStore(kit.db, price_of=lambda backend, model: 60.0)
        kit.provider.submit_faults.append(("after", read_timeout()))  # t1 made, its answer lost
        [job_id] = await kit.order()
        await kit.wait(done)
        assert sorted(kit.provider.tasks) == ["t1", "t2"]
        kit.provider.finish("t1")
        status = TaskStatus(TaskState.SUCCESS, ("mem://video/t1",))
        assert not await kit.engine.on_task_callback("t1", status, (job_id, 1))  # too late to adopt
        assert not await kit.engine.on_task_callback("forged", status, (job_id, 1))  # unknown upstream
        rows = await kit.db.fetchall("SELECT task_id, job_id, attempt, credits, outcome FROM provider_tasks"
                                     " ORDER BY task_id")
        assert [(r["task_id"], r["job_id"], r["credits"], r["outcome"]) for r in rows] == [
            ("t1", job_id, 60.0, "success"), ("t2", job_id, 60.0, "success")]
        assert sorted(r["attempt"] for r in rows) == [1, 2]
