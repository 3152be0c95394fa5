"""Credit changes that are not job charges: admin grants and removals."""

from __future__ import annotations

from dataclasses import dataclass

from neurocards.store.db import Database
from neurocards.store.ledger import LedgerConflict, change_balance
from neurocards.store.users import UserStore

# Telegram user ids are positive and fit SQLite's INTEGER (int64); anything else is a typo.
MAX_USER_ID = 2**63 - 1
# One admin change of credits: far above any real grant, far below what could overflow a balance.
MAX_CREDIT_CHANGE = 1_000_000


class BadAdminInput(ValueError):
    """An id or an amount no admin action accepts; the message is one line for the operator."""


def check_user_id(user_id: int) -> int:
    if not 0 < user_id <= MAX_USER_ID:
        raise BadAdminInput(f"user id must be a positive Telegram id (1..{MAX_USER_ID}), got {user_id}")
    return user_id


def check_amount(amount: int) -> int:
    if amount == 0 or abs(amount) > MAX_CREDIT_CHANGE:
        raise BadAdminInput(f"amount must be between -{MAX_CREDIT_CHANGE:,} and {MAX_CREDIT_CHANGE:,}"
                            f" and not 0, got {amount}")
    return amount


class NotEnoughToRemove(Exception):
    def __init__(self, balance: int) -> None:
        super().__init__(f"balance is only {balance}")
        self.balance = balance


@dataclass(frozen=True)
class CreditChange:
    user_id: int
    delta: int
    balance: int


async def add_credits(
    db: Database,
    users: UserStore,
    user_id: int,
    amount: int,
    *,
    reason: str = "admin",
    admin_id: int | None = None,
    note: str | None = None,
) -> CreditChange:
    """Add (or, with a negative amount, remove) credits with a ledger row; never below zero."""
    check_user_id(user_id)
    check_amount(amount)
    await users.ensure(user_id)
    try:
        balance = await change_balance(db, user_id=user_id, delta=amount, reason=reason,
                                       admin_id=admin_id, note=note)
    except LedgerConflict as exc:
        raise NotEnoughToRemove(exc.balance or 0) from None
    return CreditChange(user_id=user_id, delta=amount, balance=balance)
