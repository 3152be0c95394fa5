"""Checks before the bot polls: the token is valid, Telegram is reachable, the database opens.

What systemd sees (the unit has `Restart=on-failure`, `RestartPreventExitStatus=2 78`):
- a rejected token exits 78 (EX_CONFIG) with one line: restarting cannot fix it, so no restart storm;
- a network that is not up yet (a VPS at boot) is retried with a growing delay, one log line
  per attempt, and the bot simply starts once it is up;
- a database that is corrupt, a directory or unreadable exits 1 with one line naming the file;
- polling that dies for good (the token revoked while running) exits non-zero as well.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import (
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType

from neurocards.config import Config

log = logging.getLogger("neurocards.startup")

EXIT_FAILED = 1
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; the unit's RestartPreventExitStatus lists it
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)


class StartupFailed(Exception):
    """The bot cannot start; `str()` is one line for the operator, `exit_code` for systemd."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def token_rejected(config: Config) -> StartupFailed:
    return StartupFailed(
        f"telegram: the bot token was rejected by {config.telegram.api_base} (401 Unauthorized):"
        " check NEUROCARDS_TELEGRAM_TOKEN / telegram.token (from @BotFather)", EXIT_CONFIG)


async def check_telegram(bot: Bot, config: Config, *, delays: tuple[float, ...] | None = None,
                         give_up_after: int | None = None) -> str:
    """getMe until it answers: returns the bot's @username. A rejected token fails at once;
    network errors, 5xx and 429 are retried forever (or `give_up_after` attempts) with backoff."""
    delays = delays or RETRY_DELAYS_S
    attempt = 0
    while True:
        try:
            me = await bot.get_me()
            return me.username or str(me.id)
        except (TelegramUnauthorizedError, TelegramNotFound):
            # The Bot API answers 404 to a token of the wrong shape: just as final as 401.
            raise token_rejected(config) from None
        except (TelegramNetworkError, TelegramServerError, TelegramRetryAfter, OSError) as exc:
            attempt += 1
            if give_up_after is not None and attempt >= give_up_after:
                raise StartupFailed(f"telegram: {config.telegram.api_base} not reachable after {attempt}"
                                    f" attempts: {type(exc).__name__}") from None
            delay = exc.retry_after if isinstance(exc, TelegramRetryAfter) else delays[min(attempt, len(delays)) - 1]
            log.warning("telegram not reachable yet (%s: %s); retry %d in %.0f s", type(exc).__name__,
                        _short(exc), attempt, delay)
            await asyncio.sleep(delay)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:160]


class TokenWatch(BaseRequestMiddleware):
    """aiogram's polling retries every error forever, a revoked token included; this tells the
    application once any call is answered 401, so it can stop and exit with EXIT_CONFIG."""

    def __init__(self, on_rejected: Callable[[], Any]) -> None:
        self.on_rejected = on_rejected

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                       method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        try:
            return await make_request(bot, method)
        except TelegramUnauthorizedError:
            self.on_rejected()
            raise
