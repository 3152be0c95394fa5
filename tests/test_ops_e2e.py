"""The operator's view of a running bot: /metrics, /healthz, backups while running, restore refused."""

from __future__ import annotations

import sqlite3

import aiohttp

from tests.harness import Harness, launch, videos
from tests.test_cli import run_cli


async def test_metrics_health_and_backups_of_a_running_bot(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(9501)
    harness.kie.fail_next("veoGenerate", http_status=500)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    assert harness.app is not None and harness.app.ops is not None
    base = f"http://127.0.0.1:{harness.app.ops.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True
    assert "neurocards_jobs_delivered_total 1.0" in text
    assert 'neurocards_job_retries_total{class="temporary"} 1.0' in text
    assert "neurocards_credits_charged_total 10.0" in text
    assert 'neurocards_jobs{state="done"} 1.0' in text
    assert "neurocards_kie_key_requests_total" in text and "kie-test-key" not in text

    cfg = str(harness.config_path)
    made = run_cli("backup", "--config", cfg, cwd=harness.tmp)
    assert made.returncode == 0, made.stderr
    backup = made.stdout.split("backup written: ")[1].strip()
    conn = sqlite3.connect(backup)
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    assert conn.execute("SELECT SUM(delta) FROM credit_ledger WHERE user_id = 9501").fetchone()[0] == 20
    conn.close()
    refused = run_cli("restore", backup, "--config", cfg, cwd=harness.tmp)
    assert refused.returncode == 1 and "running" in refused.stderr

    await harness.stop()
    # The bot is gone: the polling/engine health would now fail, and restore is allowed.
    restored = run_cli("restore", backup, "--config", cfg, cwd=harness.tmp)
    assert restored.returncode == 0, restored.stderr
    assert harness.balance(9501) == 20 and len(harness.jobs(9501)) == 1


async def test_a_second_bot_on_the_same_storage_refuses_to_start(harness: Harness) -> None:
    await harness.start()
    second = run_cli("run", "--config", str(harness.config_path), cwd=harness.tmp)
    assert second.returncode == 2 and "already running" in second.stderr
