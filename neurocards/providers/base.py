"""The contract between the job engine and any source of videos.

A provider turns (photo, prompt) into a video file in three resumable steps:
submit a task, poll it, download the result. Everything the engine needs to
resume after a crash (task id, key id) is returned as plain data so it can be
persisted before the next step starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable


class ErrorKind(StrEnum):
    """How a provider call failed, before any business classification."""

    API = "api"  # the provider answered with an error (HTTP status or body `code`)
    TASK_FAILED = "task_failed"  # the task itself ended in failure (failCode/failMsg)
    CONNECT = "connect"  # the request surely never left: refused, DNS, connect timeout, proxy
    NETWORK = "network"  # the connection broke after the request may have gone out (reset)
    TIMEOUT = "timeout"  # our HTTP timeout while waiting for the answer
    MALFORMED = "malformed"  # not JSON, or JSON of an unexpected shape
    DOWNLOAD = "download"  # the result file could not be fetched


# A gateway gave up waiting for the origin, which may still have done the work.
GATEWAY_TIMEOUTS = frozenset({504, 524})


class ProviderError(Exception):
    """A failed provider call. Never carries an API key or a bot token."""

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        http_status: int | None = None,
        code: int | str | None = None,
        key_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.http_status = http_status
        self.code = code
        self.key_id = key_id

    @property
    def outcome_unknown(self) -> bool:
        """The request may have reached the provider and taken effect (a task may exist)."""
        return self.kind in (ErrorKind.NETWORK, ErrorKind.TIMEOUT, ErrorKind.MALFORMED) or (
            self.kind is ErrorKind.API and self.http_status in GATEWAY_TIMEOUTS)

    def __str__(self) -> str:
        parts = [self.kind.value]
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        if self.code is not None:
            parts.append(f"code={self.code}")
        return f"[{' '.join(parts)}] {self.message}"


class TaskState(StrEnum):
    PENDING = "pending"  # waiting / queuing / generating upstream
    SUCCESS = "success"
    FAILED = "failed"


@dataclass(frozen=True)
class VideoRequest:
    prompt: str
    image_url: str
    model: str
    aspect_ratio: str = "9:16"
    duration_s: int = 5
    callback_url: str | None = None
    # Extra model-specific input fields from the template (operator-controlled).
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class SubmittedTask:
    task_id: str
    key_id: str  # stable, non-secret id of the API key that created the task


@dataclass(frozen=True)
class TaskStatus:
    state: TaskState
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_msg: str | None = None
    progress: int | None = None
    # The callBackUrl the task was created with, as the provider reports it (None: unknown).
    callback_url: str | None = None
    # What the task cost at the provider, where it says so (KIE: recordInfo's creditsConsumed).
    credits_consumed: float | None = None


BeforeSend = Callable[[str], Awaitable[None]]


@runtime_checkable
class KeyRotation(Protocol):
    """A provider paying with several API keys. The engine reports what a key's errors mean."""

    def disable_key(self, key_id: str, reason: str) -> bool:
        """Stop paying with the key for a while (billing trouble); False for an unknown key."""

    def cool_down_key(self, key_id: str, seconds: float) -> bool:
        """Pause new tasks on the key (and its account) after a rate limit."""

    def available_keys(self) -> int:
        """Keys that can still pay (a cooling key counts: it is only paused)."""


@runtime_checkable
class BalanceSource(Protocol):
    """An account balance the operator should hear about before it runs out."""

    async def get_credits(self) -> float: ...


class VideoProvider(Protocol):
    """What the engine calls. Implementations: KIE (real), sandbox (local ffmpeg)."""

    name: str

    async def upload_image(self, data: bytes, filename: str) -> str:
        """Store the photo where the provider can read it; return its URL."""

    def output_aspect(self, model: str, aspect: str) -> str:
        """The shape (W:H) `model` makes when asked for `aspect` (the wanted one if it can)."""

    async def submit(self, request: VideoRequest, before_send: BeforeSend | None = None) -> SubmittedTask:
        """Create the (paid) task. `before_send(key_id)` is awaited right before the request
        leaves, after any pacing: the caller records that a task may exist from then on."""

    async def poll(self, task_id: str, model: str, key_id: str | None) -> TaskStatus: ...

    async def download(self, url: str, dest: Path, max_bytes: int) -> int:
        """Stream the result into `dest` (atomically); return its size in bytes."""

    async def aclose(self) -> None: ...
