"""Referral codes, who invited whom, and the one-time bonus per invited user.

The database enforces the rules too: a referrer is set once and never to the
user themselves (triggers), and the bonus ledger row is unique per invited user.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass

import aiosqlite

from neurocards.store.db import Database
from neurocards.store.ledger import LedgerConflict, insert_ledger_row

CODE_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: people retype links
CODE_LENGTH = 8


@dataclass(frozen=True)
class ReferralBonus:
    referrer_id: int
    invited_user_id: int
    credits: int
    referrer_balance: int


@dataclass(frozen=True)
class ReferralStats:
    invited: int
    earned: int


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


async def grant_referral_bonus(conn: aiosqlite.Connection, *, invited_user_id: int,
                               credits: int) -> ReferralBonus | None:
    """Inside the caller's transaction: credit the inviter once per invited user; None if not due."""
    row = await (await conn.execute(
        "SELECT referrer_id FROM users WHERE id = ?", (invited_user_id,))).fetchone()
    if row is None or row["referrer_id"] is None or credits <= 0:  # pragma: no mutate - equivalent: the ledger's CHECK refuses a 0-credit row as well (LedgerConflict: None)
        return None
    referrer_id = int(row["referrer_id"])
    try:
        await insert_ledger_row(conn, user_id=referrer_id, delta=credits, reason="referral",
                                invited_user_id=invited_user_id)
    except LedgerConflict:
        return None  # already paid for this invited user
    balance = await (await conn.execute("SELECT balance FROM users WHERE id = ?", (referrer_id,))).fetchone()
    return ReferralBonus(referrer_id, invited_user_id, credits, int(balance["balance"]))


class ReferralStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def code_for(self, user_id: int) -> str:
        """The user's code, made on first use and never changed (old links keep working)."""
        for _ in range(5):  # pragma: no mutate - equivalent: a bound on redraws after a collision among 32**8 codes nobody can observe
            row = await self.db.fetchone("SELECT ref_code FROM users WHERE id = ?", (user_id,))
            if row is None:
                raise KeyError(user_id)  # pragma: no mutate - equivalent: the key only names the missing user in a traceback
            if row["ref_code"]:
                return str(row["ref_code"])
            try:
                await self.db.execute(
                    "UPDATE users SET ref_code = ? WHERE id = ? AND ref_code IS NULL", (new_code(), user_id))
            except sqlite3.IntegrityError:
                continue  # another user has this code: draw again
        raise RuntimeError(f"could not make a referral code for user {user_id}")

    async def attach(self, invited_user_id: int, code: str) -> int | None:
        """Record who invited this user; returns the referrer, or None if nothing was recorded."""
        async with self.db.transaction() as conn:
            row = await (await conn.execute("SELECT id FROM users WHERE ref_code = ?", (code,))).fetchone()
            if row is None or int(row["id"]) == invited_user_id:
                return None
            referrer_id = int(row["id"])
            cur = await conn.execute(
                "UPDATE users SET referrer_id = ?, referred_at = ? WHERE id = ? AND referrer_id IS NULL",
                (referrer_id, time.time(), invited_user_id))
            return referrer_id if cur.rowcount == 1 else None

    async def grant(self, invited_user_id: int, credits: int) -> ReferralBonus | None:
        async with self.db.transaction() as conn:
            return await grant_referral_bonus(conn, invited_user_id=invited_user_id, credits=credits)

    async def stats(self, user_id: int) -> ReferralStats:
        row = await self.db.fetchone(
            "SELECT (SELECT COUNT(*) FROM users WHERE referrer_id = :u) AS invited,"
            " (SELECT COALESCE(SUM(delta), 0) FROM credit_ledger WHERE user_id = :u AND reason = 'referral')"
            " AS earned", {"u": user_id})
        return ReferralStats(int(row["invited"]), int(row["earned"])) if row else ReferralStats(0, 0)  # pragma: no mutate - equivalent: an aggregate always returns a row
