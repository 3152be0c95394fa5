"""Callback data classes and inline keyboards."""

from __future__ import annotations

import functools
from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder
from pydantic import Field

from neurocards.bot import texts
from neurocards.config import FORMATS, CreditPack
from neurocards.jobs.templates import Template

# Numbers in callback data come back from the client: forged ones (a:2**70) must not reach
# SQLite (int64) or a handler. Out of range, the filter does not match and the button is stale.
RowId = Annotated[int, Field(ge=0, le=2**63 - 1)]
SmallCount = Annotated[int, Field(ge=0, le=10_000)]


class MenuCb(CallbackData, prefix="m"):
    action: str  # create | balance | support | home | promo


class TemplateCb(CallbackData, prefix="t"):
    product_id: RowId
    template: str


class WishesCb(CallbackData, prefix="w"):
    action: str  # skip


class QuantityCb(CallbackData, prefix="q"):
    count: SmallCount


class ConfirmCb(CallbackData, prefix="c"):
    action: str  # launch | edit | cancel | drop (the last product of an order)
    nonce: str


class AgainCb(CallbackData, prefix="a"):
    product_id: RowId


class FormatCb(CallbackData, prefix="fm"):
    flow: str  # which dialogue asked: "video" (one video), others may reuse the step
    shape: str  # "9x16": callback data uses ":" as its separator

    @property
    def aspect(self) -> str:
        return self.shape.replace("x", ":")

    @classmethod
    def of(cls, flow: str, aspect: str) -> FormatCb:
        return cls(flow=flow, shape=aspect.replace(":", "x"))


_HOME = (texts.BTN_MENU, MenuCb(action="home"))
_CANCEL = (texts.BTN_CANCEL, MenuCb(action="home"))


def _column(*buttons: tuple[str, CallbackData]) -> InlineKeyboardMarkup:
    """One button per row: most screens offer an action or two and the way home."""
    kb = InlineKeyboardBuilder()
    for text, data in buttons:
        kb.button(text=text, callback_data=data)
    kb.adjust(1)
    return kb.as_markup()


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def main_menu() -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    kb.button(text=texts.BTN_CREATE, callback_data=MenuCb(action="create"))
    kb.button(text=texts.BTN_BALANCE, callback_data=MenuCb(action="balance"))
    kb.button(text=texts.BTN_TOPUP, callback_data=PayCb(action="list"))
    kb.button(text=texts.BTN_MY_VIDEOS, callback_data=VideosCb(page=0))
    kb.button(text=texts.BTN_CABINET, callback_data=ProfileCb(action="cabinet"))
    kb.button(text=texts.BTN_ORDERS, callback_data=OrderCb(action="list"))
    kb.button(text=texts.BTN_SUPPORT, callback_data=MenuCb(action="support"))
    kb.adjust(1, 2, 2, 2)
    return kb.as_markup()


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def menu_only() -> InlineKeyboardMarkup:
    return _column(_HOME)


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def cancel_only() -> InlineKeyboardMarkup:
    return _column(_CANCEL)


def templates(product_id: int, items: list[Template]) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    for item in items:
        kb.button(text=item.title, callback_data=TemplateCb(product_id=product_id, template=item.id))
    kb.button(text=texts.BTN_CANCEL, callback_data=MenuCb(action="home"))
    kb.adjust(1)
    return kb.as_markup()


def formats(flow: str, default: str, surcharge: dict[str, int]) -> InlineKeyboardMarkup:
    """The four shapes in one row, "keep the style's shape" (one tap), cancel."""
    kb = InlineKeyboardBuilder()
    for aspect in FORMATS:
        kb.button(text=texts.format_button(aspect, surcharge.get(aspect, 0)), callback_data=FormatCb.of(flow, aspect))
    kb.button(text=texts.format_keep(default), callback_data=FormatCb.of(flow, default))
    kb.button(text=texts.BTN_CANCEL, callback_data=MenuCb(action="home"))
    kb.adjust(len(FORMATS), 1, 1)
    return kb.as_markup()


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def wishes() -> InlineKeyboardMarkup:
    return _column((texts.BTN_SKIP, WishesCb(action="skip")), _CANCEL)


def quantities(options: tuple[int, ...], per_video: int) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    for count in options:
        kb.button(text=texts.qty_button(count, count * per_video), callback_data=QuantityCb(count=count))
    kb.button(text=texts.BTN_CANCEL, callback_data=MenuCb(action="home"))
    kb.adjust(2, 2, 1)
    return kb.as_markup()


