"""An ordered chain of ways to make a video, with fall-over when one is unavailable.

Entries are named in config: "kie" (the template's or the default KIE model), "kie:<model>"
(a fixed KIE model, so a chain can be a chain of models) and "sandbox" (local ffmpeg). New jobs go
to the first available entry; an entry that keeps failing for reasons a retry cannot fix soon
(temporary, billing, rate limit) is set aside for a cool-down, after which the next job probes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from neurocards.jobs.failures import FailureClass
from neurocards.providers.base import BalanceSource, KeyRotation, VideoProvider

log = logging.getLogger("neurocards.chain")

OUTAGE_CLASSES = frozenset({FailureClass.TEMPORARY, FailureClass.BILLING, FailureClass.RATE_LIMIT,
                            FailureClass.UNKNOWN})


CallbackUrls = Callable[[int, int], str]  # (job id, submit attempt) -> callBackUrl


@dataclass
class ChainEntry:
    """One way to make a video, with everything the engine needs to know about its provider."""

    name: str
    backend: VideoProvider
    fixed_model: str | None
    cost: int
    simple: bool  # a plainer video than the primary: the seller is told so
    default_model: str = ""
    keys: KeyRotation | None = None  # None: the provider has no keys to rotate
    balance: BalanceSource | None = None  # None: no account balance to watch
    callbacks: CallbackUrls | None = None  # None: the provider never calls back, polling only
    poll_interval_s: float = 10.0
    callback_poll_interval_s: float = 60.0  # with callbacks, polling is only a safety net
    timeout_s: float = 900.0  # a task running longer is failed and refunded
    cache_uploads: bool = False  # the upload URL stays valid for sibling jobs (stored on the product)
    takes_template_model: bool = False  # a template naming a model is made with that model
    failures: int = 0
    down_until: float = 0.0
    first_failure_at: float | None = field(default=None)

    def callback_url(self, job_id: int, attempt: int) -> str | None:
        return self.callbacks(job_id, attempt) if self.callbacks is not None else None

    def poll_interval(self, age_s: float) -> float:
        """KIE's guidance: poll often at first, then less; with callbacks polling is a safety net."""
        base = self.poll_interval_s
        if age_s >= 120:
            base = max(base, min(30.0, 2 * base))
        return max(base, self.callback_poll_interval_s) if self.callbacks is not None else base


class ProviderChain:
    def __init__(self, entries: list[ChainEntry], *, failures_to_switch: int = 5, cooldown_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic,
                 format_surcharge: dict[str, int] | None = None) -> None:
        if not entries:
            raise ValueError("a provider chain needs at least one entry")
        self.entries = entries
        self._by_name = {e.name: e for e in entries}
        self.failures_to_switch = failures_to_switch
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.format_surcharge = format_surcharge or {}

    @property
    def primary(self) -> ChainEntry:
        return self.entries[0]

    def get(self, name: str) -> ChainEntry:
        # A job stored with a name no longer configured still finishes on the primary.
        return self._by_name.get(name) or self.primary

    def price(self, entry: ChainEntry, aspect: str | None) -> int:
        """One video from `entry` in the format `aspect` (None: the template's, no surcharge)."""
        return entry.cost + self.format_surcharge.get(aspect or "", 0)

    @staticmethod
    def model_for(entry: ChainEntry, template_model: str | None) -> str:
        """A fixed model wins; an entry taking template models ("kie") takes the template's model,
        else the configured default."""
        if entry.fixed_model:
            return entry.fixed_model
        if entry.takes_template_model and template_model:
            return template_model
        return entry.default_model

    def backends(self) -> list[VideoProvider]:
        unique: dict[int, VideoProvider] = {}
        for entry in self.entries:
            unique.setdefault(id(entry.backend), entry.backend)
        return list(unique.values())

    def balance_sources(self) -> list[BalanceSource]:
        unique: dict[int, BalanceSource] = {}
        for entry in self.entries:
            if entry.balance is not None:
                unique.setdefault(id(entry.balance), entry.balance)
        return list(unique.values())

    def available(self, entry: ChainEntry) -> bool:
        return entry.down_until <= self.clock()

    def choose(self, exclude: str | None = None) -> ChainEntry:
        """The first available entry (a cooled-down one is probed again); the last one as a last resort."""
        for entry in self.entries:
            if entry.name != exclude and self.available(entry):
                return entry
        candidates = [e for e in self.entries if e.name != exclude] or self.entries
        return min(candidates, key=lambda e: e.down_until)

    def alternative(self, name: str) -> ChainEntry | None:
        """Another available entry for a job whose entry is down; None if there is none."""
        current = self.get(name)
        if self.available(current):
            return None
        choice = self.choose(exclude=name)
        return choice if self.available(choice) else None

    def record_failure(self, name: str, failure: FailureClass) -> None:
        if failure not in OUTAGE_CLASSES or len(self.entries) == 1:
            return
        entry = self.get(name)
        entry.failures += 1
        if entry.failures >= self.failures_to_switch and self.available(entry):
            entry.down_until = self.clock() + self.cooldown_s
            entry.failures = 0
            log.warning("provider %s set aside for %.0fs after repeated failures", entry.name, self.cooldown_s)

    def record_success(self, name: str) -> None:
        entry = self.get(name)
        if entry.failures or entry.down_until:
            log.info("provider %s works again", entry.name)
        entry.failures = 0
        entry.down_until = 0.0

    def states(self) -> list[dict[str, object]]:
        now = self.clock()
        return [{"name": e.name, "available": e.down_until <= now, "failures": e.failures,
                 "down_for_s": max(0.0, e.down_until - now), "cost": e.cost} for e in self.entries]
