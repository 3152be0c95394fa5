"""Collecting an album: Telegram sends each photo as its own update, sharing one media_group_id.

The updates may come in several getUpdates answers and between other users' updates, so photos
are written to the database as they come and the album is taken once the chat has been quiet for
`settle_s`. Albums sent in a row (Telegram splits more than 10 photos into several) settle as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiogram.types import Message

from neurocards.store.albums import AlbumItem, AlbumStore

log = logging.getLogger("neurocards.bot")

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
AlbumHandler = Callable[[int, int, list[AlbumItem]], Awaitable[None]]


def album_item(message: Message, user_id: int) -> AlbumItem:
    kind, file_id, size = "other", None, None
    if message.photo:
        kind, file_id, size = "photo", message.photo[-1].file_id, message.photo[-1].file_size
    elif message.document is not None:
        is_image = message.document.mime_type in IMAGE_TYPES
        kind = "image" if is_image else "document"
        file_id, size = message.document.file_id, message.document.file_size
    else:
        kind = next((k for k in ("video", "sticker", "animation", "audio", "voice") if getattr(message, k, None)),
                    "other")
    return AlbumItem(chat_id=message.chat.id, message_id=message.message_id, user_id=user_id,
                     media_group_id=str(message.media_group_id), kind=kind, file_id=file_id, file_size=size,
                     caption=message.caption, received_at=time.time())


class AlbumCollector:
    def __init__(self, store: AlbumStore, settle_s: float, on_album: AlbumHandler) -> None:
        self.store = store
        self.settle_s = settle_s
        self.on_album = on_album
        self._timers: dict[tuple[int, int], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, message: Message, user_id: int) -> None:
        await self.store.add(album_item(message, user_id))
        self._arm(message.chat.id, user_id, self.settle_s)

    async def resume(self) -> int:
        """Albums that were still arriving when the process stopped are answered now."""
        pending = await self.store.pending()
        now = time.time()
        for chat_id, user_id, last in pending:
            self._arm(chat_id, user_id, max(0.0, last + self.settle_s - now))
        return len(pending)

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _arm(self, chat_id: int, user_id: int, delay: float) -> None:
        key = (chat_id, user_id)
        if (old := self._timers.pop(key, None)) is not None:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: tuple[int, int]) -> None:
        self._timers.pop(key, None)
        task = asyncio.create_task(self._settle(*key), name=f"album-{key[0]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, chat_id: int, user_id: int) -> None:
        # A small margin: the item that armed this timer was stamped just before it was armed.
        items = await self.store.take(chat_id, user_id, time.time() - self.settle_s + 0.05)
        if not items:
            return  # still arriving (a newer item re-armed the timer) or already taken
        try:
            await self.on_album(chat_id, user_id, items)
        except Exception:
            log.exception("album of chat %d could not be handled", chat_id)
