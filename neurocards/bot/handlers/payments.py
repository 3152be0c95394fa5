"""Buying credits with Telegram Stars: packs → invoice → pre-checkout → successful payment.
Also /terms and the admin's /admin_refund."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, LabeledPrice, Message, PreCheckoutQuery

from neurocards.bot import keyboards, texts
from neurocards.bot.billing import star_refunder, tell_refunded
from neurocards.bot.handlers.admin import IsAdmin, checked_user_id
from neurocards.bot.handlers.common import show
from neurocards.bot.keyboards import PayCb
from neurocards.services import Services
from neurocards.services.payments import (
    CURRENCY,
    AlreadyRefunded,
    CreditsSpent,
    PaymentNotFound,
    RefundInProgress,
    StarRefundFailed,
)
from neurocards.store.users import User

log = logging.getLogger("neurocards.payments")


def _per_video(svc: Services) -> int:
    return svc.orders.quote(1, 0).cost


async def packs(query: CallbackQuery, svc: Services, user: User) -> None:
    await query.answer()
    balance = await svc.users.balance(user.id)
    await show(query, texts.packs_screen(balance, _per_video(svc)), keyboards.packs(svc.payments.packs))


async def buy(query: CallbackQuery, callback_data: PayCb, bot: Bot, svc: Services, user: User) -> None:
    pack = svc.config.payments.pack(callback_data.pack_id)
    if pack is None:
        await query.answer(texts.PACK_GONE, show_alert=True)
        return
    await query.answer()
    chat_id = query.message.chat.id if query.message else user.id
    try:
        await bot.send_invoice(
            chat_id, title=pack.label, description=texts.invoice_description(pack.credits, _per_video(svc)),
            payload=svc.payments.payload(pack, user.id), currency=CURRENCY,
            prices=[LabeledPrice(label=pack.label, amount=pack.stars)])
    except TelegramAPIError as exc:
        log.warning("user %d: invoice for pack %s failed: %s", user.id, pack.id, exc)
        return
    await _log(svc, user.id, "invoice", pack.id)


async def pre_checkout(query: PreCheckoutQuery, svc: Services) -> None:
    """Telegram waits about 10 s for this answer; only cheap checks here."""
    user = await svc.users.get(query.from_user.id)
    problem = svc.payments.check(user, query.from_user.id, query.invoice_payload, query.currency,
                                 query.total_amount)
    if problem is None:
        await query.answer(ok=True)
        return
    log.info("user %d: pre-checkout refused (%s): %s", query.from_user.id, problem, query.invoice_payload)
    await query.answer(ok=False, error_message=texts.CHECKOUT_PROBLEMS[problem.value])


async def paid(message: Message, svc: Services) -> None:
    payment = message.successful_payment
    assert payment is not None and message.from_user is not None
    credited = await svc.payments.credit(
        user_id=message.from_user.id, charge_id=payment.telegram_payment_charge_id,
        provider_charge_id=payment.provider_payment_charge_id or None, payload=payment.invoice_payload,
        currency=payment.currency, total=payment.total_amount)
    if credited.duplicate:
        await message.answer(texts.payment_duplicate(credited.balance))
    elif credited.credits == 0:
        await message.answer(texts.PAYMENT_UNMATCHED)
    else:
        await message.answer(texts.payment_received(credited.credits, credited.balance),
                             reply_markup=keyboards.after_payment())


async def terms(message: Message, svc: Services) -> None:
    await message.answer(texts.terms(svc.config.payments.terms_text, _per_video(svc)),
                         reply_markup=keyboards.menu_only())


async def admin_refund(message: Message, command: CommandObject, bot: Bot, svc: Services) -> None:
    args = (command.args or "").split()
    user_id = checked_user_id(args[0]) if len(args) == 2 else None
    if user_id is None:
        await message.answer(texts.ADMIN_USAGE_REFUND)
        return
    charge_id = args[1]
    admin_id = message.from_user.id  # type: ignore[union-attr]
    try:
        refunded = await svc.payments.refund(user_id, charge_id, admin_id=admin_id, refund_stars=star_refunder(bot))
    except PaymentNotFound:
        await message.answer(texts.admin_refund_refused("not_found"))
        return
    except AlreadyRefunded:
        await message.answer(texts.admin_refund_refused("already"))
        return
    except RefundInProgress:
        await message.answer(texts.admin_refund_refused("in_progress"))
        return
    except CreditsSpent as exc:
        await message.answer(texts.admin_refund_refused("spent", balance=exc.balance, credits=exc.credits))
        return
    except StarRefundFailed as exc:
        await message.answer(texts.admin_refund_refused("telegram", detail=exc.message))
        return
    payment = refunded.payment
    await message.answer(texts.admin_refund_done(user_id, payment.stars, refunded.removed, payment.credits,
                                                 refunded.balance))
    await tell_refunded(bot, refunded)


async def _log(svc: Services, user_id: int, action: str, detail: str) -> None:
    try:
        await svc.activity.log(user_id, action, detail)
    except Exception as exc:  # analytics must never cost a sale
        log.warning("activity log failed: %s", type(exc).__name__)


def make_router(admin_ids: tuple[int, ...]) -> Router:
    """A fresh router per Dispatcher (a router can belong to one parent only)."""
    router = Router(name="payments")
    router.callback_query.register(packs, PayCb.filter(F.action == "list"))
    router.callback_query.register(buy, PayCb.filter(F.action == "buy"))
    router.pre_checkout_query.register(pre_checkout)
    router.message.register(paid, F.successful_payment)
    router.message.register(terms, Command("terms"))
    # Anyone else falls through to the normal "unknown" answer and nothing changes.
    router.message.register(admin_refund, Command("admin_refund"), IsAdmin(admin_ids))
    return router
