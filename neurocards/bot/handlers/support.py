"""«🆘 Поддержка», /support and /paysupport; the relay to the operators and their replies."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.enums import ContentType
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, Filter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from neurocards.bot import keyboards, texts
from neurocards.bot.handlers.common import show
from neurocards.bot.keyboards import MenuCb
from neurocards.bot.states import SupportRelay
from neurocards.services import Services
from neurocards.services.support import (
    has_relay,
    is_support_chat,
    recent_jobs,
    relay_targets,
    seller_of,
)
from neurocards.store.users import User

log = logging.getLogger("neurocards.support")

TEXT_LIMIT, CAPTION_LIMIT = 4096, 1024
CAPTIONED = {ContentType.PHOTO, ContentType.VIDEO, ContentType.DOCUMENT, ContentType.ANIMATION,
             ContentType.AUDIO, ContentType.VOICE}


def _screen(svc: Services, topic: str) -> tuple[str, object]:
    cfg = svc.config.telegram
    if cfg.support_username:
        return texts.support_link(cfg.support_username, topic), keyboards.support_link(cfg.support_username)
    if has_relay(svc.config):
        return texts.support_relay_ask(topic), keyboards.cancel_only()
    return texts.support_unavailable(topic), keyboards.menu_only()


async def _open(svc: Services, state: FSMContext, topic: str) -> tuple[str, object]:
    await state.clear()
    if has_relay(svc.config):
        await state.set_state(SupportRelay.message)
        await state.update_data(topic=topic)
    return _screen(svc, topic)


async def support_button(query: CallbackQuery, state: FSMContext, svc: Services) -> None:
    await query.answer()
    text, markup = await _open(svc, state, "general")
    await show(query, text, markup)  # type: ignore[arg-type]


async def support_command(message: Message, state: FSMContext, svc: Services) -> None:
    text, markup = await _open(svc, state, "general")
    await message.answer(text, reply_markup=markup)  # type: ignore[arg-type]


async def paysupport_command(message: Message, state: FSMContext, svc: Services) -> None:
    text, markup = await _open(svc, state, "payment")
    await message.answer(text, reply_markup=markup)  # type: ignore[arg-type]


async def relay_to_operators(message: Message, state: FSMContext, svc: Services, user: User, bot: Bot) -> None:
    topic = str((await state.get_data()).get("topic", "general"))
    await state.clear()
    header = texts.support_relayed_header(user, topic, await recent_jobs(svc.db, user.id))
    delivered = 0
    for chat_id in relay_targets(svc.config):
        try:
            if message.text is not None:
                await bot.send_message(chat_id, texts.support_relayed_text(header, message.text, TEXT_LIMIT))
            elif message.content_type in CAPTIONED:
                await bot.copy_message(chat_id, message.chat.id, message.message_id,
                                       caption=texts.support_relayed_text(header, message.caption or "",
                                                                          CAPTION_LIMIT))
            else:  # a sticker or a round video has no caption: the header goes first, on its own
                await bot.send_message(chat_id, header)
                await bot.copy_message(chat_id, message.chat.id, message.message_id)
            delivered += 1
        except TelegramAPIError as exc:
            log.warning("support relay of user %d to chat %d failed: %s", user.id, chat_id, type(exc).__name__)
    await message.answer(texts.SUPPORT_SENT if delivered else texts.SUPPORT_NOT_SENT,
                         reply_markup=keyboards.menu_only())


class OperatorReply(Filter):
    """An operator answering (Telegram's Reply) a message the bot relayed from a seller."""

    async def __call__(self, message: Message, svc: Services, bot: Bot) -> bool | dict[str, int]:
        replied = message.reply_to_message
        if replied is None or message.from_user is None or replied.from_user is None:
            return False
        if replied.from_user.id != bot.id or not is_support_chat(svc.config, message.chat.id, message.from_user.id):
            return False
        seller_id = seller_of(replied.text or replied.caption)
        return {"seller_id": seller_id} if seller_id is not None else False


async def operator_reply(message: Message, seller_id: int, bot: Bot) -> None:
    try:
        await bot.send_message(seller_id, texts.SUPPORT_ANSWER_HEADER)
        await bot.copy_message(seller_id, message.chat.id, message.message_id)
    except TelegramAPIError as exc:
        await message.reply(texts.support_reply_failed(seller_id, type(exc).__name__))
        return
    await message.reply(texts.support_reply_sent(seller_id))


def make_router() -> Router:
    """Before the create router (a seller writing to support may send a photo too), after the
    routers of commands."""
    router = Router(name="support")
    router.message.register(operator_reply, OperatorReply())
    router.callback_query.register(support_button, MenuCb.filter(F.action == "support"))
    router.message.register(support_command, Command("support"))
    router.message.register(paysupport_command, Command("paysupport"))
    # Commands keep their meaning (/start leaves the relay); anything else is the message.
    router.message.register(relay_to_operators, SupportRelay.message, ~F.text.startswith("/"))
    return router
