"""The slash-command menu Telegram shows next to the input field (setMyCommands at start)."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, BotCommandScopeChat, BotCommandScopeDefault

from neurocards.bot import texts

log = logging.getLogger("neurocards.commands")


async def publish_commands(bot: Bot, admin_ids: tuple[int, ...]) -> None:
    """Everyone sees the seller's commands; each admin also sees the admin ones in their own chat.
    A failure is logged and the bot runs on: the menu is a convenience, not a function."""
    users = [BotCommand(command=c, description=d) for c, d in texts.USER_COMMANDS]
    admins = users + [BotCommand(command=c, description=d) for c, d in texts.ADMIN_COMMANDS]
    try:
        await bot.set_my_commands(users, scope=BotCommandScopeDefault())
        for admin_id in admin_ids:
            await bot.set_my_commands(admins, scope=BotCommandScopeChat(chat_id=admin_id))
    except TelegramAPIError as exc:
        log.warning("setMyCommands failed (%s): the command menu stays as it was", type(exc).__name__)
