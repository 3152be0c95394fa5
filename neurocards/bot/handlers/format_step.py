"""The format step ("9:16 · 3:4 · 1:1 · 16:9"), shared by every dialogue that orders videos.

A dialogue registers what follows the step under its flow name, then calls `ask_format`; the
choice is kept in the FSM data as "aspect" and the dialogue's continuation is called with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiogram import Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery

from neurocards.bot import keyboards, texts
from neurocards.bot.handlers.common import show
from neurocards.bot.keyboards import FormatCb
from neurocards.config import FORMATS
from neurocards.services import Services
from neurocards.store.users import User

# What comes after the step: (query, state, services, user, chosen aspect).
Continuation = Callable[[CallbackQuery, FSMContext, Services, User, str], Awaitable[None]]
_continuations: dict[str, Continuation] = {}


def register_flow(flow: str, after: Continuation) -> None:
    _continuations[flow] = after


async def ask_format(query: CallbackQuery, state: FSMContext, svc: Services, *, flow: str, default: str) -> None:
    await state.update_data(format_flow=flow)
    surcharge = dict(svc.config.formats.surcharge)
    await show(query, texts.ask_format(default, surcharge), keyboards.formats(flow, default, surcharge))


async def chose_format(query: CallbackQuery, callback_data: FormatCb, state: FSMContext, svc: Services,
                       user: User) -> None:
    after = _continuations.get(callback_data.flow)
    data = await state.get_data()
    if after is None or callback_data.aspect not in FORMATS or data.get("format_flow") != callback_data.flow:
        await query.answer(texts.SESSION_EXPIRED, show_alert=True)
        return
    await state.update_data(aspect=callback_data.aspect)
    await after(query, state, svc, user, callback_data.aspect)


def make_router() -> Router:
    """Include before the dialogues' routers: their catch-alls would answer the step's buttons."""
    router = Router(name="format")
    router.callback_query.register(chose_format, FormatCb.filter())
    return router
