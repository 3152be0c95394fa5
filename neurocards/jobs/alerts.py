"""Admin alerts, de-duplicated: the same alert key is sent at most once per interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("neurocards.alerts")


class AlertSink(Protocol):
    async def alert_admins(self, text: str) -> None: ...


class Alerts:
    def __init__(self, sink: AlertSink, *, min_interval_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._last: dict[str, float] = {}

    async def send(self, key: str, text: str) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.min_interval_s:
            return False
        self._last[key] = now
        if len(self._last) > 1000:  # keys are few in practice; never let them grow without bound
            oldest = sorted(self._last, key=self._last.__getitem__)[:500]
            for k in oldest:
                del self._last[k]
        log.warning("admin alert [%s]: %s", key, text)
        try:
            await self.sink.alert_admins(text)
        except Exception as exc:
            log.warning("admin alert could not be sent: %s", type(exc).__name__)
        return True

    def reset(self, key: str) -> None:
        self._last.pop(key, None)


class BalanceWatch:
    """Warns the admins while the KIE account balance is below the threshold (before it runs out)."""

    def __init__(self, provider: object, alerts: Alerts, threshold: float) -> None:
        self.provider = provider
        self.alerts = alerts
        self.threshold = threshold
        self.last_balance: float | None = None

    async def check(self) -> float | None:
        get_credits = getattr(self.provider, "get_credits", None)
        if get_credits is None or self.threshold <= 0:
            return None
        try:
            balance = float(await get_credits())
        except Exception as exc:
            log.warning("KIE balance check failed: %s", exc)
            return None
        self.last_balance = balance
        if balance < self.threshold:
            await self.alerts.send("kie:low_balance",
                                   f"KIE: на счёте осталось {balance:g} кредитов (порог {self.threshold:g}). "
                                   "Пополните баланс, пока генерация не остановилась.")
        else:
            self.alerts.reset("kie:low_balance")
        return balance
