"""What happens to a job after a provider error: another key, another provider, a retry, or a refund."""

from __future__ import annotations

import logging
import time

from neurocards.config import Config
from neurocards.jobs.alerts import Alerts, JobNeedsAttention, KeyDisabled, NoPayingKey
from neurocards.jobs.chain import ChainEntry, ProviderChain
from neurocards.jobs.failures import Failure, FailureClass, classify, jittered, policy_for
from neurocards.jobs.notifier import JobNotifier, quietly
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics
from neurocards.providers.base import ErrorKind, ProviderError
from neurocards.store.jobs import Job, JobState, JobStore
from neurocards.store.users import UserStore

log = logging.getLogger("neurocards.engine")

# A task that ended in failure is paid for; a new one is tried at most this many times, and only
# for classes that a second task may fix (KIE's class table: 500 "bounded retry").
MAX_FRESH_TASKS = 1
FRESH_TASK_CLASSES = frozenset({FailureClass.TEMPORARY, FailureClass.UNKNOWN, FailureClass.RATE_LIMIT,
                                FailureClass.BILLING})


class Outcomes:
    def __init__(self, *, config: Config, jobs: JobStore, users: UserStore, chain: ProviderChain,
                 notifier: JobNotifier, templates: TemplateCatalog, alerts: Alerts, metrics: Metrics) -> None:
        self.config = config
        self.jobs = jobs
        self.users = users
        self.chain = chain
        self.notifier = notifier
        self.templates = templates
        self.alerts = alerts
        self.metrics = metrics

    async def on_error(self, job: Job, err: ProviderError, *, retry_state: JobState) -> Job | None:
        failure = classify(err)
        log.warning("job %d user %d: %s error in %s: %s", job.id, job.user_id, failure.cls, job.state, err)
        entry = self.chain.get(job.provider)
        self.chain.record_failure(job.provider, failure.cls)
        task_failed = err.kind is ErrorKind.TASK_FAILED
        if task_failed and (failure.cls not in FRESH_TASK_CLASSES or job.fresh_tasks >= MAX_FRESH_TASKS):
            return await self.give_up(job, failure)
        fresh: dict[str, object] = {"fresh_tasks": job.fresh_tasks + 1} if task_failed else {}
        if failure.cls is FailureClass.BILLING and (switched := await self._next_key(job, entry, err, failure,
                                                                                     retry_state, fresh)):
            return switched
        if retry_state is not JobState.DOWNLOADING and (switched := await self._fall_over(job, failure)):
            return switched
        policy = policy_for(failure.cls, self.config.generation.retry)
        if failure.cls is FailureClass.UNKNOWN:  # pragma: no mutate - equivalent: it only decides whether a log line is written
            log.warning("unclassified provider error (add a rule?): code %s, %r", failure.code, err.message)
        if policy.retries and job.attempts < len(policy.delays_s):
            return await self._retry(job, entry, err, failure, retry_state, policy.delays_s[job.attempts], fresh)
        return await self.give_up(job, failure)

    async def _next_key(self, job: Job, entry: ChainEntry, err: ProviderError, failure: Failure,
                        retry_state: JobState, fresh: dict[str, object]) -> Job | None:
        keys = entry.keys
        if err.key_id and keys is not None:
            keys.disable_key(err.key_id, failure.text)
            await self.alerts.send(f"key:{err.key_id}",
                                   KeyDisabled(err.key_id, failure.text[:200], keys.available_keys()))
            if keys.available_keys() > 0:  # another key may pay: try it now, no attempt used
                task_id = None if retry_state is JobState.SUBMITTING else job.task_id  # pragma: no mutate - equivalent: a QUEUED job has no task, a download error names no key, and a SUBMITTING job's task id is replaced by its next createTask before any step reads it
                return await self.jobs.update(job.id, expect={"state": job.state}, state=retry_state,
                                              task_id=task_id, **fresh,
                                              event=f"billing on key {err.key_id}, next key")
        if keys is not None and keys.available_keys() == 0:
            await self.alerts.send(
                "billing:no_keys",  # pragma: no mutate - equivalent: a dedupe key; any string no other alert uses acts alike
                NoPayingKey(failure.text[:200]))
        return None

    async def _retry(self, job: Job, entry: ChainEntry, err: ProviderError, failure: Failure,
                     retry_state: JobState, delay: float, fresh: dict[str, object]) -> None:
        delay = jittered(delay, self.config.generation.retry.jitter)
        if failure.cls is FailureClass.RATE_LIMIT and err.key_id and entry.keys is not None:
            entry.keys.cool_down_key(err.key_id, delay)
        changes: dict[str, object] = {
            "attempts": job.attempts + 1, "state": retry_state, "run_after": time.time() + delay,
            "claimed": 0, "error_class": failure.cls.value, **fresh,
            "error_text": failure.text[:1000],  # pragma: no mutate - equivalent: only a failed job's text is read, and the refund writes that one
        }
        if retry_state is JobState.SUBMITTING:
            changes["task_id"] = None
        self.metrics.job_retry(failure.cls.value)
        notify = not job.retry_notified and failure.cls is not FailureClass.RATE_LIMIT
        if notify:
            changes["retry_notified"] = True
        updated = await self.jobs.update(
            job.id, expect={"state": job.state}, **changes,
            event=f"retry {job.attempts + 1} in {round(delay, 3):g}s after {failure.cls}")
        if notify:
            await quietly(self.notifier.job_retrying(updated))
        return None  # the slot is free; the dispatcher picks the job up at run_after

    async def give_up(self, job: Job, failure: Failure) -> Job:
        if policy_for(failure.cls, self.config.generation.retry).alert_admins:
            await self.alerts.send(f"{failure.cls}:{failure.code}",
                                   JobNeedsAttention(job.id, failure.cls.value, failure.code, failure.text[:300]))
        return await self.fail(job, failure)

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
        target_price = self.chain.price(target, job.aspect_ratio)
        price = target_price if target_price < job.cost else None
        return await self.jobs.update(
            job.id, expect={"state": job.state}, provider=target.name, model=model, state=JobState.QUEUED, image_url=None, task_id=None,
            key_id=None, attempts=0, price=price, submit_unsure_at=None,
            event=f"provider {job.provider} unavailable, moved to {target.name}")

    async def fail(self, job: Job, failure: Failure) -> Job:
        failed, refunded = await self.jobs.fail_and_refund(
            job.id, error_class=failure.cls.value, error_text=failure.text)
        self.metrics.job_failed(failure.cls.value, failed.cost if refunded else 0)
        if refunded:
            balance = await self.users.balance(job.user_id)
            await quietly(self.notifier.job_failed(failed, failure, job.attempts + 1, balance))
        return failed
