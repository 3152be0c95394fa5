"""The benchmark scenarios. Each one starts its own fakes and its own bot process in a fresh
directory, and every wait in it is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import sqlite3
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurocards.bot.keyboards import MenuCb
from neurocards.providers.kie import key_id_for
from neurocards.store.db import Database
from tests.fakes.telegram import FakeUser
from tests.fakes.telegram_state import BotMessage, CallbackRecord
from tests.harness import TOKEN, product_jpeg

from .botproc import BotProcess, bench_overrides, poll_until
from .fakes import BenchKie, BenchTelegram

PHOTO = product_jpeg()
STEP_TIMEOUT_S = 60.0
BALANCE_BUTTON = "💰 Баланс"
MENU_BUTTON = "🏠 Меню"
PACER_SHARE = 19 / 20  # the bot paces createTask at 19 per 10 s (one slot of head-room)


@dataclass
class Settings:
    keys: int = 32
    throughput_users: int = 200
    videos_per_user: int = 5
    hold_users: int = 200
    hold_delay_s: float = 60.0
    poll_interval_s: float = 10.0
    poll_window_s: float = 10.0
    latency_rate: float = 200.0
    latency_s: float = 15.0
    resume_jobs: int = 1000
    single_account_users: int = 8  # 0 = skip the stock-launcher throughput check
    order_sellers: int = 50  # sellers sending one 10-photo album each (bench/orders.py)
    order_delay_s: float = 20.0  # generation delay of the order scenarios
    max_parallel: int = 1200
    enforce_kie_limits: bool = True
    workdir: Path = Path("/tmp")


def key_list(n: int) -> list[str]:
    return [f"kie-bench-key-{i:04d}" for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class LoopLag:
    """How late the bench's own event loop wakes up: the fakes' overhead shows here."""

    def __init__(self, tick_s: float = 0.01) -> None:
        self.tick_s = tick_s
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            self.samples.append((now, now - before - self.tick_s))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def p99_ms(self, since: float, until: float) -> float:
        return percentile([lag for at, lag in self.samples if since <= at <= until], 99) * 1000


class CpuWindow:
    """CPU use of the bot process and of this (fakes') process over a window, in % of one core."""

    def __init__(self, bot: BotProcess) -> None:
        self.bot = bot
        self.wall = time.monotonic()
        self.bot_cpu = bot.cpu_seconds()
        self.self_cpu = _self_cpu()

    def result(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.wall, 1e-9)
        return {"bot_cpu_pct": 100 * (self.bot.cpu_seconds() - self.bot_cpu) / wall,
                "bot_cpu_s": self.bot.cpu_seconds() - self.bot_cpu,
                "fakes_cpu_pct": 100 * (_self_cpu() - self.self_cpu) / wall}


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class World:
    tg: BenchTelegram
    kie: BenchKie
    bot: BotProcess
    lag: LoopLag
    notes: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def world(settings: Settings, name: str, *, accounts: bool, welcome: int,
                send_per_s: float | None = None,
                extra: dict[str, dict[str, Any]] | None = None) -> AsyncIterator[World]:
    keys = key_list(settings.keys)
    tg = BenchTelegram(TOKEN)
    kie = BenchKie(keys, {k: f"acct{i}" for i, k in enumerate(keys)},
                   enforce_limits=settings.enforce_kie_limits)
    await tg.start()
    await kie.start()
    tmp = settings.workdir / f"{name}-{uuid.uuid4().hex[:6]}"
    overrides = bench_overrides(keys, max_parallel=settings.max_parallel,
                                poll_interval_s=settings.poll_interval_s, welcome=welcome,
                                accounts=accounts, send_per_s=send_per_s)
    for section, values in (extra or {}).items():
        overrides.setdefault(section, {}).update(values)
    bot = BotProcess(tmp, tg, kie, overrides, accounts)
    lag = LoopLag()
    lag.start()
    try:
        yield World(tg, kie, bot, lag)
    finally:
        await bot.stop()
        await lag.stop()
        await kie.stop()
        await tg.stop()


@contextlib.contextmanager
def quiet_gc() -> Any:
    """The fakes keep every call and message: by the measured phase this process holds hundreds
    of thousands of objects and one full collection stalls the fake servers for 100+ ms. Freeze
    what exists so collections only look at new objects."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# ---- the conversation -------------------------------------------------------------------

async def walk_to_confirm(tg: BenchTelegram, user: FakeUser, quantity: int) -> BotMessage:
    """tests/harness.py::walk_to_confirm, waiting per chat (see BenchTelegram.wait_for)."""

    async def step(action: Any, expect: Callable[[BotMessage], bool]) -> BotMessage:
        cursor = user.cursor()
        await action
        return await tg.wait_for(user, expect, after=cursor, timeout_s=STEP_TIMEOUT_S)

    menu = await step(user.send_text("/start"), lambda m: "Баланс" in m.text and bool(m.buttons))
    await step(user.click(menu, "🎬 Создать видео"), lambda m: "Отправьте фото товара" in m.text)
    await step(user.send_photo(PHOTO), lambda m: "опишите товар" in m.text)
    styles = await step(user.send_text(f"Белая керамическая кружка 350 мл, артикул {user.id}"),
                        lambda m: "Выберите стиль" in m.text)
    # The format step (the style's own shape kept with one tap); older builds (--bot-src) ask for
    # wishes at once.
    wishes = await step(user.click(styles, "🔄 Студийный поворот"),
                        lambda m: "Формат видео" in m.text or "пожелания" in m.text)
    if "Формат видео" in wishes.text:
        wishes = await step(user.click(wishes, "⏭ Оставить"), lambda m: "пожелания" in m.text)
    qty = await step(user.click(wishes, "⏭ Пропустить"), lambda m: "Сколько видео" in m.text)
    return await step(user.click(qty, f"{quantity} видео"), lambda m: "Проверьте заказ" in m.text)


async def walk_all(w: World, users: list[FakeUser], quantity: int) -> tuple[list[BotMessage], float]:
    started = time.monotonic()
    confirms = await asyncio.gather(*(walk_to_confirm(w.tg, u, quantity) for u in users))
    return list(confirms), time.monotonic() - started


async def press_launch(users: list[FakeUser], confirms: list[BotMessage]) -> float:
    pressed_at = time.monotonic()
    for user, confirm in zip(users, confirms, strict=True):
        await user.click(confirm, "✅ Запустить")
    return pressed_at


def make_users(tg: BenchTelegram, count: int, base: int) -> list[FakeUser]:
    return [tg.user(base + i, f"Продавец{i}", username=f"seller{base + i}") for i in range(count)]


# ---- scenario: end-to-end throughput, zero generation delay ---------------------------------

async def throughput(settings: Settings, *, users_n: int, accounts: bool, name: str,
                     send_per_s: float | None = None) -> dict[str, Any]:
    per_user = settings.videos_per_user
    jobs = users_n * per_user
    async with world(settings, name, accounts=accounts, welcome=10 * per_user,
                     send_per_s=send_per_s) as w:
        w.kie.generation_delay_s = 0.0
        w.bot.spawn()
        startup_s = await w.bot.wait_ready()
        users = make_users(w.tg, users_n, 100_000)
        confirms, walk_s = await walk_all(w, users, per_user)
        w.tg.expect_videos(jobs)
        with quiet_gc():
            cpu = CpuWindow(w.bot)
            pressed_at = await press_launch(users, confirms)
            # Bounded: even the single-account pacer (1.9/s) finishes 40 jobs in ~25 s.
            limit_s = 30 + jobs / (1.5 if not accounts else 10)
            timed_out = False
            try:
                async with asyncio.timeout(limit_s):
                    await w.tg.videos_done.wait()
            except TimeoutError:
                timed_out = True
            ended = time.monotonic()
            usage = cpu.result()
        delivered = len(w.tg.video_times)
        last = max(w.tg.video_times, default=ended)
        elapsed = last - pressed_at
        creates = w.kie.create_times
        create_span = (max(creates) - min(creates)) if len(creates) > 1 else 0.0
        await asyncio.sleep(0.5)  # let the last DB writes land
        states = w.bot.job_states()
        return {
            "jobs": jobs, "delivered": delivered, "timed_out": timed_out,
            "elapsed_s": elapsed, "jobs_per_s": delivered / elapsed if elapsed > 0 else 0.0,
            "startup_s": startup_s, "walk_s": walk_s, "users": users_n,
            "first_video_s": (min(w.tg.video_times) - pressed_at) if w.tg.video_times else None,
            "creates": len(creates), "create_rate": (len(creates) - 1) / create_span if create_span else 0.0,
            "kie_429": sum(w.kie.rate_limited.values()), "kie_429_by_endpoint": dict(w.kie.rate_limited),
            "tg_429": w.tg.too_many_requests, "tg_errors": dict(w.tg.errors),
            "tg_peak_sends_per_s": w.tg.peak_sends_per_second(),
            "peak_rss_mb": w.bot.peak_rss_mb(), "db_states": states,
            "fakes_loop_lag_p99_ms": w.lag.p99_ms(pressed_at, ended), **usage,
            "accounts": accounts, "launcher": w.bot.launcher, "send_per_s": send_per_s,
        }


# ---- scenario: hold many jobs in flight, then latency under that load ------------------------

async def hold_and_latency(settings: Settings) -> dict[str, Any]:
    per_user = settings.videos_per_user
    users_n = settings.hold_users
    jobs = users_n * per_user
    out: dict[str, Any] = {"jobs": jobs, "hold_delay_s": settings.hold_delay_s}
    async with world(settings, "hold", accounts=True, welcome=10 * per_user) as w:
        w.kie.generation_delay_s = settings.hold_delay_s
        w.bot.spawn()
        out["startup_s"] = await w.bot.wait_ready()
        users = make_users(w.tg, users_n, 200_000)
        # Latency probes send at most ~1 update/s per user, well inside the bot's per-user flood
        # limit (3/s): top up with extra users, greeted once now (a new user's /start gets two
        # messages, which would confuse the matching of answers to updates).
        extra = make_users(w.tg, max(0, int(settings.latency_rate) - users_n), 300_000)
        await asyncio.gather(*(_greet(w.tg, u) for u in extra))
        confirms, out["walk_s"] = await walk_all(w, users, per_user)
        gc_guard = contextlib.ExitStack()
        gc_guard.enter_context(quiet_gc())
        pressed_at = await press_launch(users, confirms)

        held: list[tuple[float, int, int]] = []  # (at, jobs generating per DB, KIE in flight)

        async def sample() -> None:
            while True:
                states = await asyncio.to_thread(w.bot.job_states)
                held.append((time.monotonic(), states.get("generating", 0), w.kie.in_flight))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample(), name="hold-sampler")
        try:
            # Plateau: every job generating at KIE (bounded by the generation delay itself).
            await poll_until(lambda: bool(held) and held[-1][1] >= jobs,
                             pressed_at + settings.hold_delay_s * 0.5 - time.monotonic(), 0.1)
            plateau_at = time.monotonic()
            out["time_to_hold_all_s"] = plateau_at - pressed_at if held and held[-1][1] >= jobs else None
            out["create_rate"] = _rate(w.kie.create_times)

            # Polling cost: KIE requests per second over a window of one poll interval or more.
            await asyncio.sleep(1.0)
            cpu = CpuWindow(w.bot)
            before_total, before_polls = w.kie.total_requests, _polls(w.kie)
            t0 = time.monotonic()
            await asyncio.sleep(settings.poll_window_s)
            span = time.monotonic() - t0
            out["kie_req_per_s"] = (w.kie.total_requests - before_total) / span
            out["kie_polls_per_s"] = (_polls(w.kie) - before_polls) / span
            out["hold_cpu"] = cpu.result()
            out["in_flight_at_poll_window"] = held[-1][1] if held else 0

            # Latency: updates at a fixed rate while the jobs stay in flight.
            out["latency"] = await _latency(w, users + extra, settings)
            out["in_flight_after_latency"] = held[-1][1] if held else 0
        finally:
            gc_guard.close()
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        end = time.monotonic()
        out["max_generating_db"] = max((h[1] for h in held), default=0)
        out["max_in_flight_kie"] = max((h[2] for h in held), default=0)
        out["peak_rss_mb"] = w.bot.peak_rss_mb(pressed_at, end)
        out["peak_rss_whole_run_mb"] = w.bot.peak_rss_mb()
        out["vmhwm_mb"] = w.bot.read_status()[1] / 1024
        out["kie_429"] = sum(w.kie.rate_limited.values())
        out["kie_429_by_endpoint"] = dict(w.kie.rate_limited)
        out["tg_429"] = w.tg.too_many_requests
        out["tg_errors"] = dict(w.tg.errors)
        out["fakes_loop_lag_p99_ms_hold"] = w.lag.p99_ms(plateau_at, end)
        out["launcher"] = w.bot.launcher
    return out


def _polls(kie: BenchKie) -> int:
    return kie.endpoint_counts["recordInfo"] + kie.endpoint_counts["veoRecordInfo"]


def _rate(times: list[float]) -> float:
    if len(times) < 2:
        return 0.0
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else 0.0


async def _latency(w: World, users: list[FakeUser], settings: Settings) -> dict[str, Any]:
    """Updates at a fixed, open-loop rate: 9 of 10 are button presses on the user's menu
    message, alternating "💰 Баланс" and "🏠 Меню" (the bot answers the query and edits the
    screen), every 10th is a /start message (answered with a new message; the bot paces those to
    Telegram's ~30/s, so they stay at ~20/s here). Latency = the answer (answerCallbackQuery /
    sendMessage) arriving at the fake minus the moment the update was queued there; it includes
    the bot's getUpdates round trip."""
    tg = w.tg
    screens = {u.id: _menu_message(u) for u in users}
    users = [u for u in users if screens[u.id] is not None]
    tg.latencies.clear()
    tg.latency_log.clear()
    total = int(settings.latency_rate * settings.latency_s)
    interval = 1.0 / settings.latency_rate
    balance_data, home_data = MenuCb(action="balance").pack(), MenuCb(action="home").pack()
    cpu = CpuWindow(w.bot)
    gc.disable()  # see quiet_gc(); bounded: 1,000s of updates allocate little
    w.bot.profile("latency", settings.latency_s)
    calls_before = sum(tg.arrivals.values())
    polls_before = tg.arrivals["getUpdates"]
    started = time.monotonic()
    pushed = {"message": 0, "callback": 0}
    for i in range(total):
        delay = started + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        user = users[i % len(users)]
        if i % 10 == 0:
            at = time.monotonic()
            await user.send_text("/start")  # pushes at once (no await inside)
            tg.probe_messages[user.id].append((at, tg.state.next_update_id - 1))
            pushed["message"] += 1
            continue
        data = balance_data if (i // len(users)) % 2 == 0 else home_data
        at = time.monotonic()
        query_id, update_id = _press(tg, user, screens[user.id], data)
        tg.probe_callbacks[query_id] = (at, update_id)
        pushed["callback"] += 1
    push_span = time.monotonic() - started
    behind_ms = max(0.0, (time.monotonic() - started - (total - 1) * interval) * 1000)
    expected = total
    await poll_until(lambda: len(tg.latencies) >= expected, min(10.0, max(3.0, settings.latency_s)))
    ended = time.monotonic()
    gc.enable()
    cpu_used = cpu.result()
    calls = sum(tg.arrivals.values()) - calls_before
    polls = tg.arrivals["getUpdates"] - polls_before
    lat = [v for _, v in tg.latencies]
    by_kind = {kind: [v for k, v in tg.latencies if k == kind] for kind in ("message", "callback")}
    return {
        "pushed": expected, "pushed_by_kind": pushed, "answered": len(lat), "users": len(users),
        "pusher_behind_at_end_ms": behind_ms,
        # Bot API calls the bot made per update (getUpdates included): its main per-update cost
        "api_calls_per_update": calls / expected if expected else 0.0,
        "getupdates_per_update": polls / expected if expected else 0.0,
        "achieved_rate": expected / push_span if push_span > 0 else 0.0,
        "p50_ms": percentile(lat, 50) * 1000, "p90_ms": percentile(lat, 90) * 1000,
        "p99_ms": percentile(lat, 99) * 1000, "max_ms": max(lat, default=float("nan")) * 1000,
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
        "p99_by_kind_ms": {k: percentile(v, 99) * 1000 for k, v in by_kind.items()},
        "p50_by_kind_ms": {k: percentile(v, 50) * 1000 for k, v in by_kind.items()},
        "fakes_loop_lag_p99_ms": w.lag.p99_ms(started, ended),
        **cpu_used,
        # includes the KIE polling of the jobs in flight (see "bot CPU while only polling")
        "bot_cpu_ms_per_update": cpu_used["bot_cpu_s"] * 1000 / expected if expected else 0.0,
        # per-second p99, to tell steady queueing from stalls (raw samples in --json output)
        "p99_per_second_ms": _per_second_p99(tg.latency_log, started),
        # time until a getUpdates answer carried the update (the rest is the bot's handling)
        "to_delivery_p50_ms": percentile([d for *_, d in tg.latency_log], 50) * 1000,
        "to_delivery_p99_ms": percentile([d for *_, d in tg.latency_log], 99) * 1000,
        "samples": [(round(at - started, 4), kind, round(v * 1000, 2), round(d * 1000, 2))
                    for at, kind, v, d in tg.latency_log],
    }


def _menu_message(user: FakeUser) -> int | None:
    """The user's newest text screen with the menu or balance button (a press target)."""
    for message in reversed(user.messages):
        flat = {b for row in message.buttons for b in row}
        if message.kind == "text" and flat & {BALANCE_BUTTON, MENU_BUTTON}:
            return message.message_id
    return None


def _press(tg: BenchTelegram, user: FakeUser, message_id: int, data: str) -> tuple[str, int]:
    """A callback_query for ``data`` on a message, as FakeUser.click pushes it, but without
    requiring the button to be on screen right now (a user may tap before an edit shows)."""
    stored = tg.state.chats[user.id].messages[message_id]
    query_id = tg.state.random_id()
    tg.state.callbacks[query_id] = CallbackRecord(id=query_id, user_id=user.id,
                                                  message_id=message_id, data=data)
    update = tg.state.push_update("callback_query", {
        "id": query_id, "from": user.info.as_user(), "message": stored.raw,
        "chat_instance": str(user.id * 7919), "data": data})
    return query_id, int(update["update_id"])


async def _greet(tg: BenchTelegram, user: FakeUser) -> None:
    cursor = user.cursor()
    await user.send_text("/start")
    await tg.wait_for(user, lambda m: "Баланс" in m.text and bool(m.buttons), after=cursor,
                      timeout_s=STEP_TIMEOUT_S)


def _per_second_p99(log: list[tuple[float, str, float, float]], started: float) -> list[float]:
    buckets: dict[int, list[float]] = {}
    for at, _, value, _ in log:
        buckets.setdefault(int(at - started), []).append(value)
    return [round(percentile(buckets[k], 99) * 1000, 1) for k in sorted(buckets)]


# ---- scenario: resume unfinished jobs after a restart ---------------------------------------

async def resume(settings: Settings) -> dict[str, Any]:
    n = settings.resume_jobs
    per_user = 5
    async with world(settings, "resume", accounts=True, welcome=50) as w:
        # Tasks stay "generating" for the whole measurement: only the first poll is measured.
        w.kie.generation_delay_s = max(settings.hold_delay_s, 60.0)
        w.bot.write_config()
        db = await Database.open(w.bot.db_path)  # the bot's own schema and migrations
        await db.close()
        keys = key_list(settings.keys)
        task_ids = await asyncio.to_thread(_seed, w.bot.db_path, n, per_user, keys, w.bot.tmp)
        for i, task_id in enumerate(task_ids):
            w.kie.add_pending_task(task_id, keys[i % len(keys)])
        for uid in {100_000 + i // per_user for i in range(n)}:
            w.tg.user(uid, "Продавец")  # the chat exists: these users talked to the bot before
            w.tg.state.chats[uid].started = True
        w.kie.expect_first_polls(n)
        w.bot.spawn()
        spawned = w.bot.spawned_at
        cpu = CpuWindow(w.bot)
        timed_out = False
        try:
            async with asyncio.timeout(60 + n / 10):
                await w.kie.all_polled.wait()
        except TimeoutError:
            timed_out = True
        usage = cpu.result()
        polls = sorted(w.kie.first_poll.values())
        first_req = min(t for t in (w.tg.first_call_at, w.kie.first_request_at) if t is not None) \
            if (w.tg.first_call_at or w.kie.first_request_at) else None
        return {
            "jobs": n, "polled": len(polls), "timed_out": timed_out,
            "spawn_to_all_polled_s": (polls[-1] - spawned) if polls and not timed_out else None,
            "spawn_to_first_poll_s": (polls[0] - spawned) if polls else None,
            "first_to_last_poll_s": (polls[-1] - polls[0]) if polls else None,
            "spawn_to_first_request_s": (first_req - spawned) if first_req else None,
            "pacer_bound_s": n / (settings.keys * 9),
            "kie_429": sum(w.kie.rate_limited.values()),
            "peak_rss_mb": w.bot.peak_rss_mb(), "launcher": w.bot.launcher,
            "kie_endpoints": dict(w.kie.endpoint_counts), **usage,
            "fakes_loop_lag_p99_ms": w.lag.p99_ms(polls[0], polls[-1]) if polls else None,
            "progress_s": {f"{q}%": round(polls[min(len(polls) - 1, len(polls) * q // 100)] - spawned, 2)
                           for q in (10, 50, 90)} if polls else {},
        }


def _seed(db_path: Path, n: int, per_user: int, keys: list[str], tmp: Path) -> list[str]:
    """n jobs in state 'generating' (charged, claimed by a process that died), as after a crash."""
    now = time.time()
    photos = tmp / "storage" / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    task_ids: list[str] = []
    try:
        with conn:
            users = sorted({100_000 + i // per_user for i in range(n)})
            conn.executemany(
                "INSERT INTO users (id, username, first_name, language, first_seen, last_seen)"
                " VALUES (?, ?, 'Продавец', 'ru', ?, ?)", [(u, f"seller{u}", now, now) for u in users])
            conn.executemany(
                "INSERT INTO credit_ledger (user_id, delta, reason, created_at) VALUES (?, ?, 'welcome', ?)",
                [(u, 10 * per_user, now) for u in users])
            product_of: dict[int, int] = {}
            for u in users:
                path = photos / f"{u}.jpg"
                path.write_bytes(PHOTO)
                cur = conn.execute(
                    "INSERT INTO products (user_id, photo_file_id, photo_path, description, upload_url,"
                    " upload_url_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (u, f"AgACfile{u}", str(path), "Белая керамическая кружка 350 мл",
                     f"http://127.0.0.1:9/uploads/{u}.jpg", now, now))
                product_of[u] = int(cur.lastrowid or 0)
            for i in range(n):
                u = 100_000 + i // per_user
                task_id = f"veo_task_{uuid.uuid4().hex[:16]}"
                task_ids.append(task_id)
                cur = conn.execute(
                    "INSERT INTO jobs (user_id, chat_id, product_id, request_key, template, wishes,"
                    " provider, model, cost, state, prompt, image_url, task_id, key_id, submitted_at,"
                    " run_after, claimed, created_at, updated_at, started_at)"
                    " VALUES (?, ?, ?, ?, 'studio', '', 'kie', 'veo3_fast', 10, 'generating', ?, ?, ?, ?,"
                    " ?, ?, 1, ?, ?, ?)",
                    (u, u, product_of[u], f"{u}:seed{i}", "Studio turntable of the product",
                     f"http://127.0.0.1:9/uploads/{u}.jpg", task_id, key_id_for(keys[i % len(keys)]),
                     now - 30, now - 60, now - 60, now - 30, now - 60))
                job_id = int(cur.lastrowid or 0)
                conn.execute(
                    "INSERT INTO credit_ledger (user_id, delta, reason, job_id, created_at)"
                    " VALUES (?, -10, 'job_charge', ?, ?)", (u, job_id, now))
    finally:
        conn.close()
    return task_ids
