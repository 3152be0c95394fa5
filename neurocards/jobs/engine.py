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
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from neurocards.config import Config
from neurocards.jobs.alerts import Alerts, JobNeedsAttention, KeyDisabled, NoPayingKey
from neurocards.jobs.chain import ProviderChain
from neurocards.jobs.delivery import Delivery
from neurocards.jobs.failures import Failure, FailureClass, classify, jittered, policy_for
from neurocards.jobs.notifier import JobNotifier, quietly
from neurocards.jobs.prompting import PromptBuilder
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics
from neurocards.providers.base import (
    ErrorKind,
    ProviderError,
    TaskState,
    VideoProvider,
    VideoRequest,
)
from neurocards.providers.kie_callbacks import callback_url
from neurocards.store.jobs import TERMINAL, Job, JobFinished, JobState, JobStore
from neurocards.store.users import ProductStore, UserStore

log = logging.getLogger("neurocards.engine")

UPLOAD_REUSE_S = 12 * 3600  # KIE keeps uploads 24 h; re-upload well before that
DEFAULT_DURATION_S = 300.0  # ETA before any job has finished


class Engine:
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
        self._poll_wakeups: dict[str, asyncio.Event] = {}
        self.alerts = alerts or Alerts(notifier)
        self.metrics = metrics or Metrics(process=False)
        self.delivery = Delivery(config=config, jobs=jobs, users=users, notifier=notifier, chain=chain,
                                 metrics=self.metrics)
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
        """Cancel everything; the table already holds where each job was."""
        self._stopping = True
        tasks = list(self._running.values())
        if self._dispatcher:
            tasks.append(self._dispatcher)
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

    async def _run(self, job: Job) -> None:
        try:
            await self._drive(job)
        except asyncio.CancelledError:
            raise
        except JobFinished:
            log.info("job %d was finished elsewhere (cancelled); stopping work on it", job.id)
        except Exception as exc:  # a bug of ours must still end in a refund, never in silence
            log.exception("job %d crashed in state %s", job.id, job.state)
            current = await self.jobs.get(job.id)
            if current and current.state not in TERMINAL:
                await self._fail(current, Failure(FailureClass.UNKNOWN, f"internal error: {exc!r}"[:500]))
        finally:
            # Synchronous with the last DB write: the dispatcher cannot reclaim in between.
            self._running.pop(job.id, None)
            self._wake.set()

    def _backend(self, job: Job) -> VideoProvider:
        return self.chain.get(job.provider).backend

    # ---- the state machine -------------------------------------------------

    async def _drive(self, job: Job) -> None:
        steps: dict[JobState, Callable[[Job], Awaitable[Job | None]]] = {
            JobState.QUEUED: self._prepare,
            JobState.SUBMITTING: self._submit,
            JobState.GENERATING: self._await_result,
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
            return await self._fail(job, Failure(FailureClass.OUR_BUG, "product or template missing"))
        prompt = job.prompt
        if prompt is None:
            prompt = await self.prompts.build(template, product.description or "", job.wishes)
            job = await self.jobs.update(job.id, prompt=prompt, event="prompt ready")
        backend = self._backend(job)
        # Sibling jobs of one order share the upload: one at a time per product, the rest reuse it.
        # Only KIE uploads are cached on the product (the sandbox stores its own copy, cheaply).
        lock = self._upload_locks.setdefault(product.id, asyncio.Lock())
        try:
            async with lock:
                product = await self.products.get(product.id) or product
                url = product.upload_url if backend.name == "kie" else None
                if not url or not product.upload_url_at or time.time() - product.upload_url_at > UPLOAD_REUSE_S:
                    path = Path(product.photo_path)
                    try:
                        data = await asyncio.to_thread(path.read_bytes)
                    except OSError:
                        return await self._fail(job, Failure(FailureClass.PHOTO_GONE, "product photo is gone"))
                    try:
                        url = await backend.upload_image(data, f"p{product.id}{path.suffix or '.jpg'}")
                    except ProviderError as err:
                        return await self._on_error(job, err, retry_state=JobState.QUEUED)
                    if backend.name == "kie":
                        await self.products.set_upload_url(product.id, url)
        finally:
            if not lock.locked() and self._upload_locks.get(product.id) is lock:
                del self._upload_locks[product.id]
        return await self.jobs.update(job.id, image_url=url, state=JobState.SUBMITTING)

    async def _submit(self, job: Job) -> Job | None:
        template = self.templates.get(job.template)
        assert job.prompt is not None and job.image_url is not None and template is not None
        request = VideoRequest(
            prompt=job.prompt,
            image_url=job.image_url,
            model=job.model,
            aspect_ratio=template.aspect_ratio,
            duration_s=template.duration_s,
            callback_url=(callback_url(self.config.kie.callback_url, self.config.kie.callback_secret.get_secret_value())
                          if self.config.kie.callback_url else None),
        )
        try:
            task = await self._backend(job).submit(request)
        except ProviderError as err:
            return await self._on_error(job, err, retry_state=JobState.SUBMITTING)
        self.chain.record_success(job.provider)
        log.info("job %d user %d: task %s created (key %s)", job.id, job.user_id, task.task_id, task.key_id)
        return await self.jobs.update(
            job.id, task_id=task.task_id, key_id=task.key_id, submitted_at=time.time(),
            state=JobState.GENERATING, event=f"task {task.task_id}")

    async def _await_result(self, job: Job) -> Job | None:
        assert job.task_id is not None
        submitted = job.submitted_at or time.time()
        wakeup = self._poll_wakeups.setdefault(job.task_id, asyncio.Event())
        try:
            return await self._poll_until_done(job, submitted, wakeup)
        finally:
            self._poll_wakeups.pop(job.task_id, None)

    def _poll_interval(self, age_s: float) -> float:
        """KIE's guidance: poll often at first, then less; with callbacks polling is a safety net."""
        kie = self.config.kie
        base = kie.poll_interval_s if age_s < 120 else max(kie.poll_interval_s, min(30.0, 2 * kie.poll_interval_s))
        return max(base, kie.callback_poll_interval_s) if kie.callback_url else base

    async def _poll_until_done(self, job: Job, submitted: float, wakeup: asyncio.Event) -> Job | None:
        assert job.task_id is not None
        while True:
            interval = self._poll_interval(time.time() - submitted)
            if time.time() - submitted > self.config.kie.timeout_s:
                return await self._fail(job, Failure(FailureClass.TIMEOUT, f"task {job.task_id} timed out"))
            try:
                status = await self._backend(job).poll(job.task_id, job.model, job.key_id)
            except ProviderError as err:
                if classify(err).cls is FailureClass.OUR_BUG:
                    # The task is unknown upstream (e.g. "recordInfo is null"): nothing was paid, resubmit.
                    return await self._on_error(job, err, retry_state=JobState.SUBMITTING)
                # A failed status query says nothing about the task: keep polling until the deadline.
                log.warning("job %d: poll of %s failed: %s", job.id, job.task_id, err)
                await self._wait_for_poll(wakeup, interval)
                continue
            if status.state is TaskState.SUCCESS:
                if not status.result_urls:
                    err = ProviderError("task succeeded without a result URL", kind=ErrorKind.MALFORMED)
                    return await self._on_error(job, err, retry_state=JobState.SUBMITTING)
                self.metrics.generation_finished(time.time() - submitted)
                return await self.jobs.update(
                    job.id, result_url=status.result_urls[0], attempts=0, state=JobState.DOWNLOADING)
            if status.state is TaskState.FAILED:
                err = ProviderError(status.fail_msg or "generation failed", kind=ErrorKind.TASK_FAILED,
                                    code=status.fail_code, key_id=job.key_id)
                return await self._on_error(job, err, retry_state=JobState.SUBMITTING)
            await self._wait_for_poll(wakeup, interval)

    async def _wait_for_poll(self, wakeup: asyncio.Event, interval: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), interval)
        wakeup.clear()

    async def on_task_callback(self, task_id: str, status: object) -> bool:
        """KIE says a task changed: poll it now. The callback body itself is never trusted:
        polling stays the source of truth, so a forged callback can only cause one extra poll."""
        job = await self.jobs.by_task_id(task_id)
        if job is None or job.state is not JobState.GENERATING:
            return False
        wakeup = self._poll_wakeups.get(task_id)
        if wakeup is not None:
            wakeup.set()
        else:
            await self.jobs.update(job.id, run_after=time.time())
            self.wake()
        return True

    async def _download(self, job: Job) -> Job | None:
        assert job.result_url is not None
        dest = self.config.storage.outputs_dir / f"{job.id}.mp4"
        try:
            size = await self._backend(job).download(job.result_url, dest, max_bytes=2 * 1024**3)
        except ProviderError as err:
            return await self._on_error(job, err, retry_state=JobState.DOWNLOADING)
        return await self.jobs.update(
            job.id, video_path=str(dest), attempts=0, state=JobState.SENDING, event=f"downloaded {size} bytes")

    # ---- periodic work ------------------------------------------------------

    async def notify_long_waits(self) -> int:
        """One calm message per chat for jobs waiting longer than the notice threshold."""
        now = time.time()
        waiting = await self.jobs.waiting_unnotified(now - self.config.generation.retry.queue_notice_after_s)
        if not waiting:
            return 0
        average = await self.jobs.average_duration_s() or DEFAULT_DURATION_S
        await self.jobs.mark_queue_notified([j.id for j in waiting])  # first: never twice
        by_chat: dict[int, Job] = {}
        for job in waiting:
            by_chat.setdefault(job.chat_id, job)
        for job in by_chat.values():
            remaining = max(average - (now - (job.started_at or job.created_at)), 0.3 * average, 60.0)
            await quietly(self.notifier.job_waiting(job, max(1, math.ceil(remaining / 60))))
        return len(by_chat)

    # ---- failures ----------------------------------------------------------

    def _jittered(self, delay: float) -> float:
        return jittered(delay, self.config.generation.retry.jitter)

    async def _on_error(self, job: Job, err: ProviderError, *, retry_state: JobState) -> Job | None:
        failure = classify(err)
        log.warning("job %d user %d: %s error in %s: %s", job.id, job.user_id, failure.cls, job.state, err)
        backend = self._backend(job)
        self.chain.record_failure(job.provider, failure.cls)
        rotate = getattr(backend, "disable_key", None)
        if failure.cls is FailureClass.BILLING and err.key_id and rotate is not None:
            rotate(err.key_id, failure.text)
            await self.alerts.send(f"key:{err.key_id}",
                                   KeyDisabled(err.key_id, failure.text[:200], self._keys_left(backend)))
            if self._keys_left(backend) > 0:  # another key may pay: try it now, no attempt used
                await self.jobs.update(job.id, state=retry_state, task_id=None if retry_state is JobState.SUBMITTING
                                       else job.task_id, event=f"billing on key {err.key_id}, next key")
                return await self.jobs.get(job.id)
        if failure.cls is FailureClass.BILLING and self._keys_left(backend) == 0:
            await self.alerts.send("billing:no_keys", NoPayingKey(failure.text[:200]))
        if retry_state is not JobState.DOWNLOADING and (switched := await self._fall_over(job, failure)):
            return switched
        policy = policy_for(failure.cls, self.config.generation.retry)
        if failure.cls is FailureClass.UNKNOWN:
            log.warning("unclassified provider error (add a rule?): %r", err.message)
        if policy.retries and job.attempts < len(policy.delays_s):
            delay = self._jittered(policy.delays_s[job.attempts])
            cool = getattr(backend, "cool_down_key", None)
            if failure.cls is FailureClass.RATE_LIMIT and err.key_id and cool is not None:
                cool(err.key_id, delay)
            changes: dict[str, object] = {
                "attempts": job.attempts + 1, "state": retry_state, "run_after": time.time() + delay,
                "claimed": 0, "error_class": failure.cls.value, "error_text": failure.text[:1000],
            }
            if retry_state is JobState.SUBMITTING:
                changes["task_id"] = None
            self.metrics.job_retry(failure.cls.value)
            notify = not job.retry_notified and failure.cls is not FailureClass.RATE_LIMIT
            if notify:
                changes["retry_notified"] = 1
            updated = await self.jobs.update(
                job.id, event=f"retry {job.attempts + 1} in {round(delay, 3):g}s after {failure.cls}", **changes)
            if notify:
                await quietly(self.notifier.job_retrying(updated, failure))
            return None  # the slot is free; the dispatcher picks the job up at run_after
        if policy.alert_admins:
            await self.alerts.send(f"{failure.cls}:{failure.code}",
                                   JobNeedsAttention(job.id, failure.cls.value, failure.code, failure.text[:300]))
        return await self._fail(job, failure)

    async def _fall_over(self, job: Job, failure: Failure) -> Job | None:
        """The job's provider is set aside: move the job (not yet generating) to the next one."""
        if failure.cls is FailureClass.USER_VIOLATION:
            return None
        target = self.chain.alternative(job.provider)
        if target is None:
            return None
        template = self.templates.get(job.template)
        model = self.chain.model_for(target, template.model if template else None)
        log.warning("job %d: %s unavailable, moving to %s", job.id, job.provider, target.name)
        # The seller pays what the provider that makes the video costs, never more than ordered:
        # the database gives the difference back when the video is delivered.
        price = target.cost if target.cost < job.cost else None
        return await self.jobs.update(
            job.id, provider=target.name, model=model, state=JobState.QUEUED, image_url=None, task_id=None,
            key_id=None, attempts=0, price=price,
            event=f"provider {job.provider} unavailable, moved to {target.name}")

    def _keys_left(self, backend: VideoProvider) -> int:
        available = getattr(backend, "available_keys", None)
        return int(available()) if available is not None else 1

    async def _fail(self, job: Job, failure: Failure) -> Job:
        failed, refunded = await self.jobs.fail_and_refund(
            job.id, error_class=failure.cls.value, error_text=failure.text)
        self.metrics.job_failed(failure.cls.value, failed.cost if refunded else 0)
        if refunded:
            balance = await self.users.balance(job.user_id)
            await quietly(self.notifier.job_failed(failed, failure, job.attempts + 1, balance))
        return failed
