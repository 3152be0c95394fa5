"""Users and products (the credit ledger is store/ledger.py)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from neurocards.store.db import Database
from neurocards.store.ledger import LedgerRow, insert_ledger_row

# A user who writes to the bot can be reached again (a 403 from a broadcast had marked them).
_REFRESH_USER = ("UPDATE users SET username = ?, first_name = ?, language = ?, last_seen = ?, unreachable_at = NULL"
                 " WHERE id = ?")


@dataclass(frozen=True)
class User:
    id: int
    username: str | None
    first_name: str | None
    language: str | None
    balance: int
    is_banned: bool
    referrer_id: int | None
    first_seen: float
    last_seen: float
    # False for a row an admin made (credit, ban) before the user's first /start.
    seen: bool = True

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> User:
        return cls(
            id=row["id"],
            username=row["username"],
            first_name=row["first_name"],
            language=row["language"],
            balance=row["balance"],
            is_banned=bool(row["is_banned"]),
            referrer_id=row["referrer_id"],
            first_seen=row["first_seen"],
            last_seen=row["last_seen"],
            seen=bool(row["seen"]),
        )


@dataclass(frozen=True)
class Product:
    id: int
    user_id: int
    photo_file_id: str
    photo_path: str
    description: str | None
    upload_url: str | None
    upload_url_at: float | None
    created_at: float
    upload_aspect: str | None = None  # the shape the cached upload was prepared for

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Product:
        return cls(**{k: row[k] for k in row.keys()})


LAST_SEEN_RESOLUTION_S = 60.0


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user_id: int) -> User | None:
        row = await self.db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        return User.from_row(row) if row else None

    async def touch(
        self,
        user_id: int,
        *,
        username: str | None,
        first_name: str | None,
        language: str | None,
        welcome_credits: int,
    ) -> tuple[User, bool]:
        """Create or refresh a user; a new one gets the welcome credits once. Returns (user, created)."""
        now = time.time()
        # Most updates come from a known user whose profile did not change: a read is enough, and
        # last_seen is only written once a minute (a write per update would queue every update
        # behind the DB lock).
        row = await self.db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        if row is not None and not row["seen"]:
            row = None  # an admin's placeholder: this is the user's first visit
        if row is not None and (row["username"], row["first_name"], row["language"]) == \
                (username, first_name, language) and now - row["last_seen"] < LAST_SEEN_RESOLUTION_S:
            return User.from_row(row), False
        if row is not None:
            # A known user: one autocommit statement (one hop, the DB lock held once): a transaction
            # of several statements would make every other update wait behind it.
            updated = await self.db.fetchone(
                _REFRESH_USER + " RETURNING *", (username, first_name, language, now, user_id),
            )
            if updated is not None:
                return User.from_row(updated), False
        async with self.db.transaction() as conn:
            existing = await (await conn.execute(
                "SELECT seen FROM users WHERE id = ?", (user_id,))).fetchone()
            created = existing is None or not existing["seen"]
            if existing is None:
                await conn.execute(
                    "INSERT INTO users (id, username, first_name, language, first_seen, last_seen)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (user_id, username, first_name, language, now, now),
                )
            elif created:  # first visit of someone an admin credited or banned ahead
                await conn.execute(
                    "UPDATE users SET seen = 1, username = ?, first_name = ?, language = ?, first_seen = ?,"
                    " last_seen = ? WHERE id = ?", (username, first_name, language, now, now, user_id))
            if created:
                if welcome_credits > 0:
                    await insert_ledger_row(conn, user_id=user_id, delta=welcome_credits, reason="welcome")
            else:
                # Created by a concurrent update since the read above.
                await conn.execute(_REFRESH_USER, (username, first_name, language, now, user_id))
            user_row = await (await conn.execute("SELECT * FROM users WHERE id = ?", (user_id,))).fetchone()
        return User.from_row(user_row), created

    async def ensure(self, user_id: int) -> None:
        """Make sure a user row exists (for an admin credit or ban to someone who never wrote).
        A new row is "not yet seen": their first /start is still a first visit."""
        now = time.time()
        await self.db.execute(
            "INSERT OR IGNORE INTO users (id, first_seen, last_seen, seen) VALUES (?, ?, ?, 0)",
            (user_id, now, now),
        )

    async def set_banned(self, user_id: int, banned: bool) -> bool:
        """Returns whether anything changed."""
        return await self.db.execute(
            "UPDATE users SET is_banned = ? WHERE id = ? AND is_banned != ?",
            (int(banned), user_id, int(banned))) == 1

    async def balance(self, user_id: int) -> int:
        row = await self.db.fetchone("SELECT balance FROM users WHERE id = ?", (user_id,))
        return int(row["balance"]) if row else 0

    async def ledger(self, user_id: int, limit: int = 50) -> list[LedgerRow]:
        rows = await self.db.fetchall(
            "SELECT * FROM credit_ledger WHERE user_id = ? ORDER BY id DESC LIMIT ?", (user_id, limit))
        return [LedgerRow(**{k: r[k] for k in r.keys()}) for r in rows]

    async def ledger_sum(self, user_id: int) -> int:
        row = await self.db.fetchone(
            "SELECT COALESCE(SUM(delta), 0) AS s FROM credit_ledger WHERE user_id = ?", (user_id,))
        return int(row["s"]) if row else 0


class ProductStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, user_id: int, photo_file_id: str, photo_path: str) -> int:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO products (user_id, photo_file_id, photo_path, created_at) VALUES (?, ?, ?, ?)",
                (user_id, photo_file_id, photo_path, time.time()),
            )
            return int(cur.lastrowid or 0)

    async def set_description(self, product_id: int, description: str) -> None:
        await self.db.execute("UPDATE products SET description = ? WHERE id = ?", (description, product_id))

    async def get(self, product_id: int) -> Product | None:
        row = await self.db.fetchone("SELECT * FROM products WHERE id = ?", (product_id,))
        return Product.from_row(row) if row else None

    async def set_upload_url(self, product_id: int, url: str, aspect: str | None = None) -> None:
        await self.db.execute(
            "UPDATE products SET upload_url = ?, upload_url_at = ?, upload_aspect = ? WHERE id = ?",
            (url, time.time(), aspect, product_id))
