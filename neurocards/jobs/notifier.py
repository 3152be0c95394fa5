"""What the engine needs from the chat side, without knowing about Telegram.

The bot layer implements `JobNotifier`; texts and buttons live there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from neurocards.jobs.alerts import OperatorAlert
from neurocards.jobs.failures import Failure
from neurocards.store.jobs import Job

log = logging.getLogger("neurocards.notify")


class DeliveryErrorKind(StrEnum):
    RETRY_AFTER = "retry_after"  # flood control: wait and send again, not a failed attempt
    NETWORK = "network"  # not delivered (no connection, Telegram 5xx): retried with a growing wait
    UNSURE = "unsure"  # timeout or reset after the upload went out: it may be in the chat already
    TOO_LARGE = "too_large"  # over the Bot API server's upload limit
    REJECTED = "rejected"  # Bad Request: the media or the call was refused
    FORBIDDEN = "forbidden"  # the user blocked the bot: stop at once


class DeliveryError(Exception):
    def __init__(self, kind: DeliveryErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


class JobNotifier(Protocol):
    async def deliver_video(self, job: Job, path: Path | None, balance: int, simple: bool = False,
                            timeout_s: float | None = None) -> str:
        """Send the finished video (from `path`, or by job.video_file_id); return Telegram's file_id.

        `simple`: made by a fallback provider, the seller is told it is a simpler video.
        `timeout_s`: how long the upload may take (it grows with the file size).

        Raises DeliveryError."""

    async def job_retrying(self, job: Job) -> None: ...

    async def job_failed(self, job: Job, failure: Failure, attempts: int, balance: int) -> None: ...

    async def delivery_failed(self, job: Job, balance: int) -> None: ...

    async def delivery_delayed(self, job: Job) -> None:
        """The video is ready but Telegram does not take it yet (raises if this message fails too)."""

    async def job_waiting(self, job: Job, eta_minutes: int) -> None: ...

    async def alert_admins(self, alert: OperatorAlert) -> None: ...


async def quietly(call: Awaitable[None]) -> None:
    """A message about a job must never break the job itself."""
    try:
        await call
    except Exception as exc:
        log.warning("notification failed: %s", exc)
