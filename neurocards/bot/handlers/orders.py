""""📦 Мои заказы" (the live status of open orders) and an order's videos as one ZIP document."""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import zipfile
from pathlib import Path

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, FSInputFile

from neurocards.bot import keyboards, texts
from neurocards.bot.handlers.common import show
from neurocards.bot.keyboards import OrderCb
from neurocards.bot.order_status import OrderStatusBoard, render
from neurocards.services import Services
from neurocards.store.jobs import JobState
from neurocards.store.orders import OrderJob, OrderStore
from neurocards.store.users import User

log = logging.getLogger("neurocards.bot")

SHOWN_ORDERS = 5
MAX_TEXT = 4000  # Telegram's limit is 4096 characters per message


async def my_orders(query: CallbackQuery, svc: Services, order_status: OrderStatusBoard, user: User) -> None:
    await query.answer()
    open_orders = (await OrderStore(svc.db).open_orders(user.id))[-SHOWN_ORDERS:]
    if not open_orders:
        await show(query, texts.NO_OPEN_ORDERS, keyboards.menu_only())
        return
    screens = [render(order, await order_status.progress(order)) for order in open_orders]
    while len(screens) > 1 and sum(len(s) + 2 for s in screens) > MAX_TEXT:  # the newest orders fit
        screens.pop(0)
    await show(query, "\n\n".join(screens), keyboards.menu_only())


def zip_name(job: OrderJob) -> str:
    words = re.sub(r"[^\w]+", "-", " ".join(job.product.split()[:4]), flags=re.UNICODE).strip("-_")
    return f"{job.pos:02d}-{(words or 'video')[:40]}.mp4"


async def send_zip(query: CallbackQuery, callback_data: OrderCb, bot: Bot, svc: Services, user: User) -> None:
    orders = OrderStore(svc.db)
    order = await orders.get(callback_data.order_id)
    if order is None or order.user_id != user.id:
        await query.answer(texts.SESSION_EXPIRED, show_alert=True)
        return
    done = [j for j in await orders.jobs(order.id) if j.state is JobState.DONE and j.video_file_id]
    if not done:
        await query.answer(texts.ZIP_NOTHING, show_alert=True)
        return
    await query.answer()
    chat_id = query.message.chat.id if query.message else user.id
    limit = svc.config.telegram.max_upload_mb * 1024 * 1024
    try:
        files = [await bot.get_file(j.video_file_id or "") for j in done]
    except TelegramAPIError as exc:
        log.warning("order %d: videos for the ZIP not available: %s", order.id, exc)
        await bot.send_message(chat_id, texts.ZIP_UNAVAILABLE)
        return
    total = sum(f.file_size or 0 for f in files)
    if total > limit:  # stored, not compressed: the archive is the videos' size plus a few headers
        await bot.send_message(chat_id, texts.zip_too_large(total / 1024 / 1024, svc.config.telegram.max_upload_mb))
        return
    with tempfile.TemporaryDirectory(dir=svc.config.storage.dir) as folder:
        archive = Path(folder) / f"order-{order.id}.zip"
        try:
            parts = []
            for job, file in zip(done, files, strict=True):
                part = Path(folder) / zip_name(job)
                await bot.download_file(file.file_path or "", destination=part)
                parts.append(part)
        except (TelegramAPIError, OSError) as exc:
            log.warning("order %d: a video for the ZIP could not be fetched: %s", order.id, exc)
            await bot.send_message(chat_id, texts.ZIP_UNAVAILABLE)
            return
        await asyncio.to_thread(_write_zip, archive, parts)
        await bot.send_document(chat_id, FSInputFile(archive, filename=archive.name), caption=texts.ZIP_CAPTION)


def _write_zip(archive: Path, parts: list[Path]) -> None:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:  # mp4 does not compress
        for part in parts:
            zf.write(part, arcname=part.name)


def make_router() -> Router:
    """A fresh router per Dispatcher (a router can belong to one parent only)."""
    router = Router(name="orders")
    router.callback_query.register(my_orders, OrderCb.filter(F.action == "list"))
    router.callback_query.register(send_zip, OrderCb.filter(F.action == "zip"))
    return router
