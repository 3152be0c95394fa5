"""Small helpers shared by the routers."""

from __future__ import annotations

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from neurocards.bot import texts
from neurocards.services.products import MAX_DESCRIPTION_CHARS


async def show(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Replace the pressed screen in place when it is a text screen; otherwise send a new message."""
    message = query.message
    if isinstance(message, Message) and message.text is not None:
        try:
            await message.edit_text(text, reply_markup=markup)
            return
        except TelegramBadRequest as exc:
            if "not modified" in exc.message:
                return
    if query.message is not None:
        await query.bot.send_message(query.message.chat.id, text, reply_markup=markup)  # type: ignore[union-attr]


async def description_from(message: Message) -> str | None:
    """The seller's product description, or None after telling them why it cannot be used."""
    text = (message.text or "").strip()
    if not text:
        await message.answer(texts.DESCRIPTION_EMPTY)
        return None
    if len(text) > MAX_DESCRIPTION_CHARS:
        await message.answer(texts.description_too_long(MAX_DESCRIPTION_CHARS))
        return None
    return text
