"""Admin alerts, de-duplicated: the same alert key is sent at most once per interval.

An alert is a fact (one of the dataclasses below); the sink words it for the operators
(neurocards/bot/texts.py, with the other Russian texts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from neurocards.providers.base import BalanceSource
from neurocards.store.db import Database
from neurocards.store.monitoring import outcomes_since

log = logging.getLogger("neurocards.alerts")


@dataclass(frozen=True)
class LowBalance:
    balance: float
    threshold: float


@dataclass(frozen=True)
class BalanceRunningOut:
    balance: float
    days_left: float  # at the average spend of the last days


@dataclass(frozen=True)
class EngineStalled:
    age_s: float


@dataclass(frozen=True)
class FailureRate:
    failed: int
    total: int


@dataclass(frozen=True)
class KeyDisabled:
    key_id: str  # the key's public id, never the key
    reason: str
    keys_left: int


@dataclass(frozen=True)
class NoPayingKey:
    reason: str


@dataclass(frozen=True)
class JobsResumed:
    count: int


@dataclass(frozen=True)
class JobNeedsAttention:
    job_id: int
    failure_class: str
    code: int | None
    text: str


@dataclass(frozen=True)
class GptFailing:
    failed: int  # GPT calls that failed over the last 15 minutes...
    total: int  # ...of this many
    reason: str  # the latest failure, e.g. "HTTP 429 RateLimitError"


OperatorAlert = (LowBalance | BalanceRunningOut | EngineStalled | FailureRate | KeyDisabled | NoPayingKey | JobsResumed
                 | JobNeedsAttention | GptFailing)


class AlertSink(Protocol):
    async def alert_admins(self, alert: OperatorAlert) -> None: ...


class Alerts:
    def __init__(self, sink: AlertSink, *, min_interval_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._last: dict[str, float] = {}

    async def send(self, key: str, alert: OperatorAlert) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.min_interval_s:
            return False
        self._last[key] = now
        if len(self._last) > 1000:  # keys are few in practice; never let them grow without bound
            oldest = sorted(self._last, key=self._last.__getitem__)[:500]
            for k in oldest:
                del self._last[k]
        log.warning("admin alert [%s]: %s", key, alert)
        try:
            await self.sink.alert_admins(alert)
        except Exception as exc:
            log.warning("admin alert could not be sent: %s", type(exc).__name__)
        return True

    def reset(self, key: str) -> None:
        self._last.pop(key, None)


class BalanceWatch:
    """Warns the admins while the KIE account balance is below the threshold, or lasts fewer than
    `min_days` days at the recent spend (`daily_spend`), before it runs out."""

    def __init__(self, provider: BalanceSource | None, alerts: Alerts, threshold: float, *, min_days: float = 0.0,
                 daily_spend: Callable[[], Awaitable[float]] | None = None) -> None:
        self.provider = provider
        self.alerts = alerts
        self.threshold = threshold
        self.min_days = min_days
        self.daily_spend = daily_spend
        self.last_balance: float | None = None

    async def check(self) -> float | None:
        if self.provider is None:
            return None
        try:
            balance = float(await self.provider.get_credits())
        except Exception as exc:
            log.warning("KIE balance check failed: %s", exc)
            return None
        self.last_balance = balance
        if 0 < self.threshold and balance < self.threshold:
            await self.alerts.send("kie:low_balance", LowBalance(balance, self.threshold))
        else:
            self.alerts.reset("kie:low_balance")
        spend = await self.daily_spend() if self.daily_spend is not None and self.min_days > 0 else 0.0
        if spend > 0 and balance / spend < self.min_days:
            await self.alerts.send("kie:days_left", BalanceRunningOut(balance, balance / spend))
        else:
            self.alerts.reset("kie:days_left")
        return balance


class Watchdog:
    """Tells the admins when things go wrong quietly: many failures lately, or a stalled engine."""

    WINDOW_S = 15 * 60

    def __init__(self, db: Database, alerts: Alerts, *, failure_rate: float, min_jobs: int,
                 heartbeat_age: Callable[[], float], max_heartbeat_age_s: float) -> None:
        self.db = db
        self.alerts = alerts
        self.failure_rate = failure_rate
        self.min_jobs = min_jobs
        self.heartbeat_age = heartbeat_age
        self.max_heartbeat_age_s = max_heartbeat_age_s

    async def check(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        age = self.heartbeat_age()
        if age > self.max_heartbeat_age_s:
            await self.alerts.send("engine:stalled", EngineStalled(age))
        total, failed = await outcomes_since(self.db, now - self.WINDOW_S)
        if self.failure_rate > 0 and total >= self.min_jobs and failed / total >= self.failure_rate:
            await self.alerts.send("jobs:failure_rate", FailureRate(failed, total))
