"""Behaviour of the non-message methods: updates, webhook, commands, files, chats,
callback answers and Telegram Stars payments."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from .telegram_media import file_object
from .telegram_methods import Files, Handler, Params, deliver
from .telegram_schema import ApiError, bad_request
from .telegram_state import CallbackAnswer, StoredMessage, TelegramState

BOT_HANDLERS: dict[str, Handler] = {}
QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"
MAX_POLL_TIMEOUT = 50  # the server caps long polling; keeps a stray huge timeout bounded


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        BOT_HANDLERS[name.lower()] = func
        return func

    return register


@handler("getMe")
async def get_me(state: TelegramState, params: Params, files: Files) -> Any:
    return {
        **state.bot_user(),
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


@handler("getUpdates")
async def get_updates(state: TelegramState, params: Params, files: Files) -> Any:
    if state.webhook_url:
        raise ApiError(
            409,
            "Conflict: can't use getUpdates method while webhook is active; "
            "use deleteWebhook to delete the webhook first",
        )
    # A newer getUpdates terminates the older one, exactly like two bot instances.
    state.poll_generation += 1
    generation = state.poll_generation
    state.changed()
    if params.get("offset") is not None:
        state.confirm_updates(int(params["offset"]))
    if params.get("allowed_updates") is not None:
        state.allowed_updates = frozenset(params["allowed_updates"]) or None
    limit = min(max(int(params.get("limit") or 100), 1), 100)
    timeout = min(max(int(params.get("timeout") or 0), 0), MAX_POLL_TIMEOUT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if state.poll_generation != generation:
            raise ApiError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        batch = state.take_updates(limit)
        remaining = deadline - loop.time()
        if batch or remaining <= 0 or state.closing:
            return batch
        await state.wait_change(remaining)


@handler("deleteWebhook")
async def delete_webhook(state: TelegramState, params: Params, files: Files) -> Any:
    state.webhook_url = ""
    if params.get("drop_pending_updates"):
        state.pending_updates.clear()
    return True


@handler("setWebhook")
async def set_webhook(state: TelegramState, params: Params, files: Files) -> Any:
    url = str(params["url"])
    if url and not url.startswith("https://"):
        raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
    state.webhook_url = url
    if params.get("drop_pending_updates"):
        state.pending_updates.clear()
    return True


@handler("getWebhookInfo")
async def get_webhook_info(state: TelegramState, params: Params, files: Files) -> Any:
    return {
        "url": state.webhook_url,
        "has_custom_certificate": False,
        "pending_update_count": len(state.pending_updates),
    }


def _commands_key(params: Params) -> str:
    scope = params.get("scope") or {"type": "default"}
    return f"{json.dumps(scope, sort_keys=True)}|{params.get('language_code') or ''}"


@handler("setMyCommands")
async def set_my_commands(state: TelegramState, params: Params, files: Files) -> Any:
    commands = params["commands"]
    if len(commands) > 100:
        raise bad_request("too many commands")
    for command in commands:
        if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", ""))) <= 256:
            raise bad_request("command description must be 1-256 characters")
    state.commands[_commands_key(params)] = list(commands)
    return True


@handler("deleteMyCommands")
async def delete_my_commands(state: TelegramState, params: Params, files: Files) -> Any:
    state.commands.pop(_commands_key(params), None)
    return True


@handler("getMyCommands")
async def get_my_commands(state: TelegramState, params: Params, files: Files) -> Any:
    return state.commands.get(_commands_key(params), [])


@handler("getFile")
async def get_file(state: TelegramState, params: Params, files: Files) -> Any:
    return file_object(state, params["file_id"])


@handler("getChat")
async def get_chat(state: TelegramState, params: Params, files: Files) -> Any:
    chat = state.resolve_chat(params["chat_id"], sending=False)
    return {
        **chat.user.as_chat(),
        "accent_color_id": 0,
        "max_reaction_count": 11,
        "accepted_gift_types": {
            "unlimited_gifts": True,
            "limited_gifts": True,
            "unique_gifts": True,
            "premium_subscription": True,
            "gifts_from_channels": True,
        },
    }


@handler("answerCallbackQuery")
async def answer_callback_query(state: TelegramState, params: Params, files: Files) -> Any:
    record = state.callbacks.get(str(params["callback_query_id"]))
    if record is None or record.answer is not None:
        raise bad_request(QUERY_INVALID)  # a query can be answered only once
    text = params.get("text")
    if text is not None and len(str(text)) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    record.answer = CallbackAnswer(
        callback_query_id=record.id,
        text=text,
        show_alert=bool(params.get("show_alert")),
        url=params.get("url"),
    )
    state.changed()
    return True


def _check_invoice(params: Params) -> int:
    """Stars invoice rules; returns the total amount."""
    if not 1 <= len(params["title"]) <= 32:
        raise bad_request("INVOICE_TITLE_INVALID")
    if not 1 <= len(params["description"]) <= 255:
        raise bad_request("INVOICE_DESCRIPTION_INVALID")
    if not 1 <= len(params["payload"].encode("utf-8")) <= 128:
        raise bad_request("INVOICE_PAYLOAD_INVALID")
    prices = params["prices"]
    if params["currency"] == "XTR":
        if params.get("provider_token"):
            raise bad_request("PAYMENT_PROVIDER_INVALID")  # Stars take no provider
        if len(prices) != 1:
            raise bad_request("STARS_INVOICE_INVALID")
    elif not params.get("provider_token"):
        raise bad_request("PAYMENT_PROVIDER_INVALID")
    total = sum(int(p["amount"]) for p in prices)
    if total <= 0:
        raise bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
    return total


@handler("sendInvoice")
async def send_invoice(state: TelegramState, params: Params, files: Files) -> Any:
    chat = state.resolve_chat(params["chat_id"])
    total = _check_invoice(params)
    invoice = {
        "title": params["title"],
        "description": params["description"],
        "start_parameter": params.get("start_parameter") or "",
        "currency": params["currency"],
        "total_amount": total,
    }
    stored = StoredMessage(
        raw={"invoice": invoice},
        from_bot=True,
        kind="invoice",
        source_text=params["description"],
        invoice={**invoice, "payload": params["payload"], "prices": params["prices"]},
    )
    return deliver(state, chat, params, stored)


@handler("createInvoiceLink")
async def create_invoice_link(state: TelegramState, params: Params, files: Files) -> Any:
    _check_invoice(params)
    return f"https://t.me/$fake{state.random_id()}"


@handler("answerPreCheckoutQuery")
async def answer_pre_checkout_query(state: TelegramState, params: Params, files: Files) -> Any:
    record = state.pre_checkouts.get(str(params["pre_checkout_query_id"]))
    if record is None or record.answer is not None:
        raise bad_request(QUERY_INVALID)
    ok = bool(params["ok"])
    if not ok and not params.get("error_message"):
        raise bad_request('parameter "error_message" is required when ok is False')
    record.answer = (ok, params.get("error_message"))
    state.changed()
    return True


@handler("refundStarPayment")
async def refund_star_payment(state: TelegramState, params: Params, files: Files) -> Any:
    charge = state.charges.get(str(params["telegram_payment_charge_id"]))
    if charge is None or charge.user_id != int(params["user_id"]):
        raise bad_request("CHARGE_NOT_FOUND")
    if charge.refunded:
        raise bad_request("CHARGE_ALREADY_REFUNDED")
    charge.refunded = True
    state.changed()
    return True
