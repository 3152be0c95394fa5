"""Turning a confirmed order into charged jobs, and what it costs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from neurocards.config import Config
from neurocards.jobs.chain import ProviderChain
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics
from neurocards.store.jobs import JobStore
from neurocards.store.orders import NewOrder, OrderStore

QUANTITIES = (1, 2, 3, 5)
MAX_PRODUCTS = 10  # an album holds at most 10 photos


@dataclass(frozen=True)
class Quote:
    count: int
    cost: int
    balance: int
    simple: bool = False  # the main way to make videos is unavailable; a plainer one is used
    cheaper: bool = False  # ...and it costs less than the main one

    @property
    def affordable(self) -> bool:
        return self.balance >= self.cost


@dataclass(frozen=True)
class BalanceView:
    """A balance next to the price of one video now: what the seller should be told about it."""

    balance: int
    price: int  # one video from the provider new orders go to now
    low_videos: int  # warn below this many videos (0: never)

    @property
    def videos_left(self) -> int:
        return self.balance // self.price if self.price > 0 else 0

    @property
    def low(self) -> bool:
        return self.videos_left < self.low_videos

    @property
    def short(self) -> bool:
        """Not enough for one more video: offer the top-up right there."""
        return self.balance < self.price


class LimitReached(Exception):
    """A per-user limit stops this order; `kind` says which, `retry_in_s` when it resets."""

    def __init__(self, kind: str, limit: int, retry_in_s: int) -> None:
        super().__init__(kind)  # pragma: no mutate - equivalent: the message only names the limit in a traceback; callers read .kind
        self.kind = kind  # per_day | too_soon | in_flight
        self.limit = limit
        self.retry_in_s = retry_in_s


class Orders:
    def __init__(self, config: Config, jobs: JobStore, templates: TemplateCatalog, chain: ProviderChain,
                 on_new_jobs: Callable[[], None] | None = None, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.jobs = jobs
        self.orders = OrderStore(jobs.db)
        self.templates = templates
        self.chain = chain
        self._on_new_jobs = on_new_jobs

    def quote(self, count: int, balance: int, aspect: str | None = None) -> Quote:
        entry = self.chain.choose()
        return Quote(count=count, cost=count * self.chain.price(entry, aspect), balance=balance,
                     simple=entry.simple, cheaper=entry.cost < self.chain.primary.cost)

    def balance_view(self, balance: int) -> BalanceView:
        return BalanceView(balance=balance, price=self.chain.choose().cost,
                           low_videos=self.config.credits.low_balance_videos)

    async def launch(self, *, user_id: int, chat_id: int, product_ids: list[int], template_id: str, wishes: str,
                     count: int, request_key: str, aspect: str | None = None) -> NewOrder:
        """One order: `count` videos of each product, all charged in one transaction.

        Raises InsufficientCredits (nothing charged), DuplicateRequest or LimitReached."""
        if count not in QUANTITIES:
            raise ValueError(f"quantity {count} not offered")
        if not 1 <= len(product_ids) <= MAX_PRODUCTS:
            raise ValueError(f"{len(product_ids)} products in one order")
        template = self.templates.get(template_id)
        if template is None:
            raise KeyError(template_id)  # pragma: no mutate - equivalent: the key only names the template in a traceback
        await self.check_limits(user_id, count * len(product_ids))
        entry = self.chain.choose()
        price = self.chain.price(entry, aspect)
        created = await self.orders.create_charged(
            user_id=user_id, chat_id=chat_id, request_key=request_key, product_ids=product_ids,
            per_product=count, template=template_id, wishes=wishes, provider=entry.name,
            model=self.chain.model_for(entry, template.model), cost_each=price, aspect_ratio=aspect,
        )
        if self.metrics is not None:
            self.metrics.credits_charged(price * len(created.job_ids))
        if self._on_new_jobs is not None:
            self._on_new_jobs()
        return created

    async def check_limits(self, user_id: int, count: int) -> None:
        limits = self.config.limits
        now = time.time()
        day_start = now - now % 86400
        recent, last = await self.jobs.user_activity(user_id, day_start)
        if limits.min_seconds_between_orders and last is not None \
                and now - last < limits.min_seconds_between_orders:
            raise LimitReached("too_soon", limits.min_seconds_between_orders,
                               math.ceil(limits.min_seconds_between_orders - (now - last)))
        if limits.videos_per_day and recent + count > limits.videos_per_day:
            raise LimitReached("per_day", limits.videos_per_day, math.ceil(day_start + 86400 - now))
        # limits.max_jobs_in_flight is not a reason to refuse: the engine runs that many of a
        # user's jobs at once and the rest of the order waits in the queue (JobStore.per_user_running).
