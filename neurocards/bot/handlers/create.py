"""The creation dialogue: photo → description → template → format → wishes → quantity → confirm.

From the style on, the dialogue works on a list of products (`product_ids`): one photo, or an album
(bot/handlers/albums.py) — one style, format, wishes and quantity for all, one order, one charge."""

from __future__ import annotations

import io
import logging
import secrets
from pathlib import Path

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from neurocards.bot import keyboards, texts
from neurocards.bot.handlers.albums import dialogue_products
from neurocards.bot.handlers.common import description_from, show
from neurocards.bot.handlers.format_step import ask_format, register_flow
from neurocards.bot.keyboards import AgainCb, ConfirmCb, QuantityCb, TemplateCb, WishesCb
from neurocards.bot.states import CreateVideo
from neurocards.services import Services
from neurocards.services.orders import QUANTITIES, LimitReached
from neurocards.services.products import MAX_DESCRIPTION_CHARS, PhotoRejected, save_product_photo
from neurocards.store.jobs import DuplicateRequest, InsufficientCredits
from neurocards.store.users import Product, User

log = logging.getLogger("neurocards.bot")

FLOW = "video"  # this dialogue's name at the shared format step

# GIFs go through the photo check too, so an animated one gets the "send a normal photo" answer.
IMAGE_DOCUMENT = F.document.mime_type.in_({"image/jpeg", "image/png", "image/webp", "image/gif"})


async def got_photo(message: Message, bot: Bot, state: FSMContext, svc: Services, user: User) -> None:
    """A photo at any moment starts a new product; jobs already running go on."""
    file_id = message.photo[-1].file_id if message.photo else message.document.file_id  # type: ignore[union-attr]
    size = message.photo[-1].file_size if message.photo else message.document.file_size  # type: ignore[union-attr]
    if size and size > 20 * 1024 * 1024:
        await message.answer(texts.PHOTO_PROBLEMS["too_large"])
        return
    try:
        buffer = io.BytesIO()
        await bot.download(file_id, destination=buffer)
    except TelegramAPIError as exc:
        log.warning("user %d: photo download failed: %s", user.id, exc)
        await message.answer(texts.PHOTO_DOWNLOAD_FAILED)
        return
    try:
        product_id = await save_product_photo(svc.config, svc.products, user.id, file_id, buffer.getvalue())
    except PhotoRejected as exc:
        await message.answer(texts.PHOTO_PROBLEMS[exc.problem.value])
        return
    await state.clear()
    await state.set_state(CreateVideo.description)
    await state.update_data(product_id=product_id)
    await message.answer(texts.ASK_DESCRIPTION, reply_markup=keyboards.cancel_only())


async def got_animation(message: Message) -> None:
    """Telegram turns GIFs into silent MP4 "animations": never a product photo."""
    await message.answer(texts.PHOTO_PROBLEMS["animated"], reply_markup=keyboards.cancel_only())


async def expected_photo(message: Message) -> None:
    await message.answer(texts.NOT_A_PHOTO, reply_markup=keyboards.cancel_only())


async def got_description(message: Message, state: FSMContext, svc: Services) -> None:
    text = await description_from(message)
    if text is None:
        return
    data = await state.get_data()
    product_id = int(data["product_id"])
    await svc.products.set_description(product_id, text)
    await state.set_state(CreateVideo.template)
    await message.answer(texts.ASK_TEMPLATE, reply_markup=keyboards.templates(product_id, svc.templates.ordered))


async def again(query: CallbackQuery, callback_data: AgainCb, state: FSMContext, svc: Services,
                user: User) -> None:
    product = await svc.products.get(callback_data.product_id)
    # The photo is kept for storage.retention_days; after that the seller must send it again.
    if product is None or product.user_id != user.id or not product.description \
            or not Path(product.photo_path).exists():
        await query.answer(texts.PRODUCT_GONE, show_alert=True)
        return
    await query.answer()
    await state.clear()
    await state.set_state(CreateVideo.template)
    await state.update_data(product_id=product.id)
    if query.message is not None:
        await query.message.answer(texts.ASK_TEMPLATE,
                                   reply_markup=keyboards.templates(product.id, svc.templates.ordered))


