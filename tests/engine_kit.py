"""The real engine and the real SQLite job table, with an in-memory provider and a recording notifier.

State-machine cases (a createTask answer lost, a callback for an unknown task, a database that
refuses writes, a ban racing the engine) run here in milliseconds; the end-to-end tests over
the fake KIE and Telegram servers stay next to them for what only real HTTP shows.
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from neurocards.config import Config, load_config
from neurocards.jobs.chain import ChainEntry, ProviderChain
from neurocards.jobs.engine import Engine
from neurocards.jobs.failures import Failure
from neurocards.jobs.notifier import DeliveryError
from neurocards.jobs.prompting import PromptBuilder
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics
from neurocards.providers.base import (
    BeforeSend,
    ErrorKind,
    ProviderError,
    SubmittedTask,
    TaskState,
    TaskStatus,
    VideoRequest,
)
from neurocards.store.db import Database
from neurocards.store.jobs import Job, JobState, JobStore
from neurocards.store.orders import OrderStore
from neurocards.store.prompt_cache import PromptCache
from neurocards.store.users import ProductStore, UserStore
from tests.harness import config_text

KEY_IDS = ("key-a", "key-b")


@dataclass
class MemoryTask:
    task_id: str
    request: VideoRequest
    key_id: str
    outcome: TaskStatus = field(default_factory=lambda: TaskStatus(TaskState.PENDING))


class MemoryProvider:
    """A VideoProvider + KeyRotation + BalanceSource held in memory, scripted by the test.

    `submit_faults` holds what the next createTasks do: an exception to raise before anything
    happens ("refused"), or ("after", exc) to create the task and then raise (an answer lost)."""

    name = "memory"

    def __init__(self) -> None:
        self.tasks: dict[str, MemoryTask] = {}
        self.submit_faults: deque[Exception | tuple[str, Exception]] = deque()
        self.poll_faults: deque[Exception] = deque()
        self.download_faults: deque[Exception] = deque()
        self.result_size: int | None = None  # the size of every result file (its CDN declares it)
        self.result_content: bytes | None = None  # or the bytes of every result file
        self.finish_after_polls: int = 0  # a new task is pending for this many polls
        self.next_outcome: deque[TaskStatus] = deque()
        self.disabled: set[str] = set()
        self.polls: list[str] = []
        self.uploads: list[str] = []  # file names, one per photo upload
        self.submit_gate: asyncio.Event | None = None  # when set, createTask waits for it
        self._ids = itertools.count(1)
        self._keys = itertools.cycle(KEY_IDS)

    # VideoProvider
    async def upload_image(self, data: bytes, filename: str) -> str:
        self.uploads.append(filename)
        return f"mem://photo/{filename}"

    def output_aspect(self, model: str, aspect: str) -> str:
        return aspect

    async def submit(self, request: VideoRequest, before_send: BeforeSend | None = None) -> SubmittedTask:
        key_id = next(self._keys)
        fault = self.submit_faults.popleft() if self.submit_faults else None
        if isinstance(fault, Exception):
            raise fault
        if before_send is not None:
            await before_send(key_id)
        if self.submit_gate is not None:
            await self.submit_gate.wait()
        task = MemoryTask(f"t{next(self._ids)}", request, key_id)
        if self.next_outcome:
            task.outcome = self.next_outcome.popleft()
        self.tasks[task.task_id] = task
        if isinstance(fault, tuple):
            exc = fault[1]
            if isinstance(exc, ProviderError):
                exc.key_id = key_id
            raise exc
        return SubmittedTask(task.task_id, key_id)

    async def poll(self, task_id: str, model: str, key_id: str | None) -> TaskStatus:
        self.polls.append(task_id)
        if self.poll_faults:
            raise self.poll_faults.popleft()
        task = self.tasks.get(task_id)
        if task is None:
            raise ProviderError("recordInfo is null", kind=ErrorKind.API, code=422)
        if task.outcome.state is TaskState.PENDING and self.polls.count(task_id) > self.finish_after_polls:
            task.outcome = TaskStatus(TaskState.SUCCESS, (f"mem://video/{task_id}",))
        status = task.outcome
        return TaskStatus(status.state, status.result_urls, status.fail_code, status.fail_msg,
                          callback_url=task.request.callback_url)

    async def download(self, url: str, dest: Path, max_bytes: int) -> int:
        if self.download_faults:
            raise self.download_faults.popleft()
        if self.result_size is not None and self.result_size > max_bytes:  # as KIE's download refuses it
            raise ProviderError(f"download: file is {self.result_size} bytes, limit {max_bytes}",
                                kind=ErrorKind.DOWNLOAD)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as fh:
            fh.write(self.result_content or b"\x00\x00\x00\x18ftypmp42" + url.encode())
            if self.result_size is not None:
                fh.truncate(self.result_size)  # sparse: a file of any size costs no disk
        return dest.stat().st_size

    async def aclose(self) -> None:
        return None

    # KeyRotation
    def disable_key(self, key_id: str, reason: str) -> bool:
        self.disabled.add(key_id)
        return True

    def cool_down_key(self, key_id: str, seconds: float) -> bool:
        return True

    def available_keys(self) -> int:
        return len(set(KEY_IDS) - self.disabled)

    # BalanceSource
    async def get_credits(self) -> float:
        return 1000.0

    def finish(self, task_id: str, status: TaskStatus | None = None) -> None:
        self.tasks[task_id].outcome = status or TaskStatus(TaskState.SUCCESS, (f"mem://video/{task_id}",))


class RecordingNotifier:
    """JobNotifier that remembers everything; `delivery_faults` scripts sendVideo failures."""

    def __init__(self) -> None:
        self.videos: list[int] = []
        self.events: list[tuple[str, int]] = []
        self.delivery_faults: deque[DeliveryError] = deque()
        self.wait_notices: dict[int, int] = {}  # chat -> the minutes it was told to wait
        self.alerts: list[object] = []  # what the admins were told, as the alert objects

    async def deliver_video(self, job: Job, path: Path | None, balance: int, simple: bool = False,
                            timeout_s: float | None = None) -> str:
        if self.delivery_faults:
            raise self.delivery_faults.popleft()
        self.videos.append(job.id)
        return f"file-{job.id}"

    async def job_retrying(self, job: Job) -> None:
        self.events.append(("retrying", job.id))

    async def job_failed(self, job: Job, failure: Failure, attempts: int, balance: int) -> None:
        self.events.append((f"failed:{failure.cls}", job.id))

    async def delivery_failed(self, job: Job, balance: int) -> None:
        self.events.append(("delivery_failed", job.id))

    async def delivery_delayed(self, job: Job) -> None:
        self.events.append(("delivery_delayed", job.id))

    async def job_waiting(self, job: Job, eta_minutes: int) -> None:
        self.events.append(("waiting", job.id))
        self.wait_notices[job.chat_id] = eta_minutes

    async def alert_admins(self, alert: object) -> None:
        self.alerts.append(alert)
        self.events.append((f"alert:{type(alert).__name__}", 0))


@dataclass
class EngineKit:
    config: Config
    db: Database
    jobs: JobStore
    users: UserStore
    products: ProductStore
    provider: MemoryProvider
    notifier: RecordingNotifier
    engine: Engine
    tmp: Path
    callbacks: bool
    _orders: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def order(self, user_id: int = 1, count: int = 1, credits: int = 100,
                    product_id: int | None = None, aspect_ratio: str | None = None) -> list[int]:
        """A seller with `credits` orders `count` videos (charged, queued), as the bot would; of a new
        product unless `product_id` names one already made."""
        users = self.users
        if await users.get(user_id) is None:
            await users.touch(user_id, username=None, first_name="S", language="ru", welcome_credits=credits)
        if product_id is None:
            photo = self.tmp / f"photo{user_id}.jpg"
            photo.write_bytes(b"\xff\xd8jpeg")
            product_id = await self.products.create(user_id, "file-id", str(photo))
            await self.products.set_description(product_id, "Кружка")
        template = self.engine.templates.ordered[0].id
        made = await OrderStore(self.db).create_charged(
            user_id=user_id, chat_id=user_id, request_key=f"r{next(self._orders)}", product_ids=[product_id],
            per_product=count, template=template, wishes="", provider="kie", model="veo3_fast", cost_each=10,
            aspect_ratio=aspect_ratio)
        self.engine.wake()
        return made.job_ids

    async def wait(self, predicate: Callable[[list[Job]], bool], timeout: float = 5.0) -> list[Job]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rows = [Job.from_row(r) for r in await self.db.fetchall("SELECT * FROM jobs ORDER BY id")]
            if predicate(rows):
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"jobs never got there: {[(j.id, j.state, j.claimed) for j in rows]}")
            await asyncio.sleep(0.01)

    async def event(self, event: tuple[str, int], timeout: float = 5.0) -> None:
        """Wait until the notifier was told `event` (it comes right after the database write)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while event not in self.notifier.events:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never told {event}: {self.notifier.events}")
            await asyncio.sleep(0.01)

    def metric(self, name: str, **labels: str) -> float:
        return self.engine.metrics.registry.get_sample_value(name, labels or None) or 0.0

    async def restart(self) -> Engine:
        """Stop the engine mid-work (as a kill would: in-flight requests cancelled, nothing
        written after them) and start a new one on the same database and provider."""
        old = self.engine
        old.stop_grace_s = 0.0  # a kill waits for nothing
        await old.stop()
        self.engine = Engine(config=self.config, jobs=self.jobs, users=self.users, products=self.products,
                             chain=old.chain, notifier=self.notifier, templates=old.templates, prompts=old.prompts,
                             metrics=old.metrics)
        self.engine.reclaim_every_s = old.reclaim_every_s
        await self.engine.start()
        return self.engine