def confirm(nonce: str) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    kb.button(text=texts.BTN_LAUNCH, callback_data=ConfirmCb(action="launch", nonce=nonce))
    kb.button(text=texts.BTN_EDIT, callback_data=ConfirmCb(action="edit", nonce=nonce))
    kb.button(text=texts.BTN_CANCEL, callback_data=ConfirmCb(action="cancel", nonce=nonce))
    kb.adjust(1, 2)
    return kb.as_markup()


def not_enough(nonce: str) -> InlineKeyboardMarkup:
    return _column((texts.BTN_TOPUP, PayCb(action="list")),
                   (texts.BTN_EDIT, ConfirmCb(action="edit", nonce=nonce)), _HOME)


def video_result(product_id: int) -> InlineKeyboardMarkup:
    """Under a video: the next step, the seller's videos and the way to more credits."""
    kb = InlineKeyboardBuilder()
    kb.button(text=texts.BTN_AGAIN_PRODUCT, callback_data=AgainCb(product_id=product_id))
    kb.button(text=texts.BTN_VIDEOS, callback_data=VideosCb(page=0))
    kb.button(text=texts.BTN_BUY_CREDITS, callback_data=PayCb(action="list"))
    kb.button(text=texts.BTN_MENU, callback_data=MenuCb(action="home"))
    kb.adjust(1, 2, 1)
    return kb.as_markup()


def failed_retry(product_id: int, *, topup: bool = False) -> InlineKeyboardMarkup:
    """`topup`: the balance is below one video, so retrying needs credits first."""
    return _column((texts.BTN_TRY_AGAIN, AgainCb(product_id=product_id)), *([_BUY] if topup else []), _HOME)


@functools.cache  # few variants: build each once (the builder deep-copies every button)
def failed_violation(*, topup: bool = False) -> InlineKeyboardMarkup:
    return _column((texts.BTN_OTHER_PHOTO, MenuCb(action="create")), *([_BUY] if topup else []), _HOME)


@functools.cache  # few variants: build each once (the builder deep-copies every button)
def accepted(*, topup: bool = False) -> InlineKeyboardMarkup:
    return _column(*([_BUY] if topup else []), _HOME)


# ---- payments, cabinet, my videos -------------------------------------------
class PayCb(CallbackData, prefix="pay"):
    action: str  # list | buy
    pack_id: str = ""


_BUY = (texts.BTN_BUY_CREDITS, PayCb(action="list"))


class ProfileCb(CallbackData, prefix="pr"):
    action: str  # cabinet | purchases


class VideosCb(CallbackData, prefix="vp"):
    page: SmallCount


class ReplayCb(CallbackData, prefix="vr"):
    job_id: RowId


def packs(items: tuple[CreditPack, ...]) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    for pack in items:
        kb.button(text=texts.pack_button(pack.label, pack.stars), callback_data=PayCb(action="buy", pack_id=pack.id))
    kb.button(text=texts.BTN_MENU, callback_data=MenuCb(action="home"))
    kb.adjust(1)
    return kb.as_markup()


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def after_payment() -> InlineKeyboardMarkup:
    return _column((texts.BTN_CREATE, MenuCb(action="create")), _HOME)


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def cabinet() -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    kb.button(text=texts.BTN_TOPUP, callback_data=PayCb(action="list"))
    kb.button(text=texts.BTN_MY_VIDEOS, callback_data=VideosCb(page=0))
    kb.button(text=texts.BTN_PURCHASES, callback_data=ProfileCb(action="purchases"))
    kb.button(text=texts.BTN_MENU, callback_data=MenuCb(action="home"))
    kb.adjust(2, 1, 1)
    return kb.as_markup()


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def purchases() -> InlineKeyboardMarkup:
    return _column((texts.BTN_TOPUP, PayCb(action="list")), (texts.BTN_CABINET, ProfileCb(action="cabinet")),
                   _HOME)


