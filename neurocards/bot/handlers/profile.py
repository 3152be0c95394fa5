"""The cabinet (balance, counters, invite link) and "My videos", re-sent by file_id."""

from __future__ import annotations

import logging
import time

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery

from neurocards.bot import keyboards, texts
from neurocards.bot.handlers.common import show
from neurocards.bot.keyboards import ProfileCb, ReplayCb, VideosCb
from neurocards.services import Services
from neurocards.store.users import User

log = logging.getLogger("neurocards.bot")

PAGE_SIZE = 5
PURCHASES_SHOWN = 15


def _day(ts: float) -> str:
    return time.strftime("%d.%m.%Y", time.localtime(ts))


async def invite_link(bot: Bot, svc: Services, user_id: int) -> str:
    me = await bot.me()  # cached by aiogram after the first call
    return f"https://t.me/{me.username}?start={await svc.referrals.start_parameter(user_id)}"


async def cabinet(query: CallbackQuery, bot: Bot, svc: Services, user: User) -> None:
    await query.answer()
    counts = await svc.history.job_counts(user.id)
    payments, stars = await svc.payments.store.totals(user.id)
    referrals = await svc.referrals.stats(user.id)
    rules = svc.config.referrals
    text = texts.cabinet(
        balance=await svc.users.balance(user.id), done=counts.done, failed=counts.failed, payments=payments,
        stars=stars, link=await invite_link(bot, svc, user.id), invited=referrals.invited,
        earned=referrals.earned, bonus=rules.bonus_credits, bonus_on=rules.bonus_on)
    await show(query, text, keyboards.cabinet())


async def purchases(query: CallbackQuery, svc: Services, user: User) -> None:
    await query.answer()
    items, total = await svc.payments.store.history(user.id, limit=PURCHASES_SHOWN)
    if not items:
        await show(query, texts.NO_PURCHASES, keyboards.purchases())
        return
    labels = {p.id: p.label for p in svc.config.payments.packs}
    lines = [(_day(p.created_at), labels.get(p.pack_id, p.pack_id), p.stars, p.credits, p.status == "refunded")
             for p in items]
    await show(query, texts.purchases(lines, total), keyboards.purchases())


async def videos(query: CallbackQuery, callback_data: VideosCb, svc: Services, user: User) -> None:
    await query.answer()
    page = max(0, callback_data.page)
    items, total = await svc.history.videos(user.id, offset=page * PAGE_SIZE, limit=PAGE_SIZE)
    if not items and page > 0:  # videos shrank under an old page button: show the last page
        page = max(0, (total - 1) // PAGE_SIZE)
        items, total = await svc.history.videos(user.id, offset=page * PAGE_SIZE, limit=PAGE_SIZE)
    if not items:
        await show(query, texts.NO_VIDEOS, keyboards.no_videos())
        return
    first = page * PAGE_SIZE + 1
    lines = [(first + i, _day(item.finished_at), item.description) for i, item in enumerate(items)]
    buttons = [(first + i, item.job_id) for i, item in enumerate(items)]
    await show(query, texts.videos_page(lines, total),
               keyboards.videos(buttons, page, has_next=(page + 1) * PAGE_SIZE < total))


async def replay(query: CallbackQuery, callback_data: ReplayCb, bot: Bot, svc: Services, user: User) -> None:
    """The stored file_id again: no upload, no charge."""
    item = await svc.history.video(user.id, callback_data.job_id)
    if item is None:
        await query.answer(texts.VIDEO_GONE, show_alert=True)
        return
    chat_id = query.message.chat.id if query.message else user.id
    try:
        await bot.send_video(chat_id, item.file_id, caption=texts.video_again_caption(_day(item.finished_at),
                                                                                     item.description),
                             reply_markup=keyboards.video_result(item.product_id), supports_streaming=True)
    except TelegramAPIError as exc:
        log.warning("user %d: re-sending job %d failed: %s", user.id, item.job_id, exc)
        await query.answer(texts.VIDEO_GONE, show_alert=True)
        return
    await query.answer()


def make_router() -> Router:
    """A fresh router per Dispatcher (a router can belong to one parent only)."""
    router = Router(name="profile")
    router.callback_query.register(cabinet, ProfileCb.filter(F.action == "cabinet"))
    router.callback_query.register(purchases, ProfileCb.filter(F.action == "purchases"))
    router.callback_query.register(videos, VideosCb.filter())
    router.callback_query.register(replay, ReplayCb.filter())
    return router
