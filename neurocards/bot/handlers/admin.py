"""Admin commands, for telegram.admin_ids only; anyone else falls through to the normal answers."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import BufferedInputFile, Message

from neurocards.bot import texts
from neurocards.bot.digest import chart_png
from neurocards.services import Services
from neurocards.services.admin import ban_user, unban_user
from neurocards.services.costs import forecast, margin
from neurocards.services.credits import (
    MAX_CREDIT_CHANGE,
    BadAdminInput,
    NotEnoughToRemove,
    add_credits,
    check_amount,
    check_user_id,
)
from neurocards.services.promo import START_PREFIX as PROMO_START
from neurocards.services.promo import PromoInputError
from neurocards.store.stats import period_stats, user_report

log = logging.getLogger("neurocards.admin")


class IsAdmin(Filter):
    def __init__(self, admin_ids: tuple[int, ...]) -> None:
        self.admin_ids = frozenset(admin_ids)

    async def __call__(self, message: Message) -> bool:
        return message.from_user is not None and message.from_user.id in self.admin_ids


def _args(command: CommandObject) -> list[str]:
    return (command.args or "").split()


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def checked_user_id(value: str) -> int | None:
    """A user id typed by an admin, if it is one (positive, int64), else None."""
    return _checked(value, check_user_id)


def _checked(value: str, check: Callable[[int], int]) -> int | None:
    """The number if it is one the action accepts (bounded ids and amounts), else None."""
    number = _int(value)
    try:
        return None if number is None else check(number)
    except BadAdminInput:
        return None


async def _target_user(message: Message, command: CommandObject, usage: str) -> int | None:
    """The user id argument, or None after telling the admin what is wrong with it."""
    args = _args(command)
    if not args or _int(args[0]) is None:
        await message.answer(usage)
        return None
    user_id = _checked(args[0], check_user_id)
    if user_id is None:
        await message.answer(texts.admin_bad_user_id(args[0]))
    return user_id


async def add_credits_cmd(message: Message, command: CommandObject, svc: Services, bot: Bot) -> None:
    args = _args(command)
    if len(args) < 2 or _int(args[0]) is None or _int(args[1]) is None:
        await message.answer(texts.ADMIN_USAGE_ADD)
        return
    user_id, amount = _checked(args[0], check_user_id), _checked(args[1], check_amount)
    if user_id is None:
        await message.answer(texts.admin_bad_user_id(args[0]))
        return
    if amount is None:
        await message.answer(texts.admin_bad_amount(args[1], MAX_CREDIT_CHANGE))
        return
    reason = " ".join(args[2:]) or None
    try:
        change = await add_credits(svc.db, svc.users, user_id, amount, admin_id=message.from_user.id,  # type: ignore[union-attr]
                                   note=reason)
    except NotEnoughToRemove as exc:
        await message.answer(texts.admin_cannot_remove(user_id, exc.balance))
        return
    log.info("admin %d changed credits of %d by %+d", message.from_user.id, user_id, amount)  # type: ignore[union-attr]
    await message.answer(texts.admin_credits_changed(user_id, amount, change.balance))
    if amount > 0:
        try:
            await bot.send_message(user_id, texts.credits_granted(amount, change.balance))
        except TelegramAPIError:
            pass  # the user may never have started the bot; the credits are there anyway


async def user_info_cmd(message: Message, command: CommandObject, svc: Services) -> None:
    user_id = await _target_user(message, command, texts.ADMIN_USAGE_INFO)
    if user_id is None:
        return
    report = await user_report(svc.db, user_id)
    await message.answer(texts.admin_user_report(report) if report else texts.admin_no_user(user_id))


async def ban_cmd(message: Message, command: CommandObject, svc: Services) -> None:
    user_id = await _target_user(message, command, texts.ADMIN_USAGE_BAN)
    if user_id is None:
        return
    result = await ban_user(svc.db, svc.users, svc.jobs, user_id, admin_id=message.from_user.id)  # type: ignore[union-attr]
    await message.answer(texts.admin_banned(user_id, result.changed, len(result.cancelled_jobs)))


async def unban_cmd(message: Message, command: CommandObject, svc: Services) -> None:
    user_id = await _target_user(message, command, texts.ADMIN_USAGE_BAN)
    if user_id is None:
        return
    changed = await unban_user(svc.db, svc.users, user_id, admin_id=message.from_user.id)  # type: ignore[union-attr]
    await message.answer(texts.admin_unbanned(user_id, changed))


async def promo_cmd(message: Message, command: CommandObject, svc: Services, bot: Bot) -> None:
    args = _args(command)
    credits = _int(args[1]) if len(args) >= 2 else None
    uses = _int(args[2]) if len(args) >= 3 else None
    if credits is None or not 2 <= len(args) <= 3 or (len(args) == 3 and uses is None):
        await message.answer(texts.ADMIN_USAGE_PROMO)
        return
    try:
        promo = await svc.promos.create(args[0], credits, uses, created_by=message.from_user.id)  # type: ignore[union-attr]
    except PromoInputError as exc:
        await message.answer(texts.ADMIN_PROMO_BAD[exc.what])
        return
    log.info("admin %d created promo %s", message.from_user.id, promo.code)  # type: ignore[union-attr]
    me = await bot.me()
    link = f"https://t.me/{me.username}?start={PROMO_START}{promo.code}"
    await message.answer(texts.admin_promo_created(promo.code, promo.credits, promo.max_uses, link))


async def stats_cmd(message: Message, svc: Services) -> None:
    today = await period_stats(svc.db, 1)
    week = await period_stats(svc.db, 7)
    keys = svc.key_states() if svc.key_states else []
    balance = await forecast(svc.kie_balance, svc.costs)
    await message.answer(texts.admin_stats(today, week, keys, (margin(today, svc.config), margin(week, svc.config)),
                                           balance))
    await message.answer_photo(BufferedInputFile(await chart_png(svc.db), "neurocards_stats.png"),
                               caption=texts.ADMIN_STATS_CHART)


def make_router(admin_ids: tuple[int, ...]) -> Router:
    router = Router(name="admin")
    router.message.filter(IsAdmin(admin_ids))
    router.message.register(add_credits_cmd, Command("admin_add_credits"))
    router.message.register(user_info_cmd, Command("admin_user_info"))
    router.message.register(ban_cmd, Command("admin_ban"))
    router.message.register(unban_cmd, Command("admin_unban"))
    router.message.register(stats_cmd, Command("admin_stats"))
    router.message.register(promo_cmd, Command("admin_promo"))
    return router
