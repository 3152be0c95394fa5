"""/start, the main menu, balance and support."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from neurocards.bot import keyboards, texts
from neurocards.bot.handlers.common import show
from neurocards.bot.handlers.promo import answer_text as promo_answer
from neurocards.bot.keyboards import MenuCb
from neurocards.bot.states import CreateVideo
from neurocards.services import Services
from neurocards.store.users import User


def _menu_text(svc: Services, user: User) -> str:
    # `user` was read by UserTrackingMiddleware for this very update: its balance is current.
    return texts.menu(user.first_name, user.balance, svc.config.credits.per_video)


async def start(message: Message, state: FSMContext, svc: Services, user: User, is_new_user: bool,
                command: CommandObject | None = None) -> None:
    await state.clear()
    # "/start ref_<code>" from an invite link; recorded only for a user new this very moment.
    await svc.referrals.attach_from_start(user.id, command.args if command else None, is_new_user=is_new_user)
    if is_new_user and svc.config.credits.welcome > 0:
        await message.answer(texts.welcome_bonus(svc.config.credits.welcome))
    # "/start promo_<CODE>" from a promo link: redeemed on top of the welcome gift.
    promo_code = svc.promos.code_from_start(command.args if command else None)
    if promo_code is not None:
        result = await svc.promos.redeem(user.id, promo_code)
        await message.answer(promo_answer(result))
        user = await svc.users.get(user.id) or user
    await message.answer(_menu_text(svc, user), reply_markup=keyboards.main_menu())


async def home(query: CallbackQuery, state: FSMContext, svc: Services, user: User) -> None:
    await state.clear()
    await query.answer()
    await show(query, _menu_text(svc, user), keyboards.main_menu())


async def balance(query: CallbackQuery, svc: Services, user: User) -> None:
    await query.answer()
    await show(query, texts.balance(user.balance, svc.config.credits.per_video), keyboards.balance_screen())


async def create(query: CallbackQuery, state: FSMContext) -> None:
    await state.clear()
    await state.set_state(CreateVideo.photo)
    await query.answer()
    if query.message is not None:
        await query.message.answer(texts.ASK_PHOTO, reply_markup=keyboards.cancel_only())


def make_router() -> Router:
    """A fresh router per Dispatcher (a router can belong to one parent only)."""
    router = Router(name="menu")
    router.message.register(start, CommandStart())
    router.callback_query.register(home, MenuCb.filter(F.action == "home"))
    router.callback_query.register(balance, MenuCb.filter(F.action == "balance"))
    router.callback_query.register(create, MenuCb.filter(F.action == "create"))
    return router
