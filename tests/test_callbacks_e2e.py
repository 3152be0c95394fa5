"""KIE's callback finishes a job at once; forged or repeated callbacks change nothing."""

from __future__ import annotations

import socket

from tests.harness import Harness, launch, videos

SECRET = "cb-secret-0123456789abcdef"
HMAC_KEY = "kie-webhook-hmac-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_callback_finishes_the_job_without_waiting_for_the_slow_poll(harness: Harness) -> None:
    port = free_port()
    harness.overrides = {"kie": {"callback_url": f"http://127.0.0.1:{port}", "callback_secret": SECRET,
                                 "callback_listen": f"127.0.0.1:{port}", "callback_hmac_key": HMAC_KEY,
                                 "callback_poll_interval_s": 60}}
    harness.kie.generation_delay_s = 3600
    await harness.start()
    user = harness.tg.user(9601)
    await launch(user)
    await harness.wait_jobs(lambda rows: bool(rows) and rows[0]["state"] == "generating")
    task_id, task = next(iter(harness.kie.tasks.items()))
    url = task.callback_url
    job_id = harness.jobs(9601)[0]["id"]  # the URL names the job and its createTask attempt
    assert url == f"http://127.0.0.1:{port}/kie/callback/{SECRET}?job={job_id}&attempt=1"
    await harness.tg.wait_until(lambda: harness.kie.count("veoRecordInfo") >= 1)  # the first poll, then 60 s
    polls = harness.kie.count("veoRecordInfo")

    # Forged: a wrong secret path, or a right path without KIE's signature: nothing happens.
    assert await harness.kie.send_callback(task_id, url.replace(SECRET, "guess")) == 404
    assert await harness.kie.send_callback(task_id, url) == 401
    assert harness.kie.count("veoRecordInfo") == polls

    harness.kie.generation_delay_s = 0  # the task is done upstream; KIE calls us
    assert await harness.kie.send_callback(task_id, url, hmac_key=HMAC_KEY) == 200
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=5)  # far sooner than the 60 s poll
    await harness.wait_jobs(lambda rows: rows[0]["state"] == "done")

    # A repeated callback for a finished task is ignored.
    assert await harness.kie.send_callback(task_id, url, hmac_key=HMAC_KEY) == 200
    assert len(videos(user)) == 1 and harness.kie.count("veoGenerate") == 1
    assert harness.balance(9601) == 20
