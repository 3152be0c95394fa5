"""Telegram Stars payments: every charge credited once, refunded at most once.

The payments row and its ledger row are written in one transaction; the
UNIQUE telegram_payment_charge_id turns a repeated successful_payment update
into a no-op, and the ledger's own unique indexes back that up.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, fields

import aiosqlite

from neurocards.store.db import Database
from neurocards.store.ledger import insert_ledger_row
from neurocards.store.referrals import ReferralBonus, grant_referral_bonus


@dataclass(frozen=True)
class Payment:
    id: int
    user_id: int
    telegram_payment_charge_id: str
    provider_payment_charge_id: str | None
    pack_id: str
    credits: int
    stars: int
    currency: str
    payload: str
    status: str  # paid | refunding | refunded
    created_at: float
    refund_started_at: float | None
    refunded_at: float | None
    refunded_credits: int | None
    refunded_by: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Payment:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class RecordedPayment:
    payment: Payment
    balance: int
    referral: ReferralBonus | None


@dataclass(frozen=True)
class FinishedRefund:
    payment: Payment
    removed: int
    balance: int


class PaymentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self,
        *,
        user_id: int,
        charge_id: str,
        provider_charge_id: str | None,
        pack_id: str,
        credits: int,
        stars: int,
        currency: str,
        payload: str,
        referral_bonus: int,
    ) -> RecordedPayment | None:
        """Store a payment and credit it (plus the referrer's bonus, if due); None if already stored."""
        now = time.time()
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO users (id, first_seen, last_seen) VALUES (?, ?, ?)", (user_id, now, now))
            try:
                row = await (await conn.execute(
                    "INSERT INTO payments (user_id, telegram_payment_charge_id, provider_payment_charge_id,"
                    " pack_id, credits, stars, currency, payload, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                    (user_id, charge_id, provider_charge_id, pack_id, credits, stars, currency, payload, now),
                )).fetchone()
            except sqlite3.IntegrityError:
                return None
            payment = Payment.from_row(row)
            if credits > 0:
                await insert_ledger_row(conn, user_id=user_id, delta=credits, reason="payment",
                                        payment_id=payment.id, note=f"{pack_id} {charge_id}")
            referral = await grant_referral_bonus(conn, invited_user_id=user_id, credits=referral_bonus)
            balance = await _balance(conn, user_id)
        return RecordedPayment(payment, balance, referral)

    async def by_charge(self, user_id: int, charge_id: str) -> Payment | None:
        row = await self.db.fetchone(
            "SELECT * FROM payments WHERE telegram_payment_charge_id = ? AND user_id = ?", (charge_id, user_id))
        return Payment.from_row(row) if row else None

    async def claim_refund(self, payment_id: int, stale_after_s: float) -> bool:
        """Mark a refund as under way so two admins cannot both call Telegram.

        A claim older than `stale_after_s` was left by a crash between the Telegram
        call and `finish_refund`, so it may be taken over.
        """
        now = time.time()
        changed = await self.db.execute(
            "UPDATE payments SET status = 'refunding', refund_started_at = ? WHERE id = ?"
            " AND (status = 'paid' OR (status = 'refunding' AND refund_started_at < ?))",
            (now, payment_id, now - stale_after_s))
        return changed == 1

    async def release_refund(self, payment_id: int) -> None:
        """Telegram refused the refund: the payment stays paid."""
        await self.db.execute(
            "UPDATE payments SET status = 'paid', refund_started_at = NULL WHERE id = ? AND status = 'refunding'",
            (payment_id,))

    async def finish_refund(self, payment_id: int, *, admin_id: int | None) -> FinishedRefund:
        """After Telegram returned the Stars: remove the pack's credits, or whatever is left of them."""
        now = time.time()
        async with self.db.transaction() as conn:
            row = await (await conn.execute("SELECT * FROM payments WHERE id = ?", (payment_id,))).fetchone()
            payment = Payment.from_row(row)
            balance = await _balance(conn, payment.user_id)
            removed = 0
            if payment.status != "refunded":
                removed = max(0, min(payment.credits, balance))
                if removed:
                    await insert_ledger_row(conn, user_id=payment.user_id, delta=-removed, reason="payment_refund",
                                            payment_id=payment.id, admin_id=admin_id,
                                            note=payment.telegram_payment_charge_id)
                row = await (await conn.execute(
                    "UPDATE payments SET status = 'refunded', refunded_at = ?, refunded_credits = ?,"
                    " refunded_by = ? WHERE id = ? RETURNING *",
                    (now, removed, admin_id, payment.id))).fetchone()
                payment = Payment.from_row(row)
                balance = await _balance(conn, payment.user_id)
        return FinishedRefund(payment, removed, balance)

    async def totals(self, user_id: int) -> tuple[int, int]:
        """(payments, Stars) of a user, refunded ones left out."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n, COALESCE(SUM(stars), 0) AS stars FROM payments"
            " WHERE user_id = ? AND status != 'refunded'", (user_id,))
        return (int(row["n"]), int(row["stars"])) if row else (0, 0)  # pragma: no mutate - equivalent: an aggregate always returns a row


    async def history(self, user_id: int, limit: int) -> tuple[list[Payment], int]:
        """The user's latest payments, newest first, and how many there are in all."""
        rows = await self.db.fetchall(
            "SELECT * FROM payments WHERE user_id = ? ORDER BY id DESC LIMIT ?", (user_id, limit))
        total = await self.db.fetchone("SELECT COUNT(*) AS n FROM payments WHERE user_id = ?", (user_id,))
        return [Payment.from_row(r) for r in rows], int(total["n"]) if total else 0  # pragma: no mutate - equivalent: COUNT(*) always returns a row


async def _balance(conn: aiosqlite.Connection, user_id: int) -> int:
    row = await (await conn.execute("SELECT balance FROM users WHERE id = ?", (user_id,))).fetchone()
    return int(row["balance"]) if row else 0  # pragma: no mutate - equivalent: the callers insert the user row first
