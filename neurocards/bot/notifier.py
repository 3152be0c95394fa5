"""The engine's chat side: videos and job news sent through aiogram."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import FSInputFile

from neurocards.bot import keyboards, texts
from neurocards.jobs.alerts import OperatorAlert
from neurocards.jobs.failures import Failure, FailureClass
from neurocards.jobs.notifier import DeliveryError, DeliveryErrorKind
from neurocards.services.orders import BalanceView
from neurocards.store.jobs import Job

log = logging.getLogger("neurocards.delivery")

CaptionSource = Callable[[int], Awaitable[tuple[str, int, int] | None]]


class TelegramNotifier:
    def __init__(self, bot: Bot, *, admin_ids: tuple[int, ...], support_username: str,
                 max_upload_bytes: int, balance_view: Callable[[int], BalanceView] | None = None,
                 caption_of: CaptionSource | None = None) -> None:
        self.bot = bot
        # How a balance compares with the price of one video now (low-balance line, top-up button).
        self.balance_view = balance_view or (lambda balance: BalanceView(balance, price=0, low_videos=0))
        # (product description, place in the order, videos in the order) for a job's caption.
        self.caption_of = caption_of
        self.admin_ids = admin_ids
        self.support_username = support_username
        self.max_upload_bytes = max_upload_bytes

    async def deliver_video(self, job: Job, path: Path | None, balance: int, simple: bool = False,
                            timeout_s: float | None = None) -> str:
        if job.video_file_id:
            video: FSInputFile | str = job.video_file_id
        elif path is not None:
            if path.stat().st_size > self.max_upload_bytes:
                raise DeliveryError(DeliveryErrorKind.TOO_LARGE, f"{path.stat().st_size} bytes")
            video = FSInputFile(path, filename=f"neurocards_{job.id}.mp4")
        else:
            raise DeliveryError(DeliveryErrorKind.REJECTED, "nothing to send")
        caption = self._ready_caption(job, balance, simple)
        if self.caption_of is not None and job.order_id is not None:
            info = await self.caption_of(job.id)
            if info is not None:  # which product, which place in the order, then the usual lines
                caption = texts.video_order_line(*info) + "\n" + caption
        try:
            message = await self.bot.send_video(
                job.chat_id, video, caption=caption,
                reply_markup=keyboards.video_result(job.product_id), supports_streaming=True,
                request_timeout=math.ceil(timeout_s) if timeout_s else None)
        except TelegramRetryAfter as exc:
            raise DeliveryError(DeliveryErrorKind.RETRY_AFTER, exc.message, float(exc.retry_after)) from None
        except TelegramForbiddenError as exc:
            raise DeliveryError(DeliveryErrorKind.FORBIDDEN, exc.message) from None
        except TelegramEntityTooLarge as exc:
            raise DeliveryError(DeliveryErrorKind.TOO_LARGE, exc.message) from None
        except TelegramBadRequest as exc:
            raise DeliveryError(DeliveryErrorKind.REJECTED, exc.message) from None
        except TelegramServerError as exc:  # Telegram answered: the video is not in the chat
            raise DeliveryError(DeliveryErrorKind.NETWORK, str(exc)) from None
        except TelegramNetworkError as exc:
            kind = DeliveryErrorKind.NETWORK if _never_connected(exc) else DeliveryErrorKind.UNSURE
            raise DeliveryError(kind, str(exc)) from None
        except TimeoutError as exc:
            raise DeliveryError(DeliveryErrorKind.UNSURE, str(exc) or "timeout") from None
        if message.video is not None:
            return message.video.file_id
        if message.document is not None:
            return message.document.file_id
        raise DeliveryError(DeliveryErrorKind.REJECTED, "Telegram returned no video")

    def _ready_caption(self, job: Job, balance: int, simple: bool) -> str:
        # The balance was read before the job is marked done; marking it done returns the price
        # difference of a cheaper provider (a database trigger), so show the balance after it.
        refund_due = job.cost - job.price_paid
        return texts.video_ready(self.balance_view(balance + refund_due), simple=simple,
                                 paid=job.price_paid, ordered=job.cost)

    async def job_retrying(self, job: Job) -> None:
        await self.bot.send_message(job.chat_id, texts.FIRST_RETRY)

    async def job_failed(self, job: Job, failure: Failure, attempts: int, balance: int) -> None:
        cls = failure.cls
        topup = self.balance_view(balance).short
        if cls is FailureClass.USER_VIOLATION:
            reason = texts.VIOLATION_REASONS["people"] if _mentions_people(failure.text) \
                else texts.VIOLATION_REASONS["default"]
            await self.bot.send_message(job.chat_id, texts.failed_violation(reason, balance),
                                        reply_markup=keyboards.failed_violation(topup=topup))
        elif cls in (FailureClass.BILLING, FailureClass.OUR_BUG):
            await self.bot.send_message(job.chat_id, texts.failed_technical(balance, self.support_username),
                                        reply_markup=keyboards.failed_retry(job.product_id, topup=topup))
        elif cls is FailureClass.TIMEOUT:
            await self.bot.send_message(job.chat_id, texts.failed_timeout(balance),
                                        reply_markup=keyboards.failed_retry(job.product_id, topup=topup))
        elif cls is FailureClass.GENERATION_FAILED:
            await self.bot.send_message(job.chat_id, texts.failed_generation(balance),
                                        reply_markup=keyboards.failed_violation(topup=topup))
        elif cls is FailureClass.PHOTO_GONE:
            await self.bot.send_message(job.chat_id, texts.failed_photo_gone(balance),
                                        reply_markup=keyboards.failed_violation(topup=topup))
        else:
            await self.bot.send_message(job.chat_id, texts.failed_after_retries(attempts, balance),
                                        reply_markup=keyboards.failed_retry(job.product_id, topup=topup))

    async def delivery_delayed(self, job: Job) -> None:
        await self.bot.send_message(job.chat_id, texts.DELIVERY_DELAYED)

    async def delivery_failed(self, job: Job, balance: int) -> None:
        topup = self.balance_view(balance).short
        await self.bot.send_message(job.chat_id, texts.delivery_failed(balance),
                                    reply_markup=keyboards.failed_retry(job.product_id, topup=topup))

    async def job_waiting(self, job: Job, eta_minutes: int) -> None:
        await self.bot.send_message(job.chat_id, texts.queue_wait(eta_minutes))

    async def alert_admins(self, alert: OperatorAlert) -> None:
        text = texts.operator_alert(alert)
        for admin_id in self.admin_ids:
            try:
                await self.bot.send_message(admin_id, text, parse_mode=None)
            except Exception as exc:  # an unreachable admin must not stop the others
                log.warning("alert to admin %d failed: %s", admin_id, type(exc).__name__)


def _never_connected(exc: TelegramNetworkError) -> bool:
    """aiogram and our proxy session name the aiohttp error: a failed connect (directly, to a
    proxy or through it) means the upload never left."""
    return any(name in exc.message for name in _CONNECT_FAILURES)


# Error names as they appear in TelegramNetworkError messages, for failures before the request
# was sent (bot/session.py `_AIOHTTP_CONNECT_ERRORS`, aiogram's "HTTP Client says - <name>: ...").
_CONNECT_FAILURES = ("ClientConnectorError", "Cannot connect to host", "ConnectionTimeoutError",
                     "ClientHttpProxyError", "ProxyConnectionError", "ProxyTimeoutError", "ProxyError",
                     "proxies are cooling down")


def _mentions_people(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in ("people", "face", "person", "minor", "human"))
