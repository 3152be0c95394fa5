""""📄 Выписка": the last ledger rows in plain words and the whole history as CSV."""

from __future__ import annotations

import time

from aiogram import Bot, F, Router
from aiogram.types import BufferedInputFile, CallbackQuery

from neurocards.bot import keyboards, statement, texts
from neurocards.bot.handlers.common import show
from neurocards.bot.keyboards import StatementCb
from neurocards.services import Services
from neurocards.store.users import User

SHOWN_ROWS = 20


def _when(ts: float) -> str:
    return time.strftime("%d.%m %H:%M", time.localtime(ts))


async def show_statement(query: CallbackQuery, svc: Services, user: User) -> None:
    await query.answer()
    rows = await svc.statement.rows(user.id, last=SHOWN_ROWS)
    if not rows:
        await show(query, texts.STATEMENT_EMPTY, keyboards.balance_screen())
        return
    total = await svc.statement.count(user.id)
    text = texts.statement_screen(statement.chat_lines(rows, _when), rows[-1].balance_after, total)
    await show(query, text, keyboards.statement())


async def send_csv(query: CallbackQuery, bot: Bot, svc: Services, user: User) -> None:
    rows = await svc.statement.rows(user.id)
    if not rows:
        await query.answer(texts.STATEMENT_NOTHING, show_alert=True)
        return
    await query.answer()
    chat_id = query.message.chat.id if query.message else user.id
    document = BufferedInputFile(statement.to_csv(rows), filename=f"neurocards-{user.id}-statement.csv")
    await bot.send_document(chat_id, document, caption=texts.STATEMENT_CSV_CAPTION)


def make_router() -> Router:
    """A fresh router per Dispatcher (a router can belong to one parent only)."""
    router = Router(name="statement")
    router.callback_query.register(show_statement, StatementCb.filter(F.action == "show"))
    router.callback_query.register(send_csv, StatementCb.filter(F.action == "csv"))
    return router
