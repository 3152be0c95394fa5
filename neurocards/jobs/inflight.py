"""Requests whose outcome a graceful stop waits for: a paid createTask, a sendVideo.

Cancelling one half-way leaves its outcome unknown (a possible second task or second copy after
the restart); letting it finish and recording the answer costs a few seconds of the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class RequestsInFlight:
    def __init__(self) -> None:
        self._jobs: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def hold(self, job_id: int) -> Iterator[None]:
        self._jobs.add(job_id)
        self._idle.clear()
        try:
            yield
        finally:
            self._jobs.discard(job_id)
            if not self._jobs:
                self._idle.set()

    def __len__(self) -> int:
        return len(self._jobs)

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no request is out (or `timeout_s` passed); True when none is left."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return not self._jobs
