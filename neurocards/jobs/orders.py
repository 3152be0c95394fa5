"""Turning a confirmed order into charged jobs, and what it costs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from neurocards.config import Config
from neurocards.jobs.templates import TemplateCatalog
from neurocards.store.jobs import JobStore, NewJobs

QUANTITIES = (1, 2, 3, 5)


@dataclass(frozen=True)
class Quote:
    count: int
    cost: int
    balance: int

    @property
    def affordable(self) -> bool:
        return self.balance >= self.cost

    @property
    def missing(self) -> int:
        return max(0, self.cost - self.balance)

    @property
    def balance_after(self) -> int:
        return self.balance - self.cost


class Orders:
    def __init__(self, config: Config, jobs: JobStore, templates: TemplateCatalog, provider_name: str,
                 on_new_jobs: Callable[[], None] | None = None) -> None:
        self.config = config
        self.jobs = jobs
        self.templates = templates
        self.provider_name = provider_name
        self._on_new_jobs = on_new_jobs

    def quote(self, count: int, balance: int) -> Quote:
        return Quote(count=count, cost=count * self.config.credits.per_video, balance=balance)

    def model_for(self, template_id: str) -> str:
        template = self.templates.get(template_id)
        if self.provider_name != "kie":
            return self.provider_name
        return (template.model if template and template.model else None) or self.config.kie.model

    async def launch(self, *, user_id: int, chat_id: int, product_id: int, template_id: str, wishes: str,
                     count: int, request_key: str) -> NewJobs:
        """Create and charge `count` jobs; raises InsufficientCredits or DuplicateRequest."""
        if count not in QUANTITIES:
            raise ValueError(f"quantity {count} not offered")
        if self.templates.get(template_id) is None:
            raise KeyError(template_id)
        created = await self.jobs.create_charged(
            user_id=user_id, chat_id=chat_id, product_id=product_id, request_key=request_key,
            template=template_id, wishes=wishes, provider=self.provider_name,
            model=self.model_for(template_id), count=count, cost_each=self.config.credits.per_video,
        )
        if self._on_new_jobs is not None:
            self._on_new_jobs()
        return created
