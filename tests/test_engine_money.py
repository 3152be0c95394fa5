"""The engine's money path end to end: a crash of ours, a ban mid-job, what the seller reads, what the
operator's refund metrics say."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from neurocards.metrics import Metrics
from tests.harness import Harness, launch, videos


def _metric(metrics: Metrics, name: str) -> float:
    text = metrics.exposition()[0].decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def _settled(harness: Harness, user_id: int) -> None:
    """The job ended and the engine let go of it."""
    await harness.wait_jobs(lambda rows: bool(rows) and all(r["state"] in ("done", "failed") for r in rows))
    assert harness.app is not None
    for _ in range(200):
        if not harness.app.engine.in_flight:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the engine still holds the job")


async def test_a_crash_of_ours_mid_job_refunds_and_tells_the_seller(harness: Harness) -> None:
    app = await harness.start()

    async def broken_prompt(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("a bug of ours")

    app.engine.prompts.build = broken_prompt  # type: ignore[method-assign]
    user = harness.tg.user(4101)
    await launch(user)
    message = await user.wait_for_message(lambda m: "Не удалось создать видео" in m.text)
    await _settled(harness, 4101)
    assert "Кредиты возвращены" in message.text and "Баланс: 30 кр" in message.text
    assert harness.ledger(4101) == [(30, "welcome"), (-10, "job_charge"), (10, "job_refund")]
    assert harness.jobs(4101)[0]["error_class"] == "unknown"
    assert harness.kie.count("veoGenerate") == 0
    assert _metric(app.metrics, "neurocards_refunds_total") == 1
    assert _metric(app.metrics, "neurocards_credits_refunded_total") == 10


async def test_a_job_banned_while_being_prepared_never_reaches_kie(harness: Harness) -> None:
    app = await harness.start()
    real_build = app.engine.prompts.build

    async def ban_meanwhile(*args: Any, **kwargs: Any) -> str:
        await app.engine.jobs.cancel_queued(4102, "banned by admin")  # the admin's ban lands right now
        return await real_build(*args, **kwargs)

    app.engine.prompts.build = ban_meanwhile  # type: ignore[method-assign]
    user = harness.tg.user(4102)
    await launch(user)
    await _settled(harness, 4102)
    await asyncio.sleep(0.2)  # would the engine still upload, submit or deliver?
    assert harness.kie.count("upload") == 0 and harness.kie.count("veoGenerate") == 0
    assert videos(user) == []
    job = harness.jobs(4102)[0]
    assert job["state"] == "failed" and job["error_class"] == "cancelled"
    assert harness.ledger(4102) == [(30, "welcome"), (-10, "job_charge"), (10, "job_refund")]
    assert not any("Не удалось" in m.text or "Кредиты возвращены" in m.text for m in user.messages)


async def test_a_kie_error_after_a_ban_refunds_nothing_more(harness: Harness) -> None:
    """The ban refunded the job while its upload was in flight; the upload then fails: the seller gets
    no second "credits returned", and the refund metrics count the one refund that happened, not two."""
    harness.overrides = {"kie": {"http_timeout_s": 10}}
    app = await harness.start()
    harness.kie.fail_next("upload", code=422, msg="The page does not exist or is not published", delay_s=0.5)
    user = harness.tg.user(4103)
    await launch(user)
    for _ in range(1000):  # until the upload is on its way to KIE
        if harness.kie.count("upload"):
            break
        await asyncio.sleep(0.01)
    assert await app.engine.jobs.cancel_queued(4103, "banned by admin") == [harness.jobs(4103)[0]["id"]]
    await _settled(harness, 4103)
    await asyncio.sleep(0.7)  # the upload's answer arrives and is handled
    assert app.engine.in_flight == 0
    assert harness.ledger(4103) == [(30, "welcome"), (-10, "job_charge"), (10, "job_refund")]
    assert not any("Кредиты возвращены" in m.text for m in user.messages)
    assert _metric(app.metrics, "neurocards_credits_refunded_total") == 0  # the ban is not a failed job
    assert harness.kie.count("veoGenerate") == 0


async def test_the_refund_message_shows_the_balance_after_the_refund(harness: Harness) -> None:
    app = await harness.start()
    harness.kie.fail_task("next", fail_code="400", fail_msg="public error minor upload")
    user = harness.tg.user(4104)
    await launch(user, quantity=2)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    message = await user.wait_for_message(lambda m: "Кредиты возвращены" in m.text)
    await _settled(harness, 4104)
    # 30 welcome - 2 x 10, one refunded: the seller reads 20, the number the menu shows.
    assert "Баланс: 20 кр" in message.text and harness.balance(4104) == 20
    assert _metric(app.metrics, "neurocards_refunds_total") == 1
    assert _metric(app.metrics, "neurocards_credits_refunded_total") == 10
