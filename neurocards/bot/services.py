"""What handlers get injected: the stores and business services, nothing Telegram-specific."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from neurocards.config import Config
from neurocards.jobs.orders import Orders
from neurocards.jobs.templates import TemplateCatalog
from neurocards.store.db import Database
from neurocards.store.jobs import JobStore
from neurocards.store.users import ProductStore, UserStore


@dataclass
class Services:
    config: Config
    db: Database
    users: UserStore
    products: ProductStore
    jobs: JobStore
    orders: Orders
    templates: TemplateCatalog
    key_states: Callable[[], list[dict]] | None = None
