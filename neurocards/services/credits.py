"""Credit changes that are not job charges: admin grants and removals."""

from __future__ import annotations

from dataclasses import dataclass

from neurocards.store.db import Database
from neurocards.store.ledger import LedgerConflict, change_balance
from neurocards.store.users import UserStore


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
    if amount == 0:
        raise ValueError("amount must not be 0")
    await users.ensure(user_id)
    try:
        balance = await change_balance(db, user_id=user_id, delta=amount, reason=reason,
                                       admin_id=admin_id, note=note)
    except LedgerConflict as exc:
        raise NotEnoughToRemove(exc.balance or 0) from None
    return CreditChange(user_id=user_id, delta=amount, balance=balance)
