"""Business services below the handlers (orders, payments, referrals, credits, promo codes, admin
actions, product photos). `Services` is what handlers get injected: the stores and these services,
nothing Telegram-specific."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from neurocards.config import Config
from neurocards.jobs.templates import TemplateCatalog
from neurocards.services.orders import Orders
from neurocards.services.payments import Payments
from neurocards.services.promo import Promos
from neurocards.services.referrals import BonusCallback, Referrals
from neurocards.store.activity import ActivityStore
from neurocards.store.broadcasts import Broadcast, BroadcastStore
from neurocards.store.db import Database
from neurocards.store.history import HistoryStore
from neurocards.store.jobs import JobStore
from neurocards.store.payments import PaymentStore
from neurocards.store.promo import PromoStore
from neurocards.store.referrals import ReferralStore
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
    orders: Orders
    templates: TemplateCatalog
    key_states: Callable[[], list[dict]] | None = None
    # Tells an inviter about their bonus; set by the application (it needs the Bot).
    on_referral_bonus: BonusCallback | None = None
    # Delivers confirmed broadcasts; set by the application (it needs the Bot).
    broadcaster: BroadcastLauncher | None = None

    # Built on first use from the fields above, so no constructor call has to change.
    @cached_property
    def activity(self) -> ActivityStore:
        return ActivityStore(self.db)

    @cached_property
    def history(self) -> HistoryStore:
        return HistoryStore(self.db)

    @cached_property
    def referrals(self) -> Referrals:
        return Referrals(self.config, ReferralStore(self.db), on_bonus=self.on_referral_bonus)

    @cached_property
    def payments(self) -> Payments:
        return Payments(self.config, PaymentStore(self.db), self.users, self.referrals, self.activity)

    @cached_property
    def promos(self) -> Promos:
        return Promos(PromoStore(self.db))

    @cached_property
    def broadcasts(self) -> BroadcastStore:
        return BroadcastStore(self.db)
