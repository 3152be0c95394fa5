"""Bench-only subclasses of the test fakes: cheap counters, per-chat waiting, latency probes
and KIE's documented rate limits. The fakes in tests/ are used unchanged underneath."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from tests.fakes import telegram_media
from tests.fakes.kie import FakeKie, FakeTask
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.fakes.telegram_state import ApiCall, BotMessage

# The fake builds JPEG thumbnails for every photo a user sends (PIL, ~10 ms each). Every bench
# user sends the same bytes, so the fake's own CPU is kept off the measurement with a cache.
telegram_media._thumbnail = functools.lru_cache(maxsize=16)(telegram_media._thumbnail)
telegram_media._image_size = functools.lru_cache(maxsize=16)(telegram_media._image_size)

# Calls that put (or change) a message in a chat: what Telegram's flood limits count.
SEND_METHODS = frozenset({
    "sendMessage", "sendVideo", "sendPhoto", "sendDocument", "sendAnimation",
    "editMessageText", "editMessageCaption", "editMessageReplyMarkup", "copyMessage",
})


class BenchTelegram(FakeTelegram):
    """FakeTelegram plus O(1) counters, per-chat wake-ups and update→answer latency probes.

    FakeUser.wait_for_message wakes every waiter on every state change (fine for tests, quadratic
    with hundreds of users), so the bench waits per chat through :meth:`wait_for` instead."""

    def __init__(self, token: str) -> None:
        super().__init__(token=token)
        self.method_counts: Counter[str] = Counter()  # answered calls
        self.arrivals: Counter[str] = Counter()  # calls as they arrive (a long poll answers late)
        self.too_many_requests = 0  # 429 answers
        self.errors: Counter[str] = Counter()  # "method status" of non-200 answers
        self.sends_per_second: Counter[int] = Counter()  # int(monotonic) -> successful sends
        self.first_call_at: float | None = None
        self.video_times: list[float] = []
        self._video_target: int | None = None
        self.videos_done = asyncio.Event()
        self._chat_waiters: dict[int, asyncio.Event] = {}
        # latency probes: chat -> push times of /start messages; callback id -> push time
        # probes: chat -> (push time, update id) of /start messages; callback id -> the same
        self.probe_messages: dict[int, deque[tuple[float, int]]] = defaultdict(deque)
        self.probe_callbacks: dict[str, tuple[float, int]] = {}
        self.delivered_at: dict[int, float] = {}  # update id -> when a getUpdates answer held it
        self.latencies: list[tuple[str, float]] = []
        # (pushed at, kind, latency, of which waiting for the bot's getUpdates)
        self.latency_log: list[tuple[float, str, float, float]] = []
        original = self.state.record_event

        def record_event(chat: Any, stored: Any) -> BotMessage:
            snapshot = original(chat, stored)
            waiter = self._chat_waiters.pop(chat.user.id, None)
            if waiter is not None:
                waiter.set()
            return snapshot

        self.state.record_event = record_event  # type: ignore[method-assign]

    # -- calls and answers -------------------------------------------------------------
    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        self.arrivals[request.match_info["method"]] += 1
        if self.first_call_at is None:
            self.first_call_at = time.monotonic()
        return await super()._handle_api(request)

    def _answer(self, call: ApiCall, result: Any) -> web.Response:
        response = super()._answer(call, result)
        self._seen(call, 200)
        return response

    def _answer_error(self, call: ApiCall, error: Any) -> web.Response:
        response = super()._answer_error(call, error)
        self._seen(call, int(error.status))
        return response

    def _seen(self, call: ApiCall, status: int) -> None:
        method = call.method
        self.method_counts[method] += 1
        if status != 200:
            self.errors[f"{method} {status}"] += 1
            if status == 429:
                self.too_many_requests += 1
            return
        if method in SEND_METHODS:
            self.sends_per_second[int(call.at)] += 1
        if method == "getUpdates" and (self.probe_messages or self.probe_callbacks):
            now = time.monotonic()
            for update in call.result or ():
                self.delivered_at.setdefault(update["update_id"], now)
        if method == "sendVideo":
            self.video_times.append(call.at)
            if self._video_target is not None and len(self.video_times) >= self._video_target:
                self.videos_done.set()
        elif method == "sendMessage":
            queue = self.probe_messages.get(_int(call.params.get("chat_id")))
            if queue:
                self._latency("message", *queue.popleft(), call.at)
        elif method == "answerCallbackQuery":
            probe = self.probe_callbacks.pop(str(call.params.get("callback_query_id")), None)
            if probe is not None:
                self._latency("callback", *probe, call.at)

    def _latency(self, kind: str, pushed: float, update_id: int, answered: float) -> None:
        delivered = self.delivered_at.get(update_id, answered)
        self.latencies.append((kind, answered - pushed))
        self.latency_log.append((pushed, kind, answered - pushed, delivered - pushed))

    def expect_videos(self, count: int) -> None:
        self._video_target = count
        if len(self.video_times) >= count:
            self.videos_done.set()

    # -- scripted users ----------------------------------------------------------------
    async def wait_for(self, user: FakeUser, predicate: Callable[[BotMessage], Any], *,
                       after: int, timeout_s: float) -> BotMessage:
        """First bot message event in the user's chat after ``after`` matching ``predicate``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for event in user.history[after:]:
                if not event.deleted and predicate(event):
                    return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                shown = [m.text[:60] for m in user.messages[-3:]]
                raise TimeoutError(f"user {user.id}: no expected message in {timeout_s}s; last: {shown}")
            waiter = self._chat_waiters.setdefault(user.id, asyncio.Event())
            try:
                async with asyncio.timeout(remaining):
                    await waiter.wait()
            except TimeoutError:
                pass

    def peak_sends_per_second(self) -> int:
        return max(self.sends_per_second.values(), default=0)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


