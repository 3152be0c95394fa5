"""Promo codes for sellers: /promo CODE, the "🎁 Промокод" button, and t.me/<bot>?start=promo_CODE."""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from neurocards.bot import keyboards, texts
from neurocards.bot.handlers.common import show
from neurocards.bot.keyboards import MenuCb
from neurocards.bot.states import PromoInput
from neurocards.services import Services
from neurocards.services.promo import Malformed, Wait
from neurocards.store.promo import Redeemed
from neurocards.store.users import User

log = logging.getLogger("neurocards.promo")


def answer_text(result: object) -> str:
    if isinstance(result, Redeemed):
        return texts.promo_redeemed(result.code, result.credits, result.balance)
    if result is Wait.TOO_MANY_WRONG:
        return texts.PROMO_WAIT
    if result is Malformed.FORMAT:
        return texts.PROMO_FORMAT
    return texts.PROMO_REFUSED[str(result)]


async def redeem(message: Message, svc: Services, user_id: int, text: str) -> None:
    result = await svc.promos.redeem(user_id, text)
    if isinstance(result, Redeemed):
        log.info("user %d redeemed promo %s (+%d)", user_id, result.code, result.credits)
    await message.answer(answer_text(result), reply_markup=keyboards.menu_only())


async def promo_command(message: Message, command: CommandObject, state: FSMContext, svc: Services,
                        user: User) -> None:
    await state.clear()
    if command.args:
        await redeem(message, svc, user.id, command.args)
        return
    await state.set_state(PromoInput.code)
    await message.answer(texts.PROMO_ASK, reply_markup=keyboards.cancel_only())


async def promo_button(query: CallbackQuery, state: FSMContext) -> None:
    await state.set_state(PromoInput.code)
    await query.answer()
    await show(query, texts.PROMO_ASK, keyboards.cancel_only())


async def got_code(message: Message, state: FSMContext, svc: Services, user: User) -> None:
    await state.clear()
    await redeem(message, svc, user.id, message.text or "")


def make_router() -> Router:
    """A fresh router per Dispatcher (a router can belong to one parent only)."""
    router = Router(name="promo")
    router.message.register(promo_command, Command("promo"))
    router.callback_query.register(promo_button, MenuCb.filter(F.action == "promo"))
    router.message.register(got_code, PromoInput.code, F.text)
    return router
