"""An order of many products from one album: one answer per album, then one description per photo.

After the descriptions the album joins the ordinary dialogue (style → wishes → quantity → confirm),
which works on the list of products in the dialogue's data (`product_ids`).
"""

from __future__ import annotations

import io
import logging

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.fsm.context import FSMContext
from aiogram.fsm.storage.base import BaseStorage, StorageKey
from aiogram.types import CallbackQuery, Message

from neurocards.bot import keyboards, texts
from neurocards.bot.albums import AlbumCollector
from neurocards.bot.handlers.common import description_from, show
from neurocards.bot.keyboards import AlbumCb
from neurocards.bot.states import CreateVideo, OrderAlbum
from neurocards.services import Services
from neurocards.services.orders import MAX_PRODUCTS
from neurocards.services.products import (
    MAX_DESCRIPTION_CHARS,
    MAX_PHOTO_BYTES,
    PhotoRejected,
    save_product_photo,
)
from neurocards.store.albums import AlbumItem
from neurocards.store.users import User

log = logging.getLogger("neurocards.bot")

PHOTO_KINDS = ("photo", "image")


def dialogue_products(state: str | None, data: dict) -> list[int]:
    """Products of the order being put together in this dialogue (none once it was launched)."""
    if state is None:
        return []
    if data.get("product_ids"):
        return [int(p) for p in data["product_ids"]]
    return [int(data["product_id"])] if data.get("product_id") else []


class AlbumDialogue:
    """Turns a settled album into products and asks for what is missing, in one answer."""

    def __init__(self, bot: Bot, storage: BaseStorage, svc: Services) -> None:
        self.bot = bot
        self.storage = storage
        self.svc = svc

    async def on_album(self, chat_id: int, user_id: int, items: list[AlbumItem]) -> None:
        user = await self.svc.users.get(user_id)
        if user is None or user.is_banned:
            return
        state = FSMContext(self.storage, StorageKey(bot_id=self.bot.id, chat_id=chat_id, user_id=user_id))
        photos = [(n, i) for n, i in enumerate(items, start=1) if i.kind in PHOTO_KINDS]
        skipped = [(n, i.kind) for n, i in enumerate(items, start=1) if i.kind not in PHOTO_KINDS]
        current = dialogue_products(await state.get_state(), await state.get_data())
        product_ids, rejected, long_captions, cut = await self._save(user_id, photos)
        report = texts.album_accepted(len(product_ids), skipped=skipped, rejected=rejected, cut=cut,
                                      cut_description=long_captions, limit=MAX_PRODUCTS,
                                      description_limit=MAX_DESCRIPTION_CHARS)
        if not product_ids:
            await self.bot.send_message(chat_id, texts.ALBUM_NOTHING_USABLE + "\n\n" + report,
                                        reply_markup=keyboards.menu_only())
            return
        if current:
            await state.set_state(OrderAlbum.replace_or_add)
            await state.update_data(product_ids=current, pending_ids=product_ids)
            await self.bot.send_message(chat_id, report)
            await self.bot.send_message(chat_id, texts.album_while_ordering(len(current), len(product_ids)),
                                        reply_markup=keyboards.replace_or_add())
            return
        await state.clear()
        await state.update_data(product_ids=product_ids)
        await self.bot.send_message(chat_id, report)
        await next_step(self.bot, chat_id, state, self.svc)

    async def _save(self, user_id: int, photos: list[tuple[int, AlbumItem]]
                    ) -> tuple[list[int], list[tuple[int, str]], list[int], list[int]]:
        """The first MAX_PRODUCTS photos that pass the checks become products. Returns (product ids,
        (number, problem) of photos that failed, numbers of cut captions, numbers left out)."""
        product_ids: list[int] = []
        rejected: list[tuple[int, str]] = []
        long_captions: list[int] = []
        left_out: list[int] = []
        for number, item in photos:
            assert item.file_id is not None
            if len(product_ids) == MAX_PRODUCTS:
                left_out.append(number)
                continue
            if item.file_size and item.file_size > MAX_PHOTO_BYTES:
                rejected.append((number, "too_large"))
                continue
            try:
                buffer = io.BytesIO()
                await self.bot.download(item.file_id, destination=buffer)
                product_id = await save_product_photo(self.svc.config, self.svc.products, user_id, item.file_id,
                                                      buffer.getvalue())
            except TelegramAPIError as exc:
                log.warning("user %d: album photo download failed: %s", user_id, exc)
                rejected.append((number, "download"))
                continue
            except PhotoRejected as exc:
                rejected.append((number, exc.problem.value))
                continue
            caption = (item.caption or "").strip()
            if len(caption) > MAX_DESCRIPTION_CHARS:
                caption = caption[:MAX_DESCRIPTION_CHARS]
                long_captions.append(number)
            if caption:
                await self.svc.products.set_description(product_id, caption)
            product_ids.append(product_id)
        return product_ids, rejected, long_captions, left_out


