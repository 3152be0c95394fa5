"""OpenAI keys used in turn, a key that answers 429/403/401 set aside for a cool-down, and the
success rate of GPT calls watched over 15 minutes (metrics, and an admin alert past a threshold).

GPT stays an improvement, never a dependency: with every key cooling the template is the prompt,
at once, without a call.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from neurocards.jobs.alerts import Alerts, GptFailing

log = logging.getLogger("neurocards.gpt")

# Statuses that say "this key, not this request": rate limit, region/permission, bad key.
KEY_STATUSES = (401, 403, 429)


def gpt_key_id(key: str) -> str:
    """A stable public name for a key (logs, metrics); never the key."""
    return "oa-" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass
class GptKey:
    secret: str
    key_id: str
    cooling_until: float = 0.0
    requests: int = 0
    errors: int = 0


class GptKeyPool:
    def __init__(self, keys: list[str], cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = [GptKey(k, gpt_key_id(k)) for k in dict.fromkeys(keys)]
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._next = 0

    def __len__(self) -> int:
        return len(self.keys)

    def take(self) -> GptKey | None:
        """The next key in turn that is not cooling down; None when all are."""
        now = self.clock()
        for offset in range(len(self.keys)):
            key = self.keys[(self._next + offset) % len(self.keys)]
            if key.cooling_until <= now:
                self._next = (self._next + offset + 1) % len(self.keys)
                key.requests += 1
                return key
        return None

    def failed(self, key: GptKey, status: int | None) -> bool:
        """Count a failed call; a key-level status sets the key aside. True if it was."""
        key.errors += 1
        if status not in KEY_STATUSES:
            return False
        key.cooling_until = self.clock() + self.cooldown_s
        log.warning("GPT key %s set aside for %.0f s after HTTP %s", key.key_id, self.cooldown_s, status)
        return True

    def available(self) -> int:
        now = self.clock()
        return sum(k.cooling_until <= now for k in self.keys)

    def states(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [{"key_id": k.key_id, "state": "active" if k.cooling_until <= now else "cooling",
                 "requests": k.requests, "errors": k.errors} for k in self.keys]


class GptMetrics(Protocol):
    def gpt_call(self, ok: bool, latency_s: float, reason: str = "") -> None: ...


@dataclass
class GptWatch:
    """Outcomes of GPT calls over the last 15 minutes; alerts the admins past `failure_rate`."""

    alerts: Alerts | None
    metrics: GptMetrics | None = None
    failure_rate: float = 0.5  # 0: no alert
    min_calls: int = 10
    window_s: float = 15 * 60
    clock: Callable[[], float] = time.monotonic
    _calls: deque[tuple[float, bool]] = field(default_factory=deque)

    async def record(self, ok: bool, latency_s: float, reason: str = "", label: str = "") -> None:
        """`reason`: the failure in words (for the alert); `label`: its kind (for the metrics)."""
        if self.metrics is not None:
            self.metrics.gpt_call(ok, latency_s, label)
        now = self.clock()
        self._calls.append((now, ok))
        while self._calls and self._calls[0][0] < now - self.window_s:
            self._calls.popleft()
        if ok or self.alerts is None or self.failure_rate <= 0:
            return
        failed, total = self.counts()
        if total >= self.min_calls and failed / total >= self.failure_rate:
            await self.alerts.send("gpt:failure_rate", GptFailing(failed, total, reason))

    def counts(self) -> tuple[int, int]:
        """(failed, total) calls in the window."""
        return sum(not ok for _, ok in self._calls), len(self._calls)

