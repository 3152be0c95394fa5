"""Broadcasts: the admin's draft → preview, segment, confirm; the sellers' opt-out button."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from neurocards.bot import keyboards, texts
from neurocards.bot.broadcaster import send_content
from neurocards.bot.handlers.admin import IsAdmin
from neurocards.bot.keyboards import BroadcastCb, NewsCb
from neurocards.bot.states import BroadcastDraft
from neurocards.services import Services
from neurocards.services.broadcast import check_draft, parse_button
from neurocards.store.broadcasts import SEGMENTS, Draft
from neurocards.store.users import User

log = logging.getLogger("neurocards.broadcast")


async def begin(message: Message, state: FSMContext) -> None:
    await state.clear()
    await state.set_state(BroadcastDraft.message)
    await message.answer(texts.BROADCAST_ASK, reply_markup=keyboards.cancel_only())


async def _show_preview(message: Message, bot: Bot, state: FSMContext, svc: Services) -> None:
    data = await state.get_data()
    draft = Draft(kind=data["kind"], body=data["body"], file_id=data["file_id"],
                  button_text=data.get("button_text"), button_url=data.get("button_url"))
    await send_content(bot, message.chat.id, draft)
    count = await svc.broadcasts.count_recipients(data["segment"])
    await message.answer(texts.broadcast_preview_note(count, data["segment"]),
                         reply_markup=keyboards.broadcast_control(data["segment"]))
    await state.set_state(BroadcastDraft.confirm)


async def got_message(message: Message, bot: Bot, state: FSMContext, svc: Services) -> None:
    limit = svc.config.telegram.max_upload_mb * 1024 * 1024
    fields, problem = _draft_fields(message, limit)
    if fields is None:
        await message.answer(texts.BROADCAST_PROBLEMS[str(problem)])
        return
    await state.update_data(**fields, segment="all", key=uuid.uuid4().hex, button_text=None, button_url=None)
    await _show_preview(message, bot, state, svc)


def _draft_fields(message: Message, max_file_bytes: int) -> tuple[dict[str, Any] | None, str | None]:
    if message.photo:
        kind, file_id, size = "photo", message.photo[-1].file_id, message.photo[-1].file_size
    elif message.video:
        kind, file_id, size = "video", message.video.file_id, message.video.file_size
    elif message.text is not None:
        kind, file_id, size = "text", None, None
    else:
        kind, file_id, size = None, None, None
    plain = message.text or message.caption or ""
    problem = check_draft(kind, plain, size, max_file_bytes)
    if problem is not None:
        return None, problem
    return {"kind": kind, "body": message.html_text if plain else "", "file_id": file_id}, None


async def choose_segment(query: CallbackQuery, callback_data: BroadcastCb, state: FSMContext,
                         svc: Services) -> None:
    if callback_data.value not in SEGMENTS or not (await state.get_data()).get("key"):
        await query.answer(texts.BROADCAST_STALE, show_alert=True)
        return
    await state.update_data(segment=callback_data.value)
    count = await svc.broadcasts.count_recipients(callback_data.value)
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(texts.broadcast_preview_note(count, callback_data.value),
                                      reply_markup=keyboards.broadcast_control(callback_data.value))


async def ask_button(query: CallbackQuery, state: FSMContext) -> None:
    await query.answer()
    await state.set_state(BroadcastDraft.button)
    if query.message is not None:
        await query.message.answer(texts.BROADCAST_ASK_BUTTON)


async def got_button(message: Message, bot: Bot, state: FSMContext, svc: Services) -> None:
    parsed = parse_button(message.text or "")
    if parsed is None:
        await message.answer(texts.BROADCAST_BAD_BUTTON)
        return
    await state.update_data(button_text=parsed[0], button_url=parsed[1])
    await _show_preview(message, bot, state, svc)


async def send(query: CallbackQuery, state: FSMContext, svc: Services, user: User) -> None:
    data = await state.get_data()
    if not data.get("key") or query.message is None:
        await query.answer(texts.BROADCAST_STALE, show_alert=True)
        return
    if await svc.broadcasts.count_recipients(data["segment"]) == 0:
        await query.answer(texts.BROADCAST_NOBODY, show_alert=True)
        return
    draft = Draft(kind=data["kind"], body=data["body"], file_id=data["file_id"],
                  button_text=data.get("button_text"), button_url=data.get("button_url"))
    broadcast = await svc.broadcasts.create(draft_key=data["key"], admin_id=user.id,
                                            admin_chat_id=query.message.chat.id, draft=draft, segment=data["segment"])
    await state.clear()
    if broadcast is None:  # a second press of the same draft
        await query.answer(texts.BROADCAST_STALE, show_alert=True)
        return
    counts = await svc.broadcasts.counts(broadcast.id)
    log.info("admin %d started broadcast %d to %d (%s)", user.id, broadcast.id, counts.total, broadcast.segment)
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(texts.broadcast_started(broadcast.id, counts.total))
    if svc.broadcaster is not None:
        svc.broadcaster.launch(broadcast)


async def cancel(query: CallbackQuery, state: FSMContext) -> None:
    await state.clear()
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(texts.BROADCAST_CANCELLED)


async def stop(message: Message, command: CommandObject, svc: Services) -> None:
    arg = (command.args or "").strip().lstrip("#")
    stopped = await svc.broadcasts.stop(int(arg) if arg.isdigit() else None)
    await message.answer(texts.broadcast_stopped(stopped) if stopped else texts.BROADCAST_NOTHING_TO_STOP)


async def news_off(query: CallbackQuery, svc: Services, user: User) -> None:
    await svc.broadcasts.opt_out(user.id)
    await query.answer(texts.NEWS_OFF_DONE, show_alert=True)


def make_router(admin_ids: tuple[int, ...]) -> Router:
    """A fresh router per Dispatcher (a router can belong to one parent only)."""
    router = Router(name="broadcast")
    admin = IsAdmin(admin_ids)
    router.message.register(begin, Command("admin_broadcast"), admin)
    router.message.register(stop, Command("admin_broadcast_stop"), admin)
    router.message.register(got_message, BroadcastDraft.message, admin)
    router.message.register(got_button, BroadcastDraft.button, admin)
    router.callback_query.register(choose_segment, BroadcastCb.filter(F.action == "segment"), admin)
    router.callback_query.register(ask_button, BroadcastCb.filter(F.action == "button"), admin)
    router.callback_query.register(send, BroadcastCb.filter(F.action == "send"), admin)
    router.callback_query.register(cancel, BroadcastCb.filter(F.action == "cancel"), admin)
    router.callback_query.register(news_off, NewsCb.filter(F.action == "off"))
    return router
