"""The generation engine: persisted jobs driven by a bounded set of coroutines.

Every step writes its state before it starts and its result when it ends, so
a restart resumes each job where it stopped: a job with a task id polls that
task again (never a second task), a job with a downloaded file goes straight
to sending. Jobs beyond `generation.max_parallel` and jobs waiting for a retry
stay in the table (`run_after`), not in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from neurocards.config import Config
from neurocards.jobs.alerts import Alerts
from neurocards.jobs.chain import ProviderChain
from neurocards.jobs.delivery import Delivery
from neurocards.jobs.failures import Failure, FailureClass
from neurocards.jobs.generation import Generation
from neurocards.jobs.inflight import RequestsInFlight
from neurocards.jobs.notifier import JobNotifier, quietly
from neurocards.jobs.outcomes import Outcomes
from neurocards.jobs.prompting import PromptBuilder
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics
from neurocards.providers.base import ProviderError, TaskStatus
from neurocards.services.formats import fit_video, model_aspect, photo_in_shape
from neurocards.store.costs import CostStore
from neurocards.store.jobs import TERMINAL, Job, JobMoved, JobState, JobStore
from neurocards.store.users import ProductStore, UserStore

log = logging.getLogger("neurocards.engine")

UPLOAD_REUSE_S = 12 * 3600  # KIE keeps uploads 24 h; re-upload well before that
DEFAULT_DURATION_S = 300.0  # ETA before any job has finished
DB_TROUBLE_RETRY_S = 5.0  # a step the database refused is tried again after this long
RECLAIM_EVERY_S = 10.0  # how often the dispatcher looks for claims no coroutine holds
STOP_GRACE_S = 10.0  # a graceful stop waits this long for createTask/sendVideo answers (systemd allows 90 s)


class Engine:
    reclaim_every_s = RECLAIM_EVERY_S
    stop_grace_s = STOP_GRACE_S
    db_trouble_retry_s = DB_TROUBLE_RETRY_S

    def __init__(
        self,
        *,
        config: Config,
        jobs: JobStore,
        users: UserStore,
        products: ProductStore,
        chain: ProviderChain,
        notifier: JobNotifier,
        templates: TemplateCatalog,
        prompts: PromptBuilder,
        alerts: Alerts | None = None,
        metrics: Metrics | None = None,
        costs: CostStore | None = None,
    ) -> None:
        self.config = config
        self.jobs = jobs
        self.users = users
        self.products = products
        self.chain = chain
        self.notifier = notifier
        self.templates = templates
        self.prompts = prompts
        self._running: dict[int, asyncio.Task[None]] = {}
        self._upload_locks: dict[int, asyncio.Lock] = {}
        self.alerts = alerts or Alerts(notifier)
        self.metrics = metrics or Metrics(process=False)
        self.outcomes = Outcomes(config=config, jobs=jobs, users=users, chain=chain, notifier=notifier,
                                 templates=templates, alerts=self.alerts, metrics=self.metrics)
        self.requests_in_flight = RequestsInFlight()
        self.generation = Generation(jobs=jobs, chain=chain, templates=templates, metrics=self.metrics,
                                     outcomes=self.outcomes, wake=self.wake, in_flight=self.requests_in_flight,
                                     costs=costs)
        self.delivery = Delivery(config=config, jobs=jobs, users=users, notifier=notifier, chain=chain,
                                 metrics=self.metrics, in_flight=self.requests_in_flight)
        self._reclaimed_at = 0.0
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.heartbeat = time.monotonic()
        self.resumed_at_start = 0

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> int:
        """Release stale claims and start dispatching; returns how many jobs were resumed."""
        await self.jobs.release_claims()
        self.resumed_at_start = await self.jobs.count_unfinished()
        if self.resumed_at_start:
            log.info("resuming %d unfinished jobs", self.resumed_at_start)
        self.config.storage.outputs_dir.mkdir(parents=True, exist_ok=True)
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="engine-dispatcher")
        return self.resumed_at_start

    async def stop(self) -> None:
        """Cancel everything; the table already holds where each job was. A createTask or
        sendVideo already out gets `stop_grace_s` to be answered and recorded first."""
        self._stopping = True
        if self._dispatcher:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._dispatcher
        if len(self.requests_in_flight) and not await self.requests_in_flight.drained(self.stop_grace_s):
            log.warning("stopping with %d paid requests unanswered", len(self.requests_in_flight))
        tasks = list(self._running.values())  # the dispatcher has ended above
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def _dispatch_loop(self) -> None:
        interval = self.config.generation.dispatch_interval_s
        while not self._stopping:
            self.heartbeat = time.monotonic()
            try:
                await self._reclaim_orphans()
                free = self.config.generation.max_parallel - len(self._running)
                for job in await self.jobs.claim_runnable(free):
                    if job.id in self._running:  # cannot happen by construction; never run a job twice
                        log.error("job %d claimed while running", job.id)
                        continue
                    self._running[job.id] = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            except Exception:
                log.exception("dispatcher iteration failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def _reclaim_orphans(self) -> None:
        """The watchdog: a claim held by no coroutine of ours (its step died and could not even
        release it, e.g. the disk was full) is released, so no job waits for a restart."""
        now = time.monotonic()
        if now - self._reclaimed_at < self.reclaim_every_s:
            return
        self._reclaimed_at = now
        orphans = await self.jobs.release_orphaned_claims(set(self._running))
        if orphans:
            log.warning("released %d job claims no coroutine held: %s", len(orphans), orphans[:20])
            self.metrics.claims_reclaimed(len(orphans))

    async def _run(self, job: Job) -> None:
        release_at: float | None = None
        try:
            await self._drive(job)
        except asyncio.CancelledError:
            raise
        except JobMoved:
            log.info("job %d was changed elsewhere (cancelled or adopted); this run stops", job.id)
            release_at = time.time()
        except sqlite3.Error as exc:  # disk full, database locked past the busy timeout, read-only
            log.error("job %d: the database refused a write in state %s (%s); retrying later", job.id,
                      job.state, exc)
            release_at = time.time() + self.db_trouble_retry_s
        except Exception as exc:  # a bug of ours must still end in a refund, never in silence
            log.exception("job %d crashed in state %s", job.id, job.state)
            release_at = await self._fail_after_crash(job, exc)
        finally:
            self._running.pop(job.id, None)
            self._wake.set()
        if release_at is not None:
            try:
                await self.jobs.release_claim(job.id, release_at)
            except Exception as exc:  # the watchdog releases it once the database works again
                log.error("job %d: claim not released (%s); the watchdog will", job.id, exc)

    async def _fail_after_crash(self, job: Job, exc: Exception) -> float | None:
        try:
            current = await self.jobs.get(job.id)
            if current and current.state not in TERMINAL:
                await self.outcomes.fail(current, Failure(FailureClass.UNKNOWN, f"internal error: {exc!r}"))  # the table caps the text
            return None
        except Exception as again:
            log.error("job %d: could not record the crash (%s); retrying later", job.id, again)
            return time.time() + self.db_trouble_retry_s

    # ---- the state machine -------------------------------------------------

    async def _drive(self, job: Job) -> None:
        steps: dict[JobState, Callable[[Job], Awaitable[Job | None]]] = {
            JobState.QUEUED: self._prepare,
            JobState.SUBMITTING: self.generation.submit,
            JobState.GENERATING: self.generation.await_result,
            JobState.DOWNLOADING: self._download,
            JobState.SENDING: self.delivery.send,
        }
        if job.started_at is None:
            job = await self.jobs.update(job.id, started_at=time.time())
        current: Job | None = job
        while current is not None and current.state not in TERMINAL:
            current = await steps[current.state](current)

    async def _prepare(self, job: Job) -> Job | None:
        product = await self.products.get(job.product_id)
        template = self.templates.get(job.template)
        if product is None or template is None:
            return await self.outcomes.fail(job, Failure(FailureClass.OUR_BUG, "product or template missing"))
        prompt = job.prompt
        if prompt is None:
            prompt = await self.prompts.build(template, product.description or "", job.wishes)
            job = await self.jobs.update(job.id, prompt=prompt, event="prompt ready")
        entry = self.chain.get(job.provider)
        # Sibling jobs of one order share the upload: one at a time per product, the rest reuse it,
        # where the entry says its uploads stay valid (the sandbox stores its own copy, cheaply).
        lock = self._upload_locks.setdefault(product.id, asyncio.Lock())
        try:
            async with lock:
                product = await self.products.get(product.id) or product
                # A chosen shape: the photo is given the shape the model will make (see services.formats).
                shape = model_aspect(entry.backend, job.model, job.aspect_ratio) if job.aspect_ratio else None
                url = product.upload_url if entry.cache_uploads and product.upload_aspect == shape else None
                if not url or not product.upload_url_at or time.time() - product.upload_url_at > UPLOAD_REUSE_S:
                    path = Path(product.photo_path)
                    try:
                        data = await asyncio.to_thread(path.read_bytes)
                    except OSError:
                        return await self.outcomes.fail(job, Failure(FailureClass.PHOTO_GONE,
                                                                     "product photo is gone"))  # pragma: no mutate - equivalent: the error text the operator reads on the job, like a log line; the seller's message comes from the class
                    suffix = path.suffix or ".jpg"
                    if shape is not None and (shaped := await asyncio.to_thread(photo_in_shape, data, shape)):
                        data, suffix = shaped, ".jpg"
                    try:
                        url = await entry.backend.upload_image(data, f"p{product.id}{suffix}")
                    except ProviderError as err:
                        return await self.outcomes.on_error(job, err, retry_state=JobState.QUEUED)
                    if entry.cache_uploads:
                        await self.products.set_upload_url(product.id, url, shape)
        finally:
            if not lock.locked() and self._upload_locks.get(product.id) is lock:
                del self._upload_locks[product.id]
        return await self.jobs.update(job.id, expect={"state": JobState.QUEUED}, image_url=url,
                                      state=JobState.SUBMITTING)

    async def _download(self, job: Job) -> Job | None:
        assert job.result_url is not None
        dest = self.config.storage.outputs_dir / f"{job.id}.mp4"
        try:
            size = await self.chain.get(job.provider).backend.download(job.result_url, dest, max_bytes=2 * 1024**3)
        except ProviderError as err:
            return await self.outcomes.on_error(job, err, retry_state=JobState.DOWNLOADING)
        event = f"downloaded {size} bytes"
        if job.aspect_ratio:  # the seller's shape and the format's size cap, whatever the model made
            max_bytes = self.config.formats.max_bytes(job.aspect_ratio, self.config.telegram.max_upload_mb)
            if shaped := await fit_video(dest, job.aspect_ratio, max_bytes):
                event += f", {shaped}"
        return await self.jobs.update(
            job.id, expect={"state": JobState.DOWNLOADING}, video_path=str(dest), attempts=0,
            state=JobState.SENDING, event=event)

    async def on_task_callback(self, task_id: str, status: TaskStatus, hint: tuple[int, int] | None = None) -> bool:
        """The callback server's handler. The status its body claims is not used: the task is polled."""
        return await self.generation.on_task_callback(task_id, hint)

    # ---- periodic work ------------------------------------------------------

    async def notify_long_waits(self) -> None:
        """One calm message per chat for jobs waiting longer than the notice threshold."""
        now = time.time()
        waiting = await self.jobs.waiting_unnotified(now - self.config.generation.retry.queue_notice_after_s)
        if not waiting:
            return
        average = await self.jobs.average_duration_s() or DEFAULT_DURATION_S
        await self.jobs.mark_queue_notified([j.id for j in waiting])  # first: never twice
        by_chat: dict[int, Job] = {}
        for job in waiting:
            by_chat.setdefault(job.chat_id, job)
        for job in by_chat.values():
            remaining = max(average - (now - (job.started_at or job.created_at)), 0.3 * average)
            await quietly(self.notifier.job_waiting(job, max(1, math.ceil(remaining / 60))))  # never "0 min"
