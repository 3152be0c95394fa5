"""Business services below the handlers (orders, payments, referrals, credits, promo codes, admin
actions, product photos). `Services` is what handlers get injected: the stores and these services,
nothing Telegram-specific."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from neurocards.config import Config
from neurocards.jobs.chain import ProviderChain
from neurocards.jobs.templates import TemplateCatalog
from neurocards.metrics import Metrics
from neurocards.services.orders import Orders
from neurocards.services.payments import Payments
from neurocards.services.promo import Promos
from neurocards.services.referrals import BonusCallback, Referrals
from neurocards.store.activity import ActivityStore
from neurocards.store.broadcasts import Broadcast, BroadcastStore
from neurocards.store.costs import CostStore
from neurocards.store.db import Database
from neurocards.store.history import HistoryStore
from neurocards.store.jobs import JobStore
from neurocards.store.payments import PaymentStore
from neurocards.store.promo import PromoStore
from neurocards.store.referrals import ReferralStore
from neurocards.store.statement import StatementStore
from neurocards.store.users import ProductStore, UserStore


class BroadcastLauncher(Protocol):
    def launch(self, broadcast: Broadcast) -> None: ...


@dataclass
class Services:
    config: Config
    db: Database
    users: UserStore
    products: ProductStore
    jobs: JobStore
    templates: TemplateCatalog
    orders: Orders
    activity: ActivityStore
    history: HistoryStore
    referrals: Referrals
    payments: Payments
    promos: Promos
    broadcasts: BroadcastStore
    statement: StatementStore
    costs: CostStore
    key_states: Callable[[], list[dict]] | None = None
    # Delivers confirmed broadcasts; set by the application once the Bot exists.
    broadcaster: BroadcastLauncher | None = None
    # Called with the id of each new order (its live status message is posted at once).
    on_new_order: Callable[[int], None] | None = None
    # The KIE account balance now (None: unknown or no KIE); set by the application.
    kie_balance: Callable[[], Awaitable[float | None]] | None = None


def build_services(config: Config, db: Database, chain: ProviderChain, templates: TemplateCatalog, *,
                   on_new_jobs: Callable[[], None] | None = None, metrics: Metrics | None = None,
                   key_states: Callable[[], list[dict]] | None = None,
                   on_referral_bonus: BonusCallback | None = None) -> Services:
    """Every service once, over one database. `on_new_jobs` wakes the engine; `on_referral_bonus`
    tells an inviter about a bonus (it needs the Bot)."""
    users, jobs, activity = UserStore(db), JobStore(db), ActivityStore(db)
    referrals = Referrals(config, ReferralStore(db), on_bonus=on_referral_bonus)
    return Services(
        config=config, db=db, users=users, products=ProductStore(db), jobs=jobs, templates=templates,
        orders=Orders(config, jobs, templates, chain, on_new_jobs=on_new_jobs, metrics=metrics),
        activity=activity, history=HistoryStore(db), referrals=referrals,
        payments=Payments(config, PaymentStore(db), users, referrals, activity),
        promos=Promos(PromoStore(db)), broadcasts=BroadcastStore(db), statement=StatementStore(db),
        costs=CostStore(db), key_states=key_states)
