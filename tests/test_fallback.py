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
    assert harness.balance(9001) == 90  # charged the KIE price it was ordered at, once

    # While KIE is set aside, the seller sees the simpler mode and its price before confirming.
    confirm = await walk_to_confirm(user, quantity=2)
    assert "упрощённом" in confirm.text and "8" in confirm.text
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
    assert harness.balance(9001) == 80


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
