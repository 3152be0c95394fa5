"""When KIE is down new jobs go to the next provider; when it is back, to KIE again."""

from __future__ import annotations

from tests.harness import Harness, launch, videos, walk_to_confirm


async def test_kie_down_falls_over_to_sandbox_and_comes_back(harness: Harness) -> None:
    harness.overrides = {
        "generation": {"providers": ["kie", "sandbox"], "fallback_failures": 2, "fallback_cooldown_s": 600},
        "credits": {"per_provider": {"sandbox": 4}, "welcome": 100},
    }
    await harness.start()
    user = harness.tg.user(9001)
    harness.kie.fail_next("veoGenerate", http_status=500, times=100)
    await launch(user)
    # Two failures set KIE aside; the job moves to the sandbox and is still made.
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=60)
    first = videos(user)[0]
    assert "упрощённом режиме" in first.text
    jobs = await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    assert jobs[0]["provider"] == "sandbox" and harness.kie.count("veoGenerate") == 2
    # Ordered at the KIE price, made by the sandbox: the seller pays the sandbox's 4, not 10.
    assert harness.balance(9001) == 96
    assert harness.ledger(9001) == [(100, "welcome"), (-10, "job_charge"), (6, "price_adjustment")]
    assert "Стоимость: 4 кр." in first.text and "вместо 10 кр." in first.text
    assert "Баланс: 96 кр." in first.text

    # While KIE is set aside, the seller sees the simpler mode and its price before confirming.
    confirm = await walk_to_confirm(user, quantity=2)
    assert "упрощённом" in confirm.text and "8" in confirm.text and "дешевле" in confirm.text
    await user.click(confirm, "❌ Отмена")

    harness.kie._faults.clear()  # KIE is back
    assert harness.app is not None
    kie_entry = harness.app.chain.primary
    assert kie_entry.down_until > 0
    kie_entry.down_until = 0.0  # the cool-down has passed: the next job probes KIE
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 2, timeout=30)
    jobs = await harness.wait_jobs(lambda rows: len(rows) == 2 and all(r["state"] == "done" for r in rows))
    assert jobs[1]["provider"] == "kie"
    assert "упрощённом" not in videos(user)[1].text
    assert "Стоимость: 10 кр." in videos(user)[1].text and "вместо" not in videos(user)[1].text
    assert harness.balance(9001) == 86


async def test_a_chain_of_kie_models(harness: Harness) -> None:
    harness.overrides = {"generation": {"providers": ["kie", "kie:kling-2.6/image-to-video"],
                                        "fallback_failures": 1, "fallback_cooldown_s": 60}}
    await harness.start()
    user = harness.tg.user(9002)
    harness.kie.fail_next("veoGenerate", code=455, msg="Service Unavailable", times=10)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=30)
    task = list(harness.kie.tasks.values())[-1]
    assert task.model == "kling-2.6/image-to-video"
    assert "упрощённом" not in videos(user)[0].text  # another KIE model is not a "simpler" video
    assert harness.balance(9002) == 20  # same price for both models (per_provider is empty)


async def test_a_chain_of_kie_models_with_different_prices(harness: Harness) -> None:
    kling = "kie:kling-2.6/image-to-video"
    harness.overrides = {"generation": {"providers": ["kie", kling], "fallback_failures": 1,
                                        "fallback_cooldown_s": 60},
                         "credits": {"per_video": 10, "per_provider": {kling: 7}}}
    await harness.start()
    user = harness.tg.user(9003)
    harness.kie.fail_next("veoGenerate", code=455, msg="Service Unavailable", times=10)
    await launch(user, quantity=2)
    await harness.tg.wait_until(lambda: len(videos(user)) == 2, timeout=30)
    jobs = await harness.wait_jobs(lambda rows: len(rows) == 2 and all(r["state"] == "done" for r in rows))
    assert {j["provider"] for j in jobs} == {kling} and {j["price"] for j in jobs} == {7}
    assert harness.balance(9003) == 30 - 2 * 10 + 2 * 3
    assert sorted(harness.ledger(9003)) == sorted([(30, "welcome"), (-10, "job_charge"), (-10, "job_charge"),
                                                   (3, "price_adjustment"), (3, "price_adjustment")])
    assert all("Стоимость: 7 кр." in v.text for v in videos(user))

    # Ordered at the cheaper model and moved to a dearer one: never charged more than confirmed.
    harness.kie._faults.clear()
    assert harness.app is not None
    harness.app.chain.primary.down_until = 0.0
    harness.overrides["generation"]["providers"] = [kling, "kie"]
    await harness.restart()
    harness.kie.fail_next("createTask", code=455, msg="Service Unavailable", times=10)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 3, timeout=30)
    jobs = await harness.wait_jobs(lambda rows: len(rows) == 3 and all(r["state"] == "done" for r in rows))
    assert jobs[2]["provider"] == "kie" and jobs[2]["cost"] == 7 and jobs[2]["price"] is None
    assert harness.balance(9003) == 16 - 7
    assert "Стоимость: 7 кр." in videos(user)[2].text
