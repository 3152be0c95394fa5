"""Album photos that arrived but have not settled into an order yet (they survive a restart)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from neurocards.store.db import Database


@dataclass(frozen=True)
class AlbumItem:
    chat_id: int
    message_id: int
    user_id: int
    media_group_id: str
    kind: str  # photo | image (an image sent as a file) | document | video | sticker | ...
    file_id: str | None
    file_size: int | None
    caption: str | None
    received_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AlbumItem:
        return cls(**{k: row[k] for k in row.keys()})


class AlbumStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, item: AlbumItem) -> None:
        # Telegram may deliver an update twice: the same message is kept once.
        await self.db.execute(
            "INSERT OR IGNORE INTO album_items (chat_id, message_id, user_id, media_group_id, kind, file_id,"
            " file_size, caption, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item.chat_id, item.message_id, item.user_id, item.media_group_id, item.kind, item.file_id,
             item.file_size, item.caption, item.received_at))

    async def pending(self) -> list[tuple[int, int, float]]:
        """(chat, user, time of the newest item) for every chat with an album still collecting."""
        rows = await self.db.fetchall(
            "SELECT chat_id, user_id, MAX(received_at) AS last FROM album_items GROUP BY chat_id, user_id")
        return [(int(r["chat_id"]), int(r["user_id"]), float(r["last"])) for r in rows]

    async def take(self, chat_id: int, user_id: int, settled_before: float) -> list[AlbumItem] | None:
        """All the chat's items, in message order, once nothing arrived after `settled_before`;
        None while the album is still coming. Taken items are gone: an album is answered once."""
        async with self.db.transaction() as conn:
            row = await (await conn.execute(
                "SELECT MAX(received_at) AS last FROM album_items WHERE chat_id = ? AND user_id = ?",
                (chat_id, user_id))).fetchone()
            if row is None or row["last"] is None or row["last"] > settled_before:
                return None
            rows = await (await conn.execute(
                "DELETE FROM album_items WHERE chat_id = ? AND user_id = ? RETURNING *",
                (chat_id, user_id))).fetchall()
        return sorted((AlbumItem.from_row(r) for r in rows), key=lambda i: i.message_id)