CREATE_ENDPOINTS = ("createTask", "veoGenerate")
POLL_ENDPOINTS = ("recordInfo", "veoRecordInfo")
CREATE_LIMIT, CREATE_WINDOW_S = 20, 10.0  # per account (docs/kie-api-notes.md §3)
POLL_LIMIT, POLL_WINDOW_S = 10, 1.0  # per API key (docs/kie-api-notes.md: "10 requests per second per API key")


class BenchKie(FakeKie):
    """FakeKie plus O(1) counters, first-poll times and KIE's documented rate limits
    (answered with HTTP 429 like the real API: the request is dropped, not queued)."""

    def __init__(self, keys: Iterable[str], accounts: dict[str, str], *,
                 enforce_limits: bool = True) -> None:
        super().__init__(keys)
        self.accounts = accounts  # key -> account, for the per-account create limit
        self.enforce_limits = enforce_limits
        self.endpoint_counts: Counter[str] = Counter()
        self.total_requests = 0
        self.rate_limited: Counter[str] = Counter()
        self.first_request_at: float | None = None
        self.create_times: list[float] = []
        self.downloaded = 0
        self.first_poll: dict[str, float] = {}
        self._first_poll_target: int | None = None
        self.all_polled = asyncio.Event()
        self._windows: dict[str, deque[float]] = defaultdict(deque)

    def expect_first_polls(self, count: int) -> None:
        self._first_poll_target = count
        if len(self.first_poll) >= count:
            self.all_polled.set()

    def add_pending_task(self, task_id: str, key: str, model: str = "veo3_fast") -> None:
        """Register a task KIE already runs (as if created before a restart)."""
        body = {"prompt": "bench", "model": model}
        self.tasks[task_id] = FakeTask(task_id, "veo", model, body, body, key, time.monotonic())

    @property
    def in_flight(self) -> int:
        """Tasks created here whose result has not been downloaded yet."""
        return len(self.create_times) - self.downloaded

    async def _answer(self, endpoint: str, request: web.Request, key: str | None,
                      handler: Any) -> tuple[int, Any, bytes | None, str]:
        now = time.monotonic()
        self.total_requests += 1
        self.endpoint_counts[endpoint] += 1
        if self.first_request_at is None:
            self.first_request_at = now
        if self.enforce_limits and key in self.keys:
            window_key = limit = span = None
            if endpoint in CREATE_ENDPOINTS:
                window_key, limit, span = "a:" + self.accounts.get(key, key), CREATE_LIMIT, CREATE_WINDOW_S
            elif endpoint in POLL_ENDPOINTS:
                window_key, limit, span = "k:" + key, POLL_LIMIT, POLL_WINDOW_S
            if window_key is not None and limit is not None and span is not None:
                window = self._windows[window_key]
                while window and window[0] <= now - span:
                    window.popleft()
                if len(window) >= limit:
                    self.rate_limited[endpoint] += 1
                    return 429, {"code": 429, "msg": "Rate limited (bench: KIE's documented limit)",
                                 "data": None}, None, ""
                window.append(now)
        status, payload, raw, ctype = await super()._answer(endpoint, request, key, handler)
        if endpoint == "download" and status == 200:
            self.downloaded += 1
        return status, payload, raw, ctype

    def _new_task(self, family: str, model: str, body: dict[str, Any], inp: dict[str, Any],
                  key: str) -> tuple[int, Any]:
        answer = super()._new_task(family, model, body, inp, key)
        self.create_times.append(time.monotonic())
        return answer

    def _task_for_poll(self, request: web.Request) -> FakeTask | tuple[int, Any]:
        task = super()._task_for_poll(request)
        if isinstance(task, FakeTask) and task.task_id not in self.first_poll:
            self.first_poll[task.task_id] = time.monotonic()
            if self._first_poll_target is not None and len(self.first_poll) >= self._first_poll_target:
                self.all_polled.set()
        return task
