"""The paid part of a job: creating the provider task exactly once, and waiting for its result.

createTask costs money, so every request is preceded by a persisted attempt marker
(`submit_attempt`, `submit_unsure_at`). An error that proves nothing was sent (connection refused,
an error answer) clears it and the request is retried; an error after the request may have
arrived (read timeout, reset, a kill) leaves it set: the job is "unsure". With callbacks the
unsure job waits, up to the generation timeout, for the callback of the task it may have created
(the callback URL names the job and the attempt); without callbacks the next createTask is a
possible double payment and is counted (`neurocards_kie_tasks_orphaned_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from neurocards.jobs.chain import ChainEntry, ProviderChain
from neurocards.jobs.failures import Failure, FailureClass, classify
from neurocards.jobs.inflight import RequestsInFlight
from neurocards.jobs.outcomes import Outcomes
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics
from neurocards.providers.base import (
    ErrorKind,
    ProviderError,
    SubmittedTask,
    TaskState,
    VideoRequest,
)
from neurocards.services.formats import model_aspect
from neurocards.store.costs import CostStore
from neurocards.store.jobs import Job, JobMoved, JobState, JobStore

log = logging.getLogger("neurocards.engine")


class Generation:
    def __init__(self, *, jobs: JobStore, chain: ProviderChain, templates: TemplateCatalog, metrics: Metrics,
                 outcomes: Outcomes, wake: Callable[[], None], in_flight: RequestsInFlight,
                 costs: CostStore | None = None) -> None:
        self.jobs = jobs
        self.costs = costs  # every task created, with what it cost
        self.chain = chain
        self.templates = templates
        self.metrics = metrics
        self.outcomes = outcomes
        self.wake = wake
        self.in_flight = in_flight
        self._poll_wakeups: dict[str, asyncio.Event] = {}
        # Tasks created whose id could not be written (the database refused): kept for the retry.
        self._unwritten: dict[int, SubmittedTask] = {}

    # ---- createTask --------------------------------------------------------------------

    async def submit(self, job: Job) -> Job | None:
        entry = self.chain.get(job.provider)
        if job.submit_unsure_at is not None:
            known = self._unwritten.get(job.id)
            if known is not None:
                return await self._record_task(job, known)
            if entry.callbacks is not None and time.time() < job.submit_unsure_at + entry.timeout_s:
                return await self._wait_for_callback(job, entry)
            reason = "no_callback" if entry.callbacks is not None else "callbacks_off"
            self.metrics.kie_task_orphaned(reason)
            log.warning("job %d: createTask attempt %d may have created a task we never heard of (%s); "
                        "creating another: possible double payment", job.id, job.submit_attempt, reason)
        template = self.templates.get(job.template)
        assert job.prompt is not None and job.image_url is not None and template is not None
        attempt = job.submit_attempt + 1
        request = VideoRequest(prompt=job.prompt, image_url=job.image_url, model=job.model,
                               aspect_ratio=model_aspect(entry.backend, job.model,
                                                         job.aspect_ratio or template.aspect_ratio),
                               duration_s=template.duration_s,
                               callback_url=entry.callback_url(job.id, attempt))
        marked: list[Job] = []

        async def mark(key_id: str) -> None:
            # On disk before the request leaves (after the provider's pacing): a kill from here on
            # leaves the job unsure, never forgotten.
            marked.append(await self.jobs.update(
                job.id, expect={"state": JobState.SUBMITTING, "submit_attempt": attempt - 1},
                submit_attempt=attempt, submit_unsure_at=time.time(), key_id=key_id))

        with self.in_flight.hold(job.id):  # a graceful stop lets the answer come and be written
            try:
                task = await entry.backend.submit(request, before_send=mark)
            except ProviderError as err:
                return await self._submit_failed(marked[-1] if marked else job, entry, err)
            self._unwritten[job.id] = task
            await self._paid(task.task_id, job, entry, task.key_id)
            return await self._record_task(marked[-1] if marked else job, task)

    async def _record_orphan(self, task_id: str, job: Job, attempt: int) -> None:
        """A paid task no job uses: on the bill once the provider confirms it was created for this job
        (the callback body alone is never trusted)."""
        entry = self.chain.get(job.provider)
        try:
            confirmed = await entry.backend.poll(task_id, job.model, job.key_id)
        except ProviderError:
            return
        if confirmed.callback_url is None or confirmed.callback_url != entry.callback_url(job.id, attempt):
            return
        await self._paid(task_id, job, entry, None)
        if self.costs is not None and confirmed.state is not TaskState.PENDING:
            await self.costs.task_finished(task_id, success=confirmed.state is TaskState.SUCCESS,
                                           credits_consumed=confirmed.credits_consumed)

    async def _paid(self, task_id: str, job: Job | None, entry: ChainEntry | None, key_id: str | None) -> None:
        """The bill: a task exists from this moment, whatever happens to its job next."""
        if self.costs is None:
            return
        try:
            await self.costs.task_created(task_id=task_id, job_id=job.id if job else None,
                                          backend=entry.backend.name if entry else "kie",
                                          model=job.model if job else "unknown", key_id=key_id)
        except Exception as exc:  # a record, not a step of the job: the job goes on
            log.warning("task %s: could not record its cost: %s", task_id, type(exc).__name__)

    async def _submit_failed(self, job: Job, entry: ChainEntry, err: ProviderError) -> Job | None:
        if not err.outcome_unknown:  # surely no task: the marker goes, the error takes its normal course
            if job.submit_unsure_at is not None:
                job = await self.jobs.update(job.id, submit_unsure_at=None)
            return await self.outcomes.on_error(job, err, retry_state=JobState.SUBMITTING)
        # The marker stays. The retry it schedules first waits for the callback (when there are
        # callbacks) and otherwise creates a new task, counted as a possible double payment.
        job = await self.jobs.update(job.id, key_id=err.key_id or job.key_id,
                                     event=f"createTask attempt {job.submit_attempt}: outcome unknown ({err.kind})")
        return await self.outcomes.on_error(job, err, retry_state=JobState.SUBMITTING)

    async def _wait_for_callback(self, job: Job, entry: ChainEntry) -> None:
        assert job.submit_unsure_at is not None
        deadline = job.submit_unsure_at + entry.timeout_s
        log.info("job %d: waiting up to %.0fs for the callback of createTask attempt %d",
                 job.id, deadline - time.time(), job.submit_attempt)
        await self.jobs.update(job.id, run_after=deadline, claimed=0,
                               event=f"waiting for the callback of attempt {job.submit_attempt}")
        return None

    async def _record_task(self, job: Job, task: SubmittedTask) -> Job:
        self.chain.record_success(job.provider)
        log.info("job %d user %d: task %s created (key %s)", job.id, job.user_id, task.task_id, task.key_id)
        updated = await self.jobs.update(
            job.id, expect={"state": JobState.SUBMITTING}, task_id=task.task_id, key_id=task.key_id,
            submitted_at=time.time(), submit_unsure_at=None, state=JobState.GENERATING,
            event=f"task {task.task_id}")
        self._unwritten.pop(job.id, None)
        return updated

    # ---- callbacks ---------------------------------------------------------------------

    async def on_task_callback(self, task_id: str, hint: tuple[int, int] | None = None) -> bool:
        """The provider says a task changed. Its body is never trusted: a known task is polled at
        once; an unknown one is adopted only by the unsure job its URL names, after the provider
        itself confirms the task and the URL it was created with."""
        job = await self.jobs.by_task_id(task_id)
        if job is not None:
            if job.state is not JobState.GENERATING:
                return False
            wakeup = self._poll_wakeups.get(task_id)
            if wakeup is not None:
                wakeup.set()
            else:
                await self.jobs.update(job.id, run_after=time.time())
                self.wake()
            return True
        if hint is None:
            return False
        return await self._adopt(task_id, *hint)

    async def _adopt(self, task_id: str, job_id: int, attempt: int) -> bool:
        job = await self.jobs.get(job_id)
        if (job is None or job.state is not JobState.SUBMITTING or job.submit_unsure_at is None
                or job.submit_attempt != attempt):
            log.warning("callback for unknown task %s (job %d, attempt %d) matches no unsure job: "
                        "an orphaned paid task", task_id, job_id, attempt)
            self.metrics.kie_task_orphaned("late_callback")
            if job is not None:
                await self._record_orphan(task_id, job, attempt)
            return False
        entry = self.chain.get(job.provider)
        try:
            confirmed = await entry.backend.poll(task_id, job.model, job.key_id)
        except ProviderError as err:
            log.warning("job %d: task %s from a callback could not be confirmed: %s", job.id, task_id, err)
            return False
        expected = entry.callback_url(job.id, attempt)
        if confirmed.callback_url is not None and confirmed.callback_url != expected:
            log.warning("job %d: task %s was created for another callback URL; not adopted", job.id, task_id)
            return False
        try:
            await self.jobs.update(
                job.id, expect={"state": JobState.SUBMITTING, "submit_attempt": attempt}, task_id=task_id,
                submitted_at=job.submit_unsure_at, submit_unsure_at=None, state=JobState.GENERATING,
                run_after=time.time(), event=f"task {task_id} of attempt {attempt} adopted from its callback")
        except JobMoved:
            return False
        self.metrics.kie_task_adopted()
        await self._paid(task_id, job, entry, job.key_id)
        log.info("job %d: adopted task %s (createTask attempt %d) from its callback", job.id, task_id, attempt)
        self.wake()
        return True

    # ---- polling -----------------------------------------------------------------------

    async def await_result(self, job: Job) -> Job | None:
        assert job.task_id is not None
        wakeup = self._poll_wakeups.setdefault(job.task_id, asyncio.Event())
        try:
            return await self._poll_until_done(job, job.submitted_at or time.time(), wakeup)
        finally:
            self._poll_wakeups.pop(job.task_id, None)

    async def _poll_until_done(self, job: Job, submitted: float, wakeup: asyncio.Event) -> Job | None:
        assert job.task_id is not None
        entry = self.chain.get(job.provider)
        while True:
            age = time.time() - submitted
            if age > entry.timeout_s:
                return await self.outcomes.fail(job, Failure(FailureClass.TIMEOUT, f"task {job.task_id} timed out"))
            try:
                status = await entry.backend.poll(job.task_id, job.model, job.key_id)
            except ProviderError as err:
                failure = classify(err)
                if failure.cls is FailureClass.OUR_BUG:
                    # The task is unknown upstream or our query is wrong. The job has a paid task:
                    # it is never resubmitted, it ends and is refunded.
                    return await self.outcomes.give_up(job, failure)
                # A failed status query says nothing about the task: keep polling until the deadline.
                log.warning("job %d: poll of %s failed: %s", job.id, job.task_id, err)
                await self._wait_for_poll(wakeup, entry.poll_interval(age))
                continue
            if status.state is not TaskState.PENDING and self.costs is not None:
                await self.costs.task_finished(job.task_id, success=status.state is TaskState.SUCCESS,
                                               credits_consumed=status.credits_consumed)
            if status.state is TaskState.SUCCESS:
                if not status.result_urls:
                    return await self.outcomes.give_up(
                        job, Failure(FailureClass.OUR_BUG, f"task {job.task_id} succeeded without a result URL"))
                self.metrics.generation_finished(time.time() - submitted)
                return await self.jobs.update(
                    job.id, expect={"state": JobState.GENERATING}, result_url=status.result_urls[0], attempts=0,
                    state=JobState.DOWNLOADING)
            if status.state is TaskState.FAILED:
                err = ProviderError(status.fail_msg or "generation failed", kind=ErrorKind.TASK_FAILED,
                                    code=status.fail_code, key_id=job.key_id)
                return await self.outcomes.on_error(job, err, retry_state=JobState.SUBMITTING)
            await self._wait_for_poll(wakeup, entry.poll_interval(age))

    @staticmethod
    async def _wait_for_poll(wakeup: asyncio.Event, interval: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), interval)
        wakeup.clear()
