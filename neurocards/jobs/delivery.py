"""Delivering a finished video to the chat: size check, compression, outages, duplicates, refunds.

The video is paid for by now, so delivery keeps it: network errors and Telegram 5xx are retried
with a growing wait for `delivery.give_up_after_s` (the file stays on disk, the job leaves its
slot between attempts, the seller hears once that the video is waiting for Telegram); only then
is the job refunded. A sendVideo is marked on disk before it goes out; one whose outcome is
unknown (timeout, reset, a kill mid-request) may have reached the chat, so it is repeated at most
once, and that repeat is counted (`neurocards_telegram_video_resends_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from neurocards.config import Config
from neurocards.jobs.chain import ProviderChain
from neurocards.jobs.failures import jittered
from neurocards.jobs.inflight import RequestsInFlight
from neurocards.jobs.notifier import DeliveryError, DeliveryErrorKind, JobNotifier, quietly
from neurocards.metrics import Metrics
from neurocards.providers.video_tools import compress_to_fit
from neurocards.store.jobs import Job, JobState, JobStore
from neurocards.store.users import UserStore

log = logging.getLogger("neurocards.delivery")

MAX_UNSURE_RESENDS = 1  # a video that may already be in the chat is sent again at most once
NOTIFY_AFTER_FAILURES = 2  # one blip is not worth a message; a second failed attempt is


class Delivery:
    def __init__(self, *, config: Config, jobs: JobStore, users: UserStore, notifier: JobNotifier,
                 chain: ProviderChain, metrics: Metrics, in_flight: RequestsInFlight | None = None,
                 on_delivered: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.jobs = jobs
        self.users = users
        self.notifier = notifier
        self.chain = chain
        self.metrics = metrics
        self.in_flight = in_flight if in_flight is not None else RequestsInFlight()
        # Called with the user id after each delivery (e.g. a referral bonus on the first video).
        self.on_delivered = on_delivered

    async def send(self, job: Job) -> Job | None:
        path = Path(job.video_path) if job.video_path else None
        if (path is None or not path.exists()) and not job.video_file_id:
            if job.result_url:  # the file vanished (swept, disk trouble): fetch it again
                return await self.jobs.update(job.id, video_path=None, state=JobState.DOWNLOADING)
            return await self.fail(job, "video file missing")
        limit = self.config.telegram.max_upload_mb * 1024 * 1024
        if path is not None and not job.video_file_id and path.stat().st_size > limit:
            smaller = path.with_name(f"{job.id}.small.mp4")
            size = await compress_to_fit(path, smaller, limit)
            if size is None:
                return await self.fail(job, f"video of {path.stat().st_size} bytes cannot fit {limit}")
            path.unlink(missing_ok=True)
            job = await self.jobs.update(job.id, video_path=str(smaller),
                                         event=f"compressed to {size} bytes")
            path = smaller
        if job.send_pending:  # the last run died while a sendVideo was out: it may have arrived
            if job.send_unsure >= MAX_UNSURE_RESENDS:
                return await self._unconfirmed(job, path)
            job = await self._count_unsure(job, "the previous run stopped mid-sendVideo")
        return await self._attempts(job, path)

    async def _attempts(self, job: Job, path: Path | None) -> Job | None:
        simple = self.chain.get(job.provider).simple
        while True:
            balance = await self.users.balance(job.user_id)
            job = await self.jobs.update(job.id, expect={"state": JobState.SENDING}, send_pending=True)
            started = time.monotonic()
            try:
                with self.in_flight.hold(job.id):  # a graceful stop lets the answer come and be written
                    file_id = await self.notifier.deliver_video(job, path, balance, simple=simple,
                                                                timeout_s=self.upload_timeout(path))
                    job = await self._mark_done(job, file_id)
                return await self._delivered(job, path, time.monotonic() - started)
            except DeliveryError as err:
                self.metrics.telegram_send_error(err.kind.value)
                if err.kind is DeliveryErrorKind.RETRY_AFTER:  # answered: nothing was sent
                    job = await self.jobs.update(job.id, send_pending=0)
                    await asyncio.sleep(err.retry_after or 1.0)
                    continue
                if err.kind is DeliveryErrorKind.UNSURE:
                    if job.send_unsure >= MAX_UNSURE_RESENDS:
                        return await self.fail(job, f"sendVideo outcome unknown twice: {err.message}")
                    job = await self._count_unsure(job, err.message)
                    return await self._later(job, err)
                job = await self.jobs.update(job.id, send_pending=0)
                if err.kind is DeliveryErrorKind.NETWORK:
                    return await self._later(job, err)
                log.warning("job %d: delivery failed (%s): %s", job.id, err.kind, err.message)
                return await self.fail(job, f"{err.kind}: {err.message}",
                                       notify=err.kind is not DeliveryErrorKind.FORBIDDEN)

    def upload_timeout(self, path: Path | None) -> float:
        """The sendVideo timeout: the configured one plus the file's time on the slowest uplink."""
        base = self.config.telegram.request_timeout_s
        if path is None:
            return base
        try:
            size = path.stat().st_size
        except OSError:
            return base
        return base + size * 8 / (self.config.delivery.min_upload_kbps * 1000)

    async def _count_unsure(self, job: Job, why: str) -> Job:
        self.metrics.video_resent_unsure()
        log.warning("job %d: sendVideo outcome unknown (%s); sending once more, the seller may get two copies",
                    job.id, why)
        return await self.jobs.update(job.id, send_unsure=job.send_unsure + 1, send_pending=0,
                                      event=f"sendVideo outcome unknown: {why[:200]}")

    def _delay(self, failures: int) -> float:
        delays = self.config.generation.retry.delivery_delays_s or (3.0,)
        cap = self.config.delivery.max_delay_s
        base = delays[failures] if failures < len(delays) else delays[-1] * 2 ** (failures - len(delays) + 1)
        return jittered(min(base, cap), self.config.generation.retry.jitter)

    async def _later(self, job: Job, err: DeliveryError) -> Job | None:
        """Telegram is unreachable or failing: keep the file and try again after a growing wait."""
        now = time.time()
        since = job.delivery_failing_since or now
        left = since + self.config.delivery.give_up_after_s - now
        if left <= 0:
            log.warning("job %d: Telegram refused the video for %.0fs; giving up", job.id, now - since)
            return await self.fail(job, f"{err.kind} for {now - since:.0f}s: {err.message}")
        delay = min(self._delay(job.attempts), left)
        job = await self.jobs.update(
            job.id, attempts=job.attempts + 1, delivery_failing_since=since, run_after=now + delay, claimed=0,
            event=f"delivery retry {job.attempts + 1} in {round(delay, 3):g}s after {err.kind}")
        if not job.delivery_notified and job.attempts >= NOTIFY_AFTER_FAILURES:
            try:
                await self.notifier.delivery_delayed(job)
                await self.jobs.update(job.id, delivery_notified=True)
            except Exception as exc:  # Telegram is down for messages too: tell them next time
                log.info("job %d: 'waiting for Telegram' notice not sent yet: %s", job.id, exc)
        return None

    async def _unconfirmed(self, job: Job, path: Path | None) -> Job:
        """The bot died during the repeat too. No error came back from either copy, so the seller
        almost surely has the video: a third copy or a refund would both be wrong. The job ends
        as delivered without Telegram's confirmation, counted for the operator."""
        self.metrics.video_unconfirmed()
        log.warning("job %d: sendVideo outcome unknown twice (killed mid-request); ending as delivered, "
                    "unconfirmed", job.id)
        done = await self.jobs.update(
            job.id, expect={"state": JobState.SENDING}, send_pending=0, state=JobState.DONE, finished_at=time.time(),
            event="delivered, unconfirmed: the bot stopped during both sendVideo attempts")
        return await self._delivered(done, path, None)  # no answer came: the upload time is unknown

    async def _mark_done(self, job: Job, file_id: str) -> Job:
        return await self.jobs.update(
            job.id, expect={"state": JobState.SENDING}, video_file_id=file_id, send_pending=0, state=JobState.DONE,
            finished_at=time.time(),
            event="delivered")

    async def _delivered(self, done: Job, path: Path | None, sent_s: float | None) -> Job:
        job = done
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
            done = await self.jobs.update(job.id, video_path=None, allow_finished=True)
        self.metrics.job_delivered(None, sent_s)
        if self.on_delivered is not None:
            await quietly(self.on_delivered(job.user_id))
        log.info("job %d user %d: delivered", job.id, job.user_id)
        return done

    async def fail(self, job: Job, text: str, *, notify: bool = True) -> Job:
        failed, refunded = await self.jobs.fail_and_refund(job.id, error_class="delivery", error_text=text)
        self.metrics.job_failed("delivery", failed.cost if refunded else 0)
        if failed.video_path:
            with contextlib.suppress(OSError):
                Path(failed.video_path).unlink()
        if refunded and notify:
            balance = await self.users.balance(job.user_id)
            await quietly(self.notifier.delivery_failed(failed, balance))
        return failed