async def next_step(bot: Bot, chat_id: int, state: FSMContext, svc: Services) -> None:
    """The first product without a description is asked for; with all described, the style."""
    data = await state.get_data()
    product_ids = [int(p) for p in data["product_ids"]]
    for number, product_id in enumerate(product_ids, start=1):
        product = await svc.products.get(product_id)
        if product is not None and not product.description:
            await state.set_state(OrderAlbum.description)
            await state.update_data(asking=product_id, common=False)
            if len(product_ids) == 1:  # an album of one photo goes on as a single photo does
                await bot.send_message(chat_id, texts.ASK_DESCRIPTION, reply_markup=keyboards.cancel_only())
            else:
                await bot.send_message(chat_id, texts.ask_product_description(number, len(product_ids)),
                                       reply_markup=keyboards.ask_product_description())
            return
    await state.set_state(CreateVideo.template)
    await bot.send_message(chat_id, texts.ASK_TEMPLATE,
                           reply_markup=keyboards.templates(product_ids[0], svc.templates.ordered))


async def album_part(message: Message, albums: AlbumCollector, user: User) -> None:
    """One photo (or not) of an album: kept until the album settles; the answer comes then."""
    await albums.add(message, user.id)


async def got_description(message: Message, bot: Bot, state: FSMContext, svc: Services) -> None:
    text = await description_from(message)
    if text is None:
        return
    data = await state.get_data()
    if data.get("common"):
        for product_id in data.get("product_ids", []):
            product = await svc.products.get(int(product_id))
            if product is not None and not product.description:
                await svc.products.set_description(product.id, text)
    elif data.get("asking"):
        await svc.products.set_description(int(data["asking"]), text)
    await next_step(bot, message.chat.id, state, svc)


async def one_description(query: CallbackQuery, state: FSMContext) -> None:
    await query.answer()
    await state.update_data(common=True)
    await show(query, texts.ASK_COMMON_DESCRIPTION, keyboards.cancel_only())


async def replace_or_add(query: CallbackQuery, callback_data: AlbumCb, bot: Bot, state: FSMContext,
                         svc: Services) -> None:
    data = await state.get_data()
    pending = [int(p) for p in data.get("pending_ids", [])]
    if not pending:
        await query.answer(texts.SESSION_EXPIRED, show_alert=True)
        return
    await query.answer()
    current = [int(p) for p in data.get("product_ids", [])]
    kept = [] if callback_data.action == "replace" else current
    chosen = (kept + pending)[:MAX_PRODUCTS]
    await state.clear()
    await state.update_data(product_ids=chosen)
    # Numbered as in the new album: its photos past the tenth product of the order are left out.
    cut = list(range(MAX_PRODUCTS - len(kept) + 1, len(pending) + 1))
    note = texts.album_accepted(len(chosen), skipped=[], rejected=[], cut=cut, cut_description=[],
                                limit=MAX_PRODUCTS, description_limit=MAX_DESCRIPTION_CHARS)
    await show(query, note)
    chat_id = query.message.chat.id if query.message else query.from_user.id
    await next_step(bot, chat_id, state, svc)


def make_router() -> Router:
    """A fresh router per Dispatcher (a router can belong to one parent only)."""
    router = Router(name="albums")
    router.message.register(album_part, F.media_group_id)
    router.message.register(got_description, OrderAlbum.description, F.text)
    router.callback_query.register(one_description, AlbumCb.filter(F.action == "one"), OrderAlbum.description)
    router.callback_query.register(replace_or_add, AlbumCb.filter(F.action.in_({"replace", "add"})),
                                   OrderAlbum.replace_or_add)
    return router
