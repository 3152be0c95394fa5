"""Chaos run: the real bot process SIGKILLed at random moments while KIE and Telegram are slow.

Used by tests/test_chaos.py (a few kills, in the suite) and bench/chaos.py (20 kills, the figures
in bench/README.md). What it counts is what costs money or trust: KIE tasks created (each one is
paid) and videos that reached the chat, per job.
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from tests.fakes.telegram import FakeUser
from tests.harness import Harness, launch

TERMINAL = ("done", "failed")


@dataclass
class ChaosResult:
    jobs: int
    done: int
    failed: int
    kills: int
    kie_tasks: int
    videos: int
    max_tasks_per_job: int
    max_videos_per_job: int
    orphan_tasks: int  # tasks created beyond one per job

    @property
    def tasks_per_delivered_video(self) -> float:
        return self.kie_tasks / self.done if self.done else float("inf")

    @property
    def videos_per_done_job(self) -> float:
        return self.videos / self.done if self.done else float("inf")

    def line(self) -> str:
        return (f"jobs {self.jobs} (done {self.done}, failed {self.failed}), kills {self.kills}: "
                f"KIE tasks {self.kie_tasks} = {self.tasks_per_delivered_video:.3f} per delivered video "
                f"(max {self.max_tasks_per_job} per job), videos {self.videos} = "
                f"{self.videos_per_done_job:.3f} per done job (max {self.max_videos_per_job} per job)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def configure(harness: Harness, *, callbacks: bool, latency_s: float) -> None:
    port = free_port()
    kie: dict[str, object] = {"timeout_s": 30, "poll_interval_s": 0.2, "http_timeout_s": 5}
    if callbacks:
        kie.update(callback_url=f"http://127.0.0.1:{port}", callback_secret="chaos-secret-0123456789",
                   callback_listen=f"127.0.0.1:{port}", callback_poll_interval_s=2)
    harness.overrides = {"kie": kie, "credits": {"welcome": 100},
                         "generation": {"max_parallel": 50, "dispatch_interval_s": 0.05}}
    harness.kie.generation_delay_s = 1.0
    harness.kie.auto_callbacks = callbacks
    for endpoint in ("createTask", "veoGenerate"):  # KIE creates the task, answers latency_s later
        harness.kie.answer_delay_s[endpoint] = latency_s
    # Telegram posts the video, answers latency_s later.
    harness.tg.fail_next("sendVideo", mode="delay", delay=latency_s, process=True, times=10**9)


async def run_chaos(harness: Harness, *, sellers: int, videos_each: int, kills: int, callbacks: bool,
                    latency_s: float = 0.4, seed: int = 12, timeout: float = 240.0) -> ChaosResult:
    rng = random.Random(seed)
    configure(harness, callbacks=callbacks, latency_s=latency_s)
    await harness.spawn_ready()
    users = [harness.tg.user(8100 + n) for n in range(sellers)]
    await asyncio.gather(*(launch(u, quantity=videos_each) for u in users))
    done_kills = 0
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.2, 1.6))
        if all(r["state"] in TERMINAL for r in harness.jobs()):
            break
        harness.kill()
        done_kills += 1
        await harness.spawn_ready()
    rows = await harness.wait_jobs(lambda rs: all(r["state"] in TERMINAL for r in rs), timeout)
    await asyncio.sleep(0.5)  # a late duplicate (video or task) would show up now
    return measure(harness, rows, done_kills, users)


def measure(harness: Harness, rows: list, kills: int, users: list[FakeUser]) -> ChaosResult:
    videos_by_job: Counter[int] = Counter()
    for user in users:
        for message in user.messages:
            if message.kind == "video":
                name = (message.raw.get("video") or {}).get("file_name", "")
                videos_by_job[int(name.removeprefix("neurocards_").removesuffix(".mp4") or 0)] += 1
    tasks_by_job: Counter[int] = Counter()
    for task in harness.kie.tasks.values():
        job = parse_qs(urlsplit(task.callback_url or "").query).get("job")
        tasks_by_job[int(job[0]) if job else 0] += 1
    # Without callbacks a task does not name its job: each createTask attempt is at most one task.
    max_tasks = max(tasks_by_job[r["id"]] for r in rows) if 0 not in tasks_by_job else \
        max(r["submit_attempt"] for r in rows)
    done = sum(r["state"] == "done" for r in rows)
    return ChaosResult(
        jobs=len(rows), done=done, failed=len(rows) - done, kills=kills, kie_tasks=len(harness.kie.tasks),
        videos=sum(videos_by_job.values()), max_tasks_per_job=max_tasks,
        max_videos_per_job=max(videos_by_job.values(), default=0),
        orphan_tasks=len(harness.kie.tasks) - sum(1 for r in rows if r["task_id"]))
