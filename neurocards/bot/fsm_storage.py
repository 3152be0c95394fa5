"""aiogram FSM storage in the bot's SQLite database, so a dialogue survives a restart.

Every update reads the dialogue state, and many handlers write what is already there (clearing an
empty state). One process owns the database, so a write-through cache in memory is coherent: reads
come from memory, and only real changes are written.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey

from neurocards.store.db import Database

MAX_CACHED = 50_000


def _key(key: StorageKey) -> str:
    return f"{key.bot_id}:{key.chat_id}:{key.user_id}:{key.thread_id or 0}:{key.destiny}"


class SQLiteStorage(BaseStorage):
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: OrderedDict[str, tuple[str | None, dict[str, Any]]] = OrderedDict()

    async def _load(self, k: str) -> tuple[str | None, dict[str, Any]]:
        cached = self._cache.get(k)
        if cached is None:
            row = await self.db.fetchone("SELECT state, data FROM fsm WHERE key = ?", (k,))
            cached = (row["state"], json.loads(row["data"]) if row["data"] else {}) if row else (None, {})
        self._cache[k] = cached
        self._cache.move_to_end(k)
        if len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return cached

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        k = _key(key)
        value = state.state if isinstance(state, State) else state
        current, data = await self._load(k)
        if current == value:
            return
        await self.db.execute(
            "INSERT INTO fsm (key, state) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET state = excluded.state",
            (k, value))
        self._cache[k] = (value, data)

    async def get_state(self, key: StorageKey) -> str | None:
        return (await self._load(_key(key)))[0]

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        k = _key(key)
        state, current = await self._load(k)
        new = dict(data)
        if current == new:
            return
        await self.db.execute(
            "INSERT INTO fsm (key, data) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET data = excluded.data",
            (k, json.dumps(new, ensure_ascii=False)))
        self._cache[k] = (state, new)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        return dict((await self._load(_key(key)))[1])

    async def close(self) -> None:
        pass  # the Database is owned and closed by the application