@asynccontextmanager
async def running_kit(tmp: Path, **kwargs: Any) -> AsyncIterator[EngineKit]:
    kit = await make_engine_kit(tmp, **kwargs)
    await kit.engine.start()
    try:
        yield kit
    finally:
        kit.engine.stop_grace_s = 0.2
        await kit.engine.stop()
        await kit.db.close()


async def make_engine_kit(tmp: Path, *, callbacks: bool = False, overrides: dict[str, dict[str, Any]] | None = None,
                          more_entries: tuple[ChainEntry, ...] = (), chain_options: dict[str, Any] | None = None,
                          templates: TemplateCatalog | None = None) -> EngineKit:
    """`more_entries` follow the in-memory "kie" entry in the provider chain (`chain_options`:
    ProviderChain's keywords, e.g. failures_to_switch)."""
    fakes = SimpleNamespace(base_url="http://127.0.0.1:9")
    sections: dict[str, dict[str, Any]] = {"generation": {"dispatch_interval_s": 0.01}, "kie": {"timeout_s": 5}}
    for name, values in (overrides or {}).items():
        sections.setdefault(name, {}).update(values)
    (tmp / "config.toml").write_text(config_text(fakes, fakes, overrides=sections), encoding="utf-8")  # type: ignore[arg-type]
    config = load_config(tmp / "config.toml", env={})
    db = await Database.open(config.storage.database)
    provider = MemoryProvider()
    entry = ChainEntry(name="kie", backend=provider, fixed_model=None, cost=10, simple=False,
                       default_model="veo3_fast", keys=provider, balance=provider,
                       callbacks=(lambda job, attempt: f"mem://callback?job={job}&attempt={attempt}") if callbacks
                       else None,
                       poll_interval_s=config.kie.poll_interval_s, callback_poll_interval_s=0.05,
                       timeout_s=config.kie.timeout_s, cache_uploads=True, takes_template_model=True)
    notifier = RecordingNotifier()
    jobs, users, products = JobStore(db), UserStore(db), ProductStore(db)
    chain = ProviderChain([entry, *more_entries], **(chain_options or {}))
    engine = Engine(config=config, jobs=jobs, users=users, products=products, chain=chain,
                    notifier=notifier, templates=templates or TemplateCatalog.load(None),
                    prompts=PromptBuilder(config.openai, cache=PromptCache(db)), metrics=Metrics(process=False))
    return EngineKit(config, db, jobs, users, products, provider, notifier, engine, tmp, callbacks)