async def _order_products(svc: Services, user: User, product_ids: list[int]) -> list[Product] | None:
    """The order's products, or None if one is gone, someone else's or not described."""
    products = [await svc.products.get(p) for p in product_ids]
    if not products or any(p is None or p.user_id != user.id or not p.description for p in products):
        return None
    return products  # type: ignore[return-value]


async def chose_template(query: CallbackQuery, callback_data: TemplateCb, state: FSMContext,
                         svc: Services, user: User) -> None:
    template = svc.templates.get(callback_data.template)
    product_ids = dialogue_products(await state.get_state(), await state.get_data())
    if callback_data.product_id not in product_ids:  # a style button of an older product: that product alone
        product_ids = [callback_data.product_id]
    if template is None or await _order_products(svc, user, product_ids) is None:
        await query.answer(texts.SESSION_EXPIRED, show_alert=True)
        return
    await query.answer()
    await state.set_state(CreateVideo.format)
    await state.update_data(product_id=product_ids[0], product_ids=product_ids, template=template.id, wishes="",
                            aspect=None)
    await ask_format(query, state, svc, flow=FLOW, default=template.aspect_ratio)


async def chose_format(query: CallbackQuery, state: FSMContext, svc: Services, user: User, aspect: str) -> None:
    await query.answer()
    await state.set_state(CreateVideo.wishes)
    await show(query, texts.ASK_WISHES, keyboards.wishes())


async def _ask_quantity(target: Message, svc: Services, state: FSMContext) -> None:
    await state.set_state(CreateVideo.quantity)
    price = svc.orders.quote(1, 0, (await state.get_data()).get("aspect")).cost
    await target.answer(texts.ASK_QUANTITY, reply_markup=keyboards.quantities(QUANTITIES, price))


async def got_wishes(message: Message, state: FSMContext, svc: Services) -> None:
    text = (message.text or "").strip()
    if not text:
        await message.answer(texts.ASK_WISHES, reply_markup=keyboards.wishes())
        return
    await state.update_data(wishes=text[:MAX_DESCRIPTION_CHARS])
    await _ask_quantity(message, svc, state)


async def skip_wishes(query: CallbackQuery, state: FSMContext, svc: Services) -> None:
    await query.answer()
    await state.update_data(wishes="")
    if query.message is not None:
        await _ask_quantity(query.message, svc, state)  # type: ignore[arg-type]


async def chose_quantity(query: CallbackQuery, callback_data: QuantityCb, state: FSMContext,
                         svc: Services, user: User) -> None:
    if callback_data.count not in QUANTITIES:
        await query.answer(texts.SESSION_EXPIRED, show_alert=True)
        return
    await query.answer()
    await state.update_data(count=callback_data.count)
    await _show_confirmation(query, state, svc, user)


async def _show_confirmation(query: CallbackQuery, state: FSMContext, svc: Services, user: User) -> None:
    """The order with its total and the balance after; a fresh nonce makes this screen launchable once."""
    data = await state.get_data()
    products = await _order_products(svc, user, dialogue_products(await state.get_state(), data))
    template = svc.templates.get(str(data.get("template")))
    if products is None or template is None:
        await show(query, texts.SESSION_EXPIRED, keyboards.menu_only())
        return
    count = int(data["count"])
    nonce = secrets.token_hex(6)
    await state.set_state(CreateVideo.confirm)
    await state.update_data(nonce=nonce)
    aspect = data.get("aspect")
    quote = svc.orders.quote(count * len(products), await svc.users.balance(user.id), aspect)
    if not quote.affordable:
        if len(products) == 1:
            await show(query, texts.not_enough_credits(quote.cost, quote.balance), keyboards.not_enough(nonce))
        else:
            await show(query, texts.order_not_enough(quote.cost, quote.balance,
                                                     [p.description or "" for p in products]),
                       keyboards.order_not_enough(nonce, len(products)))
        return
    if len(products) == 1:
        text = texts.confirm(products[0].description or "", template.title, data.get("wishes", ""),
                             quote.count, quote.cost, quote.balance, aspect or template.aspect_ratio)
    else:
        text = texts.confirm_order([p.description or "" for p in products], template.title,
                                   data.get("wishes", ""), count, quote.cost // quote.count, quote.balance,
                                   aspect or template.aspect_ratio)
    if quote.simple:
        text += "\n\n" + texts.simple_mode_note(quote.cheaper)
    await show(query, text, keyboards.confirm(nonce))