def videos(job_ids: list[tuple[int, int]], page: int, has_next: bool) -> InlineKeyboardMarkup:
    """One "▶️ n" button per listed (number, job id), then ◀️/▶️ paging and the menu."""
    rows = [[InlineKeyboardButton(text=texts.video_button(n), callback_data=ReplayCb(job_id=j).pack())
             for n, j in job_ids]]
    nav = []
    if page > 0:
        nav.append(InlineKeyboardButton(text=texts.BTN_PREV, callback_data=VideosCb(page=page - 1).pack()))
    if has_next:
        nav.append(InlineKeyboardButton(text=texts.BTN_NEXT, callback_data=VideosCb(page=page + 1).pack()))
    if nav:
        rows.append(nav)
    rows.append([InlineKeyboardButton(text=texts.BTN_MENU, callback_data=MenuCb(action="home").pack())])
    return InlineKeyboardMarkup(inline_keyboard=rows)


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def no_videos() -> InlineKeyboardMarkup:
    return after_payment()


# ---- the statement ----------------------------------------------------------------
class StatementCb(CallbackData, prefix="st"):
    action: str  # show | csv


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def balance_screen() -> InlineKeyboardMarkup:
    return _column((texts.BTN_TOPUP, PayCb(action="list")), (texts.BTN_STATEMENT, StatementCb(action="show")),
                   (texts.BTN_PROMO, MenuCb(action="promo")), _HOME)


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def statement() -> InlineKeyboardMarkup:
    return _column((texts.BTN_STATEMENT_CSV, StatementCb(action="csv")),
                   (texts.BTN_BALANCE, MenuCb(action="balance")), _HOME)


# ---- orders of many products ------------------------------------------------------
class AlbumCb(CallbackData, prefix="al"):
    action: str  # one (one description for all) | replace | add


class OrderCb(CallbackData, prefix="o"):
    action: str  # list | zip
    order_id: int = 0


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def ask_product_description() -> InlineKeyboardMarkup:
    return _column((texts.BTN_ONE_DESCRIPTION, AlbumCb(action="one")), _CANCEL)


@functools.cache  # static keyboard: build it once (the builder deep-copies every button)
def replace_or_add() -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    kb.button(text=texts.BTN_REPLACE_ALBUM, callback_data=AlbumCb(action="replace"))
    kb.button(text=texts.BTN_ADD_ALBUM, callback_data=AlbumCb(action="add"))
    kb.button(text=texts.BTN_CANCEL, callback_data=MenuCb(action="home"))
    kb.adjust(2, 1)
    return kb.as_markup()


def order_not_enough(nonce: str, products: int) -> InlineKeyboardMarkup:
    buttons = [(texts.BTN_TOPUP, PayCb(action="list"))]
    if products > 1:
        buttons.append((texts.BTN_REMOVE_PRODUCT, ConfirmCb(action="drop", nonce=nonce)))
    return _column(*buttons, (texts.BTN_EDIT, ConfirmCb(action="edit", nonce=nonce)), _HOME)


def order_summary(order_id: int, with_zip: bool) -> InlineKeyboardMarkup:
    if with_zip:
        return _column((texts.BTN_ZIP, OrderCb(action="zip", order_id=order_id)), _HOME)
    return menu_only()


# ---- broadcasts ---------------------------------------------------------------
class NewsCb(CallbackData, prefix="news"):
    action: str  # off


class BroadcastCb(CallbackData, prefix="bc"):
    action: str  # segment | button | send | cancel
    value: str = ""


def broadcast_message(button_text: str | None, button_url: str | None) -> InlineKeyboardMarkup:
    """What sellers see under a broadcast: the admin's link button, if any, and the opt-out."""
    rows = []
    if button_text and button_url:
        rows.append([InlineKeyboardButton(text=button_text, url=button_url)])
    rows.append([InlineKeyboardButton(text=texts.BTN_NEWS_OFF, callback_data=NewsCb(action="off").pack())])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def broadcast_control(segment: str) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    for key, title in texts.BROADCAST_SEGMENTS.items():
        kb.button(text=("✓ " if key == segment else "") + title, callback_data=BroadcastCb(action="segment", value=key))
    kb.button(text=texts.BTN_BROADCAST_BUTTON, callback_data=BroadcastCb(action="button"))
    kb.button(text=texts.BTN_BROADCAST_SEND, callback_data=BroadcastCb(action="send"))
    kb.button(text=texts.BTN_BROADCAST_CANCEL, callback_data=BroadcastCb(action="cancel"))
    kb.adjust(2, 2, 1, 2)
    return kb.as_markup()


def support_link(username: str) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    kb.button(text=texts.BTN_SUPPORT_WRITE, url=f"https://t.me/{username}")
    kb.button(text=texts.BTN_MENU, callback_data=MenuCb(action="home"))
    kb.adjust(1)
    return kb.as_markup()
