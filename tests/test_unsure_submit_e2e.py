"""createTask that KIE executes but answers after our HTTP timeout, over real HTTP: with callbacks the
task is found again and paid once; without, the second task is counted, never silent."""

from __future__ import annotations

from tests.chaos import free_port
from tests.harness import Harness, launch, videos

SECRET = "unsure-secret-0123456789"


def _metric(harness: Harness, name: str, **labels: str) -> float:
    assert harness.app is not None
    return harness.app.metrics.registry.get_sample_value(name, labels or None) or 0.0


async def test_a_late_create_answer_with_callbacks_is_adopted_and_paid_once(harness: Harness) -> None:
    port = free_port()
    harness.overrides = {"kie": {"http_timeout_s": 0.3, "callback_url": f"http://127.0.0.1:{port}",
                                 "callback_secret": SECRET, "callback_listen": f"127.0.0.1:{port}",
                                 "callback_poll_interval_s": 60}}
    harness.kie.generation_delay_s = 0.5
    harness.kie.auto_callbacks = True
    harness.kie.answer_delay_s["veoGenerate"] = 1.0  # the task exists; the answer comes too late
    await harness.start()
    user = harness.tg.user(9701)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=15)
    await harness.wait_jobs(lambda rows: rows[0]["state"] == "done")
    assert len(harness.kie.tasks) == 1 and harness.kie.count("veoGenerate") == 1
    assert _metric(harness, "neurocards_kie_tasks_adopted_total") == 1
    assert harness.jobs(9701)[0]["task_id"] == next(iter(harness.kie.tasks))
    assert harness.balance(9701) == 20


async def test_a_late_create_answer_without_callbacks_is_a_counted_second_task(harness: Harness) -> None:
    harness.overrides = {"kie": {"http_timeout_s": 0.3}}
    harness.kie.answer_delay_s["veoGenerate"] = 1.0
    await harness.start()
    user = harness.tg.user(9702)
    harness.kie.answer_delay_s["veoGenerate"] = 1.0
    await launch(user)
    # The first createTask is at KIE (its answer already held back), not only on its way there.
    await harness.wait_jobs(lambda rows: bool(rows) and rows[0]["submit_attempt"] >= 1 and bool(harness.kie.tasks))
    harness.kie.answer_delay_s.clear()  # KIE answers in time again
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=15)
    await harness.wait_jobs(lambda rows: rows[0]["state"] == "done")
    assert len(harness.kie.tasks) == 2  # the price of no callbacks, and it is on record:
    assert _metric(harness, "neurocards_kie_tasks_orphaned_total", reason="callbacks_off") == 1
    assert harness.balance(9702) == 20


async def test_kie_generation_failed_501_refunds_without_a_new_task(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(9703)
    harness.kie.fail_task("next", fail_code="501", fail_msg="Generation Failed")
    await launch(user)
    message = await user.wait_for_message(lambda m: "Нейросеть не смогла" in m.text)
    await harness.wait_jobs(lambda rows: rows[0]["state"] == "failed")
    assert "Кредиты возвращены" in message.text
    assert harness.kie.count("veoGenerate") == 1 and harness.balance(9703) == 30
