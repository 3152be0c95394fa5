"""The Telegram side of payments and referrals, shared by the bot and the command line."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest

from neurocards.bot import keyboards, texts
from neurocards.services.payments import Refunded, RefundStars, StarRefundFailed
from neurocards.store.referrals import ReferralBonus

log = logging.getLogger("neurocards.payments")


def star_refunder(bot: Bot) -> RefundStars:
    """refundStarPayment, with Telegram's errors turned into StarRefundFailed."""

    async def refund(user_id: int, charge_id: str) -> None:
        try:
            ok = await bot.refund_star_payment(user_id=user_id, telegram_payment_charge_id=charge_id)
        except TelegramBadRequest as exc:
            raise StarRefundFailed(exc.message, already_refunded="ALREADY_REFUNDED" in exc.message.upper()) from None
        except TelegramAPIError as exc:
            raise StarRefundFailed(f"{type(exc).__name__}: {exc}") from None
        if not ok:
            raise StarRefundFailed("refundStarPayment returned false")

    return refund


async def tell_refunded(bot: Bot, refunded: Refunded) -> None:
    payment = refunded.payment
    try:
        await bot.send_message(payment.user_id, texts.payment_refunded(payment.stars, refunded.removed,
                                                                       refunded.balance))
    except TelegramAPIError as exc:  # the refund stands; the user may have blocked the bot
        log.warning("refund notice to %d failed: %s", payment.user_id, type(exc).__name__)


async def announce_referral_bonus(bot: Bot, bonus: ReferralBonus) -> None:
    await bot.send_message(bonus.referrer_id, texts.referral_bonus(bonus.credits, bonus.referrer_balance),
                           reply_markup=keyboards.menu_only())
