"""Delivering a finished video to the chat: size check, compression, flood control, refunds."""

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
from neurocards.jobs.notifier import DeliveryError, DeliveryErrorKind, JobNotifier, quietly
from neurocards.metrics import Metrics
from neurocards.providers.video_tools import compress_to_fit
from neurocards.store.jobs import Job, JobState, JobStore
from neurocards.store.users import UserStore

log = logging.getLogger("neurocards.delivery")


class Delivery:
    def __init__(self, *, config: Config, jobs: JobStore, users: UserStore, notifier: JobNotifier,
                 chain: ProviderChain, metrics: Metrics,
                 on_delivered: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.jobs = jobs
        self.users = users
        self.notifier = notifier
        self.chain = chain
        self.metrics = metrics
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
            job = await self.jobs.update(job.id, video_path=str(smaller), event=f"compressed to {size} bytes")
            path = smaller
        delays = self.config.generation.retry.delivery_delays_s
        network_failures = 0
        while True:
            balance = await self.users.balance(job.user_id)
            started = time.monotonic()
            try:
                file_id = await self.notifier.deliver_video(job, path, balance,
                                                            simple=self.chain.get(job.provider).simple)
                sent_s = time.monotonic() - started
                break
            except DeliveryError as err:
                self.metrics.telegram_send_error(err.kind.value)
                if err.kind is DeliveryErrorKind.RETRY_AFTER:
                    await asyncio.sleep(err.retry_after or 1.0)
                    continue
                if err.kind is DeliveryErrorKind.NETWORK and network_failures < len(delays):
                    await asyncio.sleep(jittered(delays[network_failures], self.config.generation.retry.jitter))
                    network_failures += 1
                    continue
                log.warning("job %d: delivery failed (%s): %s", job.id, err.kind, err.message)
                return await self.fail(job, f"{err.kind}: {err.message}",
                                                 notify=err.kind is not DeliveryErrorKind.FORBIDDEN)
        done = await self.jobs.update(
            job.id, video_file_id=file_id, state=JobState.DONE, finished_at=time.time(), event="delivered")
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
