"""The credit ledger: every change of a balance is one row; triggers in the schema move the
balance and refuse double charges/refunds and negative balances."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import aiosqlite

from neurocards.store.db import Database


@dataclass(frozen=True)
class LedgerRow:
    id: int
    user_id: int
    delta: int
    reason: str
    job_id: int | None
    admin_id: int | None
    note: str | None
    created_at: float
    payment_id: int | None = None  # reason payment / payment_refund
    invited_user_id: int | None = None  # reason referral


class LedgerConflict(Exception):
    """The database refused a ledger row (double charge/refund, negative balance)."""

    def __init__(self, message: str, balance: int | None = None) -> None:
        super().__init__(message)
        self.balance = balance  # when known: the balance that refused the row


async def insert_ledger_row(
    conn: aiosqlite.Connection,
    *,
    user_id: int,
    delta: int,
    reason: str,
    job_id: int | None = None,
    admin_id: int | None = None,
    note: str | None = None,
    payment_id: int | None = None,
    invited_user_id: int | None = None,
) -> None:
    """Append a ledger row inside the caller's transaction; the trigger moves the balance."""
    try:
        await conn.execute(
            "INSERT INTO credit_ledger (user_id, delta, reason, job_id, admin_id, note, payment_id,"
            " invited_user_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user_id, delta, reason, job_id, admin_id, note, payment_id, invited_user_id, time.time()),
        )
    except sqlite3.IntegrityError as exc:
        raise LedgerConflict(str(exc)) from exc


async def balance_in(conn: aiosqlite.Connection, user_id: int) -> int:
    row = await (await conn.execute("SELECT balance FROM users WHERE id = ?", (user_id,))).fetchone()
    return int(row["balance"]) if row else 0


async def change_balance(db: Database, *, user_id: int, delta: int, reason: str,
                         admin_id: int | None = None, note: str | None = None) -> int:
    """One ledger row in its own transaction; returns the new balance. A refused row raises
    LedgerConflict carrying the balance that refused it."""
    async with db.transaction() as conn:
        try:
            await insert_ledger_row(conn, user_id=user_id, delta=delta, reason=reason,
                                    admin_id=admin_id, note=note)
        except LedgerConflict as exc:
            raise LedgerConflict(str(exc), await balance_in(conn, user_id)) from None
        return await balance_in(conn, user_id)
