"""Buying credit packs with Telegram Stars: invoice payloads, the pre-checkout verdict,
crediting exactly once, and admin refunds.

Telegram-free on purpose: the Stars refund itself is a callable handed in by
the bot or the command line (`RefundStars`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from neurocards.config import Config, CreditPack
from neurocards.services.referrals import Referrals
from neurocards.store.activity import ActivityStore
from neurocards.store.payments import Payment, PaymentStore
from neurocards.store.referrals import ReferralBonus
from neurocards.store.stats import record_admin_action
from neurocards.store.users import User, UserStore

log = logging.getLogger("neurocards.payments")

CURRENCY = "XTR"
PAYLOAD_VERSION = "cr1"
# A refund claim older than this was interrupted (crash after Telegram's answer) and may be retried.
REFUND_CLAIM_STALE_S = 120.0

RefundStars = Callable[[int, str], Awaitable[None]]  # (user_id, telegram_payment_charge_id)


@dataclass(frozen=True)
class InvoicePayload:
    pack_id: str
    credits: int
    stars: int
    user_id: int

    def encode(self) -> str:
        return f"{PAYLOAD_VERSION}:{self.pack_id}:{self.credits}:{self.stars}:{self.user_id}"

    @classmethod
    def decode(cls, payload: str) -> InvoicePayload | None:
        parts = payload.split(":")
        if len(parts) != 5 or parts[0] != PAYLOAD_VERSION:
            return None
        try:
            return cls(parts[1], int(parts[2]), int(parts[3]), int(parts[4]))
        except ValueError:
            return None


class CheckoutProblem(StrEnum):
    BANNED = "banned"
    UNKNOWN_PACK = "unknown_pack"  # the pack was removed from the config after the invoice
    PRICE_CHANGED = "price_changed"  # credits or Stars differ from the pack now
    WRONG_USER = "wrong_user"  # someone else's (forwarded) invoice
    CURRENCY = "currency"


@dataclass(frozen=True)
class Credited:
    duplicate: bool  # this charge was credited before; nothing changed now
    credits: int
    stars: int
    balance: int
    referral: ReferralBonus | None = None


class RefundRefused(Exception):
    """Base of the reasons an admin refund does not happen; nothing was changed."""


class PaymentNotFound(RefundRefused):
    pass


class AlreadyRefunded(RefundRefused):
    pass


class RefundInProgress(RefundRefused):
    pass


class CreditsSpent(RefundRefused):
    def __init__(self, balance: int, credits: int) -> None:
        super().__init__(f"balance {balance} < {credits} credits of the payment")
        self.balance = balance
        self.credits = credits


class StarRefundFailed(RefundRefused):
    """Raised by a RefundStars callable; `already_refunded`: the Stars went back earlier."""

    def __init__(self, message: str, *, already_refunded: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.already_refunded = already_refunded


@dataclass(frozen=True)
class Refunded:
    payment: Payment
    removed: int  # credits taken back (less than the pack when some were spent and the policy allows)
    balance: int


class Payments:
    def __init__(self, config: Config, store: PaymentStore, users: UserStore, referrals: Referrals,
                 activity: ActivityStore | None = None) -> None:
        self.config = config
        self.store = store
        self.users = users
        self.referrals = referrals
        self.activity = activity

    @property
    def packs(self) -> tuple[CreditPack, ...]:
        return self.config.payments.packs

    def payload(self, pack: CreditPack, user_id: int) -> str:
        return InvoicePayload(pack.id, pack.credits, pack.stars, user_id).encode()

    def check(self, user: User | None, user_id: int, payload: str, currency: str,
              total: int) -> CheckoutProblem | None:
        """The pre-checkout verdict: None means the payment may go through."""
        if user is not None and user.is_banned:
            return CheckoutProblem.BANNED
        if currency != CURRENCY:
            return CheckoutProblem.CURRENCY
        info = InvoicePayload.decode(payload)
        pack = self.config.payments.pack(info.pack_id) if info else None
        if info is None or pack is None:
            return CheckoutProblem.UNKNOWN_PACK
        if info.user_id != user_id:
            return CheckoutProblem.WRONG_USER
        if (info.credits, info.stars) != (pack.credits, pack.stars) or total != pack.stars:
            return CheckoutProblem.PRICE_CHANGED
        return None

    async def credit(self, *, user_id: int, charge_id: str, provider_charge_id: str | None, payload: str,
                     currency: str, total: int) -> Credited:
        """Credit a successful payment once per charge id.

        The credits come from the payload the pre-checkout accepted, so a pack
        changed in the config in between still gets what the buyer saw. A payload
        that is not ours (cannot happen with our invoices) is stored with 0 credits
        for the admin to sort out.
        """
        info = InvoicePayload.decode(payload)
        credits = info.credits if info else 0
        recorded = await self.store.record(
            user_id=user_id, charge_id=charge_id, provider_charge_id=provider_charge_id,
            pack_id=info.pack_id if info else "?", credits=credits, stars=total, currency=currency,
            payload=payload, referral_bonus=self.referrals.payment_bonus)
        if recorded is None:
            existing = await self.store.by_charge(user_id, charge_id)
            log.warning("user %d: payment %s delivered again, not credited", user_id, charge_id)
            balance = await self.users.balance(user_id)
            return Credited(True, existing.credits if existing else 0, total, balance)
        log.info("user %d: paid %d %s for %d credits (%s)", user_id, total, currency, credits, charge_id)
        await self._log(user_id, "payment", f"{recorded.payment.pack_id} {total}")
        if recorded.referral is not None:
            await self.referrals.announce(recorded.referral)
        return Credited(False, credits, total, recorded.balance, recorded.referral)

    async def refund(self, user_id: int, charge_id: str, *, admin_id: int | None,
                     refund_stars: RefundStars) -> Refunded:
        """Return the Stars and take back the credits; refuses (RefundRefused) and changes nothing
        when the payment is unknown, already refunded, or spent under the "refuse" policy."""
        payment = await self.store.by_charge(user_id, charge_id)
        if payment is None:
            raise PaymentNotFound(charge_id)
        if payment.status == "refunded":
            raise AlreadyRefunded(charge_id)
        balance = await self.users.balance(user_id)
        if balance < payment.credits and self.config.payments.refund_when_spent == "refuse":
            raise CreditsSpent(balance, payment.credits)
        if not await self.store.claim_refund(payment.id, REFUND_CLAIM_STALE_S):
            raise RefundInProgress(charge_id)
        try:
            await refund_stars(user_id, charge_id)
        except StarRefundFailed as exc:
            if not exc.already_refunded:
                await self.store.release_refund(payment.id)
                raise
            log.warning("payment %s was already refunded in Telegram; recording it", charge_id)
        except BaseException:
            await self.store.release_refund(payment.id)
            raise
        # Between the check and here the user may have spent credits; the Stars are back
        # already, so whatever is left is taken (never below zero).
        done = await self.store.finish_refund(payment.id, admin_id=admin_id)
        log.info("payment %s of user %d refunded by %s: -%d credits", charge_id, user_id,
                 admin_id if admin_id is not None else "cli", done.removed)
        await record_admin_action(self.store.db, admin_id=admin_id, action="payment_refund", user_id=user_id,
                                  detail=f"{charge_id}: {payment.stars} stars, -{done.removed} credits")
        await self._log(user_id, "payment_refund", f"{payment.pack_id} {payment.stars}")
        return Refunded(done.payment, done.removed, done.balance)

    async def _log(self, user_id: int, action: str, detail: str) -> None:
        if self.activity is None:
            return
        try:
            await self.activity.log(user_id, action, detail)
        except Exception as exc:  # analytics must never cost a payment
            log.warning("activity log failed: %s", type(exc).__name__)
