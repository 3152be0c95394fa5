"""Promo codes in the database: the codes, who redeemed which, and wrong guesses.

Every rule of a redemption is a constraint or trigger (see schema migration 5): the
(code, user) primary key makes a seller redeem a code once, the CHECK on `used` stops the
use past the cap even when many sellers redeem at the same moment, and the ledger row needs
the redemption it pays. This module only tries the insert and, when the database refuses,
reads why, to give the seller the right answer.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum

from neurocards.store.db import Database
from neurocards.store.ledger import LedgerConflict, insert_ledger_row


@dataclass(frozen=True)
class PromoCode:
    code: str
    credits: int
    max_uses: int | None
    used: int
    expires_at: float | None
    disabled: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> PromoCode:
        return cls(code=row["code"], credits=row["credits"], max_uses=row["max_uses"], used=row["used"],
                   expires_at=row["expires_at"], disabled=bool(row["disabled"]))


class Refusal(StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    DISABLED = "disabled"
    USED_UP = "used_up"
    ALREADY = "already"  # this seller has redeemed it before


@dataclass(frozen=True)
class Redeemed:
    code: str
    credits: int
    balance: int


class CodeExists(Exception):
    """A promo code of that name exists already."""


class PromoStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, code: str, credits: int, max_uses: int | None, expires_at: float | None,
                     created_by: int | None) -> PromoCode:
        row = await self.db.fetchone(
            "INSERT INTO promo_codes (code, credits, max_uses, expires_at, created_by, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (code) DO NOTHING RETURNING *",
            (code, credits, max_uses, expires_at, created_by, time.time()))
        if row is None:
            raise CodeExists(f"promo code {code} exists already")
        return PromoCode.from_row(row)

    async def get(self, code: str) -> PromoCode | None:
        row = await self.db.fetchone("SELECT * FROM promo_codes WHERE code = ?", (code,))
        return PromoCode.from_row(row) if row else None

    async def all(self) -> list[PromoCode]:
        return [PromoCode.from_row(r) for r in await self.db.fetchall("SELECT * FROM promo_codes ORDER BY created_at")]

    async def disable(self, code: str) -> PromoCode | None:
        row = await self.db.fetchone("UPDATE promo_codes SET disabled = 1 WHERE code = ? RETURNING *", (code,))
        return PromoCode.from_row(row) if row else None

    async def redeem(self, user_id: int, code: str, now: float | None = None) -> Redeemed | Refusal:
        """Credit the code to the seller in one transaction, or say why the database refused."""
        now = time.time() if now is None else now
        try:
            async with self.db.transaction() as conn:
                inserted = await (await conn.execute(
                    "INSERT INTO promo_redemptions (code, user_id, credits, at)"
                    " SELECT code, ?, credits, ? FROM promo_codes WHERE code = ? RETURNING credits",
                    (user_id, now, code))).fetchone()
                if inserted is None:
                    raise _NoSuchCode
                credits = int(inserted["credits"])
                await insert_ledger_row(conn, user_id=user_id, delta=credits, reason="promo", note=code)
                row = await (await conn.execute("SELECT balance FROM users WHERE id = ?", (user_id,))).fetchone()
            return Redeemed(code=code, credits=credits, balance=int(row["balance"]))
        except (_NoSuchCode, sqlite3.IntegrityError, LedgerConflict):
            pass  # rolled back; the reason is read below
        return await self._why_refused(user_id, code, now)

    async def _why_refused(self, user_id: int, code: str, now: float) -> Refusal:
        promo = await self.get(code)
        if promo is None:
            return Refusal.UNKNOWN
        mine = await self.db.fetchone(
            "SELECT 1 FROM promo_redemptions WHERE code = ? AND user_id = ?", (code, user_id))
        if mine is not None:
            return Refusal.ALREADY
        if promo.disabled:
            return Refusal.DISABLED
        if promo.expires_at is not None and promo.expires_at <= now:
            return Refusal.EXPIRED
        return Refusal.USED_UP

    async def wrong_attempts(self, user_id: int, since: float) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n FROM promo_attempts WHERE user_id = ? AND at >= ?", (user_id, since))
        assert row is not None  # COUNT(*) answers one row
        return int(row["n"])

    async def record_wrong_attempt(self, user_id: int, now: float, keep_since: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM promo_attempts WHERE at < ?", (keep_since,))
            await conn.execute("INSERT INTO promo_attempts (user_id, at) VALUES (?, ?)", (user_id, now))

    async def redemptions_since(self, since: float) -> dict[str, int]:
        rows = await self.db.fetchall(
            "SELECT code, COUNT(*) AS n FROM promo_redemptions WHERE at >= ? GROUP BY code ORDER BY n DESC, code",
            (since,))
        return {r["code"]: int(r["n"]) for r in rows}


class _NoSuchCode(Exception):
    pass
