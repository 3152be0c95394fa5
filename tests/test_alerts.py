"""Admins hear about trouble before sellers do: low KIE balance, many failures, a stalled engine."""

from __future__ import annotations

from tests.harness import Harness, launch

ADMIN = 900


async def _admin_first(harness: Harness):
    # The admin has talked to the bot before it starts, as in real life (else Telegram has no chat).
    admin = harness.tg.user(ADMIN, "Admin")
    await admin.send_text("/start")
    return admin


async def test_low_kie_balance_is_reported_once(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}, "kie": {"low_balance_alert": 500}}
    harness.kie.credits = 120.5
    admin = await _admin_first(harness)
    await harness.start()
    alert = await admin.wait_for_message(lambda m: "KIE" in m.text and "120.5" in m.text)
    assert "Пополните" in alert.text
    assert harness.app is not None
    await harness.app.balance_watch.check()  # still low: not repeated within the quiet interval
    assert sum("120.5" in m.text for m in admin.messages) == 1
    assert harness.kie.count("credit") >= 2


async def test_failure_rate_and_stalled_engine_alerts(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]},
                         "ops": {"failure_rate_alert": 0.5, "failure_rate_min_jobs": 2}}
    admin = await _admin_first(harness)
    await harness.start()
    harness.kie.fail_next("veoGenerate", code=505, msg="Feature Disabled", times=2)
    user = harness.tg.user(9701)
    await launch(user, quantity=2)
    await harness.wait_jobs(lambda rows: len(rows) == 2 and all(r["state"] == "failed" for r in rows))
    assert harness.app is not None
    await harness.app.watchdog.check()
    await admin.wait_for_message(lambda m: "не удались 2 из 2" in m.text)
    harness.app.watchdog.max_heartbeat_age_s = -1  # as if the engine loop had stopped ticking
    await harness.app.watchdog.check()
    await admin.wait_for_message(lambda m: "не отвечает" in m.text)
