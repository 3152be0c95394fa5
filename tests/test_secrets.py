"""The bot token, KIE keys and proxy passwords never reach the logs, even when things go wrong."""

from __future__ import annotations

from tests.harness import KIE_KEY, TOKEN, Harness, launch, videos


async def test_logs_of_a_troubled_run_hold_no_secrets(harness: Harness) -> None:
    (harness.tmp / "proxies.txt").write_text("127.0.0.1:9:proxyuser:Pr0xy-S3cret-Pass\n", encoding="utf-8")
    harness.overrides = {"network": {"proxies_file": "proxies.txt", "proxy_fallback_direct": True}}
    harness.kie.fail_next("veoGenerate", http_status=500, body=f"upstream echoed Bearer {KIE_KEY} back")
    harness.kie.fail_next("veoGenerate", code=401, msg=f"Unauthorized key {KIE_KEY}")
    harness.tg.fail_next("sendVideo", status=500, description="Internal Server Error")
    await harness.spawn_ready()
    user = harness.tg.user(7001)
    await launch(user)
    await harness.wait_jobs(lambda rows: bool(rows) and rows[0]["state"] in ("done", "failed"), timeout=30)
    harness.kill()
    log = harness.log_text()
    assert "job 1" in log  # the log is really there and speaks about the job
    for secret in (TOKEN, TOKEN.split(":")[1], KIE_KEY, "Pr0xy-S3cret-Pass"):
        assert secret not in log, f"secret leaked into the log: {secret[:6]}…"
    db_dump = "\n".join(str(tuple(r)) for r in harness.query("SELECT * FROM job_events"))
    db_dump += "\n".join(str(tuple(r)) for r in harness.query("SELECT * FROM jobs"))
    assert KIE_KEY not in db_dump and TOKEN not in db_dump
    assert len(videos(user)) <= 1


def test_sentry_events_are_scrubbed() -> None:
    from neurocards.logs import RedactSecrets

    redact = RedactSecrets([TOKEN, KIE_KEY])
    event = {"exception": {"values": [{"value": f"POST /bot{TOKEN}/sendVideo failed"}]},
             "extra": {"headers": ["Authorization: Bearer " + KIE_KEY], "n": 3}}
    clean = redact.scrub_obj(event)
    assert TOKEN not in str(clean) and KIE_KEY not in str(clean)
    assert clean["extra"]["n"] == 3 and "sendVideo failed" in clean["exception"]["values"][0]["value"]
