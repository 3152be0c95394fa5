"""Broadcast beside video jobs: does a big broadcast delay sellers' videos?

    .venv/bin/python bench/broadcast.py                       # 10,000 recipients, 100 videos
    .venv/bin/python bench/broadcast.py --recipients 2000 --jobs 40 --window 40

Runs the real bot process (`python -m neurocards run`) against the fake Telegram and KIE servers
twice, in fresh directories: once with only the video jobs (baseline), once with the jobs launched
while a broadcast to `--recipients` sellers is going. Per video: "ready → delivered" = from the
moment the fake KIE finishes the task to the bot's `finished_at` after sendVideo (includes the
poll wait, the download and the paced send); "sending → delivered" = from the job entering its
sending step to `finished_at` (the Telegram part alone). Broadcast throughput = broadcast messages
accepted by the fake Telegram per second over the measured window. Production pacing
(telegram.send_per_s = 30, broadcast.per_s from config.toml unless --per-s).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.kie import FakeKie  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402
from tests.harness import TOKEN, Harness, walk_to_confirm  # noqa: E402

ADMIN = 900
TEXT = "📣 Новые стили видео уже в боте"
GENERATION_S = 3.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def seed_recipients(db_path: Path, n: int) -> list[int]:
    ids = list(range(1_000_000, 1_000_000 + n))
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        now = time.time()
        conn.executemany("INSERT INTO users (id, first_seen, last_seen) VALUES (?, ?, ?)",
                         [(uid, now, now) for uid in ids])
        conn.commit()
    finally:
        conn.close()
    return ids


async def say(user: Any, text: str, expect: Any, timeout: float = 60) -> Any:
    cursor = user.cursor()
    await user.send_text(text)
    return await user.wait_for_message(expect, after=cursor, timeout=timeout)


async def phase(args: argparse.Namespace, broadcast: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="neurocards-bench-broadcast-"))
    tg, kie = FakeTelegram(token=TOKEN), FakeKie()
    await tg.start()
    await kie.start()
    kie.generation_delay_s = GENERATION_S
    h = Harness(tmp, tg, kie)
    h.overrides = {
        "telegram": {"admin_ids": [ADMIN], "send_per_s": 30, "chat_burst": 3, "chat_period_s": 3,
                     "user_rate_per_s": 3, "user_burst": 10, "polling_timeout_s": 30},
        "kie": {"poll_interval_s": 1.0, "timeout_s": 600},
        "credits": {"welcome": 1000, "per_video": 10},
        "generation": {"max_parallel": 500, "dispatch_interval_s": 0.2},
        "broadcast": {"per_s": args.per_s, "progress_every_s": 5},
    }
    offset = time.time() - time.monotonic()  # the fakes stamp with the monotonic clock
    result: dict[str, Any] = {"broadcast": broadcast}
    try:
        await h.spawn_ready()
        admin = tg.user(ADMIN, "Owner")
        await say(admin, "/start", lambda m: "Баланс" in m.text)
        if broadcast:
            for uid in seed_recipients(h.db_path, args.recipients):
                tg.user(uid)._chat.started = True
            await say(admin, "/admin_broadcast", lambda m: "Пришлите сообщение" in m.text)
            control = await say(admin, TEXT, lambda m: "Так сообщение увидят" in m.text)
            await admin.click(control, "✅ Отправить")
            await tg.wait_until(lambda: sum(c.params.get("text") == TEXT for c in tg.calls_of("sendMessage")) >= 50,
                                timeout=60)
        sellers = [tg.user(500 + i, f"Seller {i}") for i in range(args.jobs // 5)]
        window_start = time.monotonic()
        confirms = await asyncio.gather(*(walk_to_confirm(s, quantity=5) for s in sellers))
        await asyncio.gather(*(s.click(c, "✅ Запустить") for s, c in zip(sellers, confirms, strict=True)))
        done = await _wait_done(h, len(sellers) * 5, timeout=args.window + 120)
        window_end = time.monotonic()
        sent = [c for c in tg.calls_of("sendMessage")
                if c.params.get("text") == TEXT and c.status == 200 and window_start <= c.at <= window_end]
        result["broadcast_per_s"] = len(sent) / (window_end - window_start) if broadcast else None
        if broadcast:
            rows = h.query("SELECT state, COUNT(*) AS n FROM broadcast_recipients GROUP BY state")
            result["recipients"] = {r["state"]: r["n"] for r in rows}
            await say(admin, "/admin_broadcast_stop", lambda m: "Остановлена" in m.text)
        ready_to_delivered, sending_to_delivered = [], []
        for job in done:
            task = kie.tasks.get(job["task_id"])
            if task is not None:
                ready_to_delivered.append(job["finished_at"] - (task.created_at + offset + GENERATION_S))
            sending_to_delivered.append(job["finished_at"] - job["sending_at"])
        result.update(videos=len(done), window_s=window_end - window_start,
                      ready_p50=percentile(ready_to_delivered, 50), ready_p99=percentile(ready_to_delivered, 99),
                      send_p50=percentile(sending_to_delivered, 50), send_p99=percentile(sending_to_delivered, 99))
    finally:
        if h.process is not None:
            h.process.terminate()
            try:
                h.process.wait(timeout=15)
            except Exception:
                h.process.kill()
        await kie.stop()
        await tg.stop()
    return result


async def _wait_done(h: Harness, n: int, timeout: float) -> list[sqlite3.Row]:
    deadline = time.monotonic() + timeout
    while True:
        rows = h.query(
            "SELECT j.id, j.task_id, j.finished_at, (SELECT MAX(at) FROM job_events e WHERE e.job_id = j.id"
            " AND e.state = 'sending') AS sending_at FROM jobs j WHERE j.state = 'done'")
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.5)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipients", type=int, default=10_000)
    p.add_argument("--jobs", type=int, default=100, help="videos (5 per seller)")
    p.add_argument("--per-s", type=float, default=20.0, help="broadcast.per_s (config.toml default 20)")
    p.add_argument("--window", type=float, default=60.0, help="longest wait for the videos beyond 120 s")
    args = p.parse_args(argv)
    results = [asyncio.run(phase(args, broadcast=False)), asyncio.run(phase(args, broadcast=True))]
    print("| run | videos | ready→delivered p50 / p99 | sending→delivered p50 / p99 | broadcast msgs/s |")
    print("|---|---|---|---|---|")
    for r in results:
        title = f"with a {args.recipients:,}-recipient broadcast" if r["broadcast"] else "videos only"
        rate = f"{r['broadcast_per_s']:.1f}" if r["broadcast_per_s"] is not None else "—"
        print(f"| {title} | {r['videos']} | {r['ready_p50']:.2f} / {r['ready_p99']:.2f} s |"
              f" {r['send_p50'] * 1000:.0f} / {r['send_p99'] * 1000:.0f} ms | {rate} |")
    base, load = results
    print(f"\nthe broadcast added {load['ready_p99'] - base['ready_p99']:+.2f} s to the video p99 (ready→delivered),"
          f" {(load['send_p99'] - base['send_p99']) * 1000:+.0f} ms to the sending step p99;"
          f" recipients when measured: {load.get('recipients')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