async def confirmed(query: CallbackQuery, callback_data: ConfirmCb, state: FSMContext, svc: Services,
                    user: User) -> None:
    data = await state.get_data()
    if data.get("nonce") != callback_data.nonce:
        # An old confirmation screen: maybe already launched, maybe abandoned. Change nothing.
        await query.answer(texts.SESSION_EXPIRED, show_alert=True)
        return
    if callback_data.action == "cancel":
        await query.answer()
        await state.clear()
        await show(query, texts.CANCELLED, keyboards.menu_only())
        return
    product_ids = dialogue_products(await state.get_state(), data)
    if callback_data.action == "edit":
        await query.answer()
        await state.set_state(CreateVideo.template)
        await show(query, texts.ASK_TEMPLATE, keyboards.templates(product_ids[0], svc.templates.ordered))
        return
    if callback_data.action == "drop":  # not enough credits for all: the last product leaves the order
        await query.answer()
        await state.update_data(product_ids=product_ids[:-1] or product_ids[:1])
        await _show_confirmation(query, state, svc, user)
        return
    chat_id = query.message.chat.id if query.message else user.id
    try:
        created = await svc.orders.launch(
            user_id=user.id, chat_id=chat_id, product_ids=product_ids,
            template_id=str(data["template"]), wishes=str(data.get("wishes", "")),
            count=int(data["count"]), request_key=f"{user.id}:{callback_data.nonce}",
            aspect=data.get("aspect"))
    except DuplicateRequest:
        await query.answer(texts.ALREADY_LAUNCHED)
        return
    except LimitReached as exc:  # an alert, so the confirmation (or "accepted") screen stays as it is
        await query.answer(texts.limit_reached(exc.kind, exc.limit, exc.retry_in_s), show_alert=True)
        return
    except InsufficientCredits:  # the balance moved since the screen was shown: nothing charged
        await query.answer()
        await _show_confirmation(query, state, svc, user)
        return
    await query.answer()
    await state.clear()
    log.info("user %d: order %d launched jobs %s", user.id, created.order_id, created.job_ids)
    view = svc.orders.balance_view(created.balance)
    text = (texts.accepted(len(created.job_ids), view) if len(product_ids) == 1
            else texts.order_accepted(len(created.job_ids), len(product_ids), created.balance))
    await show(query, text, keyboards.accepted(topup=view.short))
    if svc.on_new_order is not None:
        svc.on_new_order(created.order_id)


async def anything_else(message: Message) -> None:
    await message.answer(texts.UNKNOWN_INPUT, reply_markup=keyboards.menu_only())


async def stale_button(query: CallbackQuery) -> None:
    """Old, forged or no longer valid buttons: a polite answer, nothing changes."""
    await query.answer(texts.SESSION_EXPIRED, show_alert=True)


def make_router() -> Router:
    """A fresh router per Dispatcher (a router can belong to one parent only)."""
    register_flow(FLOW, chose_format)
    router = Router(name="create")
    router.message.register(got_animation, F.animation)
    router.message.register(got_photo, F.photo | IMAGE_DOCUMENT)
    router.message.register(expected_photo, CreateVideo.photo)
    router.message.register(got_description, CreateVideo.description)
    router.callback_query.register(again, AgainCb.filter())
    router.callback_query.register(chose_template, TemplateCb.filter())
    router.message.register(got_wishes, CreateVideo.wishes)
    router.callback_query.register(skip_wishes, WishesCb.filter(F.action == "skip"), CreateVideo.wishes)
    router.callback_query.register(chose_quantity, QuantityCb.filter(), CreateVideo.quantity)
    router.callback_query.register(confirmed, ConfirmCb.filter())
    router.message.register(anything_else)
    router.callback_query.register(stale_button)
    return router