async def kill_during_both_sends(kit: EngineKit,
                                 on_restart: Callable[[], None] | None = None) -> tuple[int, list[int]]:
    """One video is ordered; every sendVideo hangs (Telegram has the upload; its answer never comes),
    and the bot is killed during the first and again during its one repeat. Returns the job id and
    one entry per sendVideo started."""
    started: list[int] = []

    async def hanging_delivery(*args: object, **kwargs: object) -> str:
        started.append(1)
        await asyncio.Event().wait()
        raise AssertionError("a hanging sendVideo never answers")

    kit.notifier.deliver_video = hanging_delivery  # type: ignore[method-assign]
    [job_id] = await kit.order()
    for expected in (1, 2):
        await kit.wait(lambda js, n=expected: bool(js) and js[0].send_pending and len(started) == n)
        await kit.restart()
        if on_restart is not None:
            on_restart()
    return job_id, started


def done(jobs: list[Job]) -> bool:
    """Every job of the kit's table delivered (a predicate for `EngineKit.wait`)."""
    return bool(jobs) and all(j.state is JobState.DONE for j in jobs)


def failed(jobs: list[Job]) -> bool:
    """Every job of the kit's table failed (a predicate for `EngineKit.wait`)."""
    return bool(jobs) and all(j.state is JobState.FAILED for j in jobs)
