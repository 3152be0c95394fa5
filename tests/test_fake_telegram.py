"""Tests of the fake Telegram Bot API, driven by a real aiogram Bot over real HTTP."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandStart
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    FSInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    LabeledPrice,
    Message,
    ReplyKeyboardMarkup,
)
from PIL import Image

from tests.fakes.telegram import FakeTelegram, FakeUser, WaitTimeout

TOKEN = "123456:TEST-TOKEN"


def keyboard(*buttons: InlineKeyboardButton) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[list(buttons)])


def jpeg(width: int = 640, height: int = 480) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="JPEG")
    return out.getvalue()


class SendTelepathy(TelegramMethod[bool]):
    """A method the Bot API does not have."""

    __returning__ = bool
    __api_method__ = "sendTelepathy"
    chat_id: int


class SendMessageWithoutText(TelegramMethod[Message]):
    """sendMessage with the required ``text`` left out."""

    __returning__ = Message
    __api_method__ = "sendMessage"
    chat_id: int


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN, max_upload_bytes=64 * 1024) as server:
        yield server


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    bot = fake.make_bot()
    yield bot
    await bot.session.close()


@pytest.fixture
async def anna(fake: FakeTelegram) -> FakeUser:
    user = fake.user(1001, first_name="Анна", username="anna")
    await user.send_text("/start")  # the chat exists only once the user wrote
    return user


async def test_get_me_and_send_message_parse(fake: FakeTelegram, bot: Bot, anna: FakeUser) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (123456, "neurocards_test_bot", True)

    sent = await bot.send_message(
        anna.chat_id,
        "<b>Баланс</b>: 5 &lt;кредитов&gt;\n",
        parse_mode="HTML",
        reply_markup=keyboard(InlineKeyboardButton(text="🎬 Создать видео", callback_data="make")),
    )
    assert sent.text == "Баланс: 5 <кредитов>"  # visible text, trimmed
    assert sent.entities and sent.entities[0].type == "bold" and sent.entities[0].length == 6
    assert sent.from_user and sent.from_user.id == me.id
    assert sent.chat.id == anna.chat_id and sent.reply_markup is not None

    msg = anna.messages[-1]
    assert (msg.message_id, msg.kind, msg.text) == (sent.message_id, "text", sent.text)
    assert msg.buttons == [["🎬 Создать видео"]]
    assert msg.source_text == "<b>Баланс</b>: 5 &lt;кредитов&gt;\n"

    chat = await bot.get_chat(anna.chat_id)
    assert chat.first_name == "Анна"
    await bot.send_chat_action(anna.chat_id, "upload_video")
    assert anna.chat_actions == ["upload_video"]
    await bot.set_my_commands([BotCommand(command="start", description="Начать")])
    assert list(fake.commands.values()) == [[{"command": "start", "description": "Начать"}]]
    assert fake.count("sendMessage") == 1
    fake.assert_no_rejections()


async def test_unknown_method_is_not_found(fake: FakeTelegram, bot: Bot, anna: FakeUser) -> None:
    with pytest.raises(TelegramNotFound, match="Not Found"):
        await bot(SendTelepathy(chat_id=anna.chat_id))
    assert fake.rejected[-1] == ("sendTelepathy", 404, "Not Found")


async def test_schema_violations_are_bad_requests(
    fake: FakeTelegram, bot: Bot, anna: FakeUser
) -> None:
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot(SendMessageWithoutText(chat_id=anna.chat_id))
    with pytest.raises(TelegramBadRequest, match='unknown parameter "colour"'):
        await bot(SendMessage(chat_id=anna.chat_id, text="hi", colour="red"))  # type: ignore[call-arg]
    with pytest.raises(TelegramBadRequest, match="invalid parameter message_thread_id"):
        await bot(
            SendMessage.model_construct(chat_id=anna.chat_id, text="hi", message_thread_id="x")
        )
    assert len(fake.rejected) == 3
    with pytest.raises(AssertionError, match="unknown parameter"):
        fake.assert_no_rejections()


async def test_text_limits_and_html(bot: Bot, anna: FakeUser) -> None:
    await bot.send_message(anna.chat_id, "<i>" + "я" * 4096 + "</i>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(anna.chat_id, "я" * 4097)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(anna.chat_id, "<b> </b>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="Can't find end tag corresponding to start tag"):
        await bot.send_message(anna.chat_id, "<b>жирный", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match='Unsupported start tag "br"'):
        await bot.send_message(anna.chat_id, "a<br>b", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match='Unsupported start tag ""'):
        await bot.send_message(anna.chat_id, "1 < 2", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="Unmatched end tag"):
        await bot.send_message(anna.chat_id, "<b><i>x</b></i>", parse_mode="HTML")
    photo = BufferedInputFile(jpeg(), "p.jpg")
    with pytest.raises(TelegramBadRequest, match="caption is too long"):
        await bot.send_photo(anna.chat_id, photo, caption="c" * 1025)


async def test_keyboard_rules(bot: Bot, anna: FakeUser) -> None:
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(
            anna.chat_id,
            "x",
            reply_markup=keyboard(InlineKeyboardButton(text="b", callback_data="d" * 65)),
        )
    with pytest.raises(TelegramBadRequest, match="Text buttons are unallowed"):
        await bot.send_message(
            anna.chat_id, "x", reply_markup=keyboard(InlineKeyboardButton(text="b"))
        )
    with pytest.raises(TelegramBadRequest, match="exactly one"):
        await bot.send_message(
            anna.chat_id,
            "x",
            reply_markup=keyboard(
                InlineKeyboardButton(text="b", callback_data="d", url="https://t.me")
            ),
        )
    with pytest.raises(TelegramBadRequest, match="Wrong HTTP URL"):
        await bot.send_message(
            anna.chat_id,
            "x",
            reply_markup=keyboard(InlineKeyboardButton(text="b", url="http://localhost/x")),
        )
    reply_kb = ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text="💰 Баланс")]], resize_keyboard=True
    )
    await bot.send_message(anna.chat_id, "меню", reply_markup=reply_kb)
    assert anna.reply_keyboard == [["💰 Баланс"]]
    assert anna.messages[-1].reply_markup is None  # reply keyboards are not part of a Message
    await anna.press_reply_button("💰 Баланс")


async def test_chat_must_exist_and_blocked_user(
    fake: FakeTelegram, bot: Bot, anna: FakeUser
) -> None:
    silent = fake.user(2002, first_name="Молчун")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(silent.chat_id, "hi")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(999_999, "hi")
    fake.rejected.clear()

    anna.block()
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(anna.chat_id, "hi")
    fake.assert_no_rejections()  # the test caused that 403, not the bot
    await anna.send_text("/start")  # writing again lifts the block
    await bot.send_message(anna.chat_id, "welcome back")


async def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    other = Bot("999:WRONG", session=fake.make_bot().session)
    with pytest.raises(TelegramUnauthorizedError):
        await other.get_me()
    await other.session.close()


async def test_injected_faults(fake: FakeTelegram, bot: Bot, anna: FakeUser) -> None:
    fake.fail_next("sendMessage", retry_after=3)
    with pytest.raises(TelegramRetryAfter) as info:
        await bot.send_message(anna.chat_id, "hi")
    assert info.value.retry_after == 3
    await bot.send_message(anna.chat_id, "second try works")

    fake.fail_next("sendMessage", mode="drop")
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(anna.chat_id, "lost")
    fake.fail_next("sendMessage", mode="delay", delay=1.0, process=True, chat_id=anna.chat_id)
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(anna.chat_id, "slow", request_timeout=0.3)  # type: ignore[arg-type]
    # The slow call took effect although the bot saw a timeout: a duplicate-send trap.
    assert [m.text for m in anna.messages] == ["second try works", "slow"]
    fake.fail_next("sendChatAction", status=500, times=2, chat_id=anna.chat_id)
    for _ in range(2):
        with pytest.raises(TelegramServerError):
            await bot.send_chat_action(anna.chat_id, "typing")
    assert await bot.send_chat_action(anna.chat_id, "typing")
    assert fake.calls_of("sendMessage")[0].injected
    fake.assert_no_rejections()


async def test_send_video_upload_and_file_id_reuse(
    fake: FakeTelegram, bot: Bot, anna: FakeUser, tmp_path: Path
) -> None:
    video_bytes = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20
    path = tmp_path / "clip.mp4"
    path.write_bytes(video_bytes)
    sent = await bot.send_video(
        anna.chat_id, FSInputFile(path), caption="Готово!", width=1080, height=1920
    )
    assert sent.video is not None and sent.video.file_size == len(video_bytes)
    assert (sent.video.width, sent.video.height) == (1080, 1920)
    assert anna.messages[-1].media == video_bytes and anna.messages[-1].kind == "video"
    assert fake.last_call("sendVideo").files and fake.file_bytes(sent.video.file_id) == video_bytes

    again = await bot.send_video(anna.chat_id, sent.video.file_id)
    assert again.video and again.video.file_id == sent.video.file_id
    assert anna.messages[-1].media == video_bytes
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_video(anna.chat_id, "BAACAgIAAxkBnever-issued")
    with pytest.raises(TelegramBadRequest, match="type of file mismatch"):
        await bot.send_photo(anna.chat_id, sent.video.file_id)


async def test_upload_over_limit_is_entity_too_large(bot: Bot, anna: FakeUser) -> None:
    with pytest.raises(TelegramEntityTooLarge):
        await bot.send_document(anna.chat_id, BufferedInputFile(b"x" * 70_000, "big.bin"))
    assert anna.messages == []


async def test_get_updates_long_poll(fake: FakeTelegram, bot: Bot) -> None:
    user = fake.user(3003, first_name="Поллер")
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    assert not poll.done()  # it waits for an update
    await user.send_text("/start ref_abc")
    updates = await asyncio.wait_for(poll, 2)
    assert [u.message.text for u in updates if u.message] == ["/start ref_abc"]
    again = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    assert again == [] and fake.pending_updates == []

    await user.send_text("hello")
    assert await bot.get_updates(allowed_updates=["callback_query"]) == []  # filtered out


async def test_get_file_and_download_user_photo(bot: Bot, anna: FakeUser) -> None:
    image = jpeg(1600, 1200)
    message = await anna.send_photo(image, caption="мой товар")
    sizes = message["photo"]
    assert len(sizes) > 1 and sizes[-1]["width"] == 1600
    file = await bot.get_file(sizes[-1]["file_id"])
    assert file.file_path
    downloaded = await bot.download(file)
    assert downloaded is not None and downloaded.read() == image
    thumb = await bot.download(sizes[0]["file_id"])
    assert thumb is not None and Image.open(thumb).width <= 90

    document = await anna.send_document(b"\x89PNG...", file_name="p.png", mime_type="image/png")
    assert document["document"]["mime_type"] == "image/png"
    copy = await bot.send_photo(anna.chat_id, sizes[-1]["file_id"])
    assert copy.photo and copy.photo[-1].file_id == sizes[-1]["file_id"]


async def test_edits_deletes_and_callbacks(fake: FakeTelegram, bot: Bot, anna: FakeUser) -> None:
    markup = keyboard(InlineKeyboardButton(text="🎬 Создать видео", callback_data="make"))
    sent = await bot.send_message(anna.chat_id, "Меню", reply_markup=markup)
    callback_id = await anna.click(sent.message_id, "🎬 Создать")
    update = (await bot.get_updates())[-1]
    assert update.callback_query and update.callback_query.data == "make"
    assert update.callback_query.id == callback_id
    await bot.answer_callback_query(callback_id, text="Ок")
    assert anna.callback_answers[0].text == "Ок"
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(callback_id)  # answered already
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query("12345")

    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "Меню", chat_id=anna.chat_id, message_id=sent.message_id, reply_markup=markup
        )
    edited = await bot.edit_message_text("Меню 2", chat_id=anna.chat_id, message_id=sent.message_id)
    assert isinstance(edited, Message) and edited.edit_date is not None
    assert anna.messages[-1].edited and anna.messages[-1].buttons == []  # keyboard removed
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=anna.chat_id, message_id=9999)
    with pytest.raises(LookupError):
        await anna.click(sent.message_id, "🎬 Создать")

    copy = await bot.copy_message(anna.chat_id, anna.chat_id, sent.message_id)
    assert anna.messages[-1].message_id == copy.message_id and anna.messages[-1].text == "Меню 2"
    assert await bot.delete_message(anna.chat_id, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(anna.chat_id, sent.message_id)
    assert [m.message_id for m in anna.messages] == [copy.message_id]
    assert [e.deleted for e in anna.history] == [False, False, False, True]


async def test_stars_payment_flow(fake: FakeTelegram, bot: Bot, anna: FakeUser) -> None:
    with pytest.raises(TelegramBadRequest, match="PAYMENT_PROVIDER_INVALID"):
        await bot.send_invoice(
            anna.chat_id,
            "5 видео",
            "Пакет",
            "pack5",
            "XTR",
            [LabeledPrice(label="x", amount=50)],
            provider_token="123:TEST",
        )
    fake.rejected.clear()
    invoice = await bot.send_invoice(
        anna.chat_id,
        "5 видео",
        "Пакет из 5 видео",
        "pack5",
        "XTR",
        [LabeledPrice(label="5", amount=50)],
    )
    assert invoice.invoice and invoice.invoice.total_amount == 50
    await bot.get_updates(offset=-1)  # skip the /start update

    paying = asyncio.create_task(anna.pay())
    updates = await bot.get_updates(timeout=2)
    query = updates[-1].pre_checkout_query
    assert query and query.invoice_payload == "pack5"
    await bot.answer_pre_checkout_query(query.id, ok=True)
    payment = await paying
    assert payment.ok and payment.charge_id
    updates = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=2)
    paid = updates[-1].message
    assert paid and paid.successful_payment
    assert paid.successful_payment.telegram_payment_charge_id == payment.charge_id

    await anna.repeat_payment(payment)  # Telegram may deliver it twice
    assert len(await bot.get_updates(offset=updates[-1].update_id + 1)) == 1
    assert await bot.refund_star_payment(anna.id, payment.charge_id)
    with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(anna.id, payment.charge_id)
    assert fake.charges[payment.charge_id].refunded


async def test_declined_pre_checkout(bot: Bot, anna: FakeUser) -> None:
    await bot.send_invoice(
        anna.chat_id, "1 видео", "Одно видео", "pack1", "XTR", [LabeledPrice(label="1", amount=10)]
    )
    await bot.get_updates(offset=-1)
    paying = asyncio.create_task(anna.pay())
    query = (await bot.get_updates(offset=-1, timeout=2))[-1].pre_checkout_query
    assert query is not None
    await bot.answer_pre_checkout_query(query.id, ok=False, error_message="Нет в наличии")
    payment = await paying
    assert not payment.ok and payment.error_message == "Нет в наличии" and payment.charge_id is None


async def test_second_poller_terminates_the_first(fake: FakeTelegram, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    assert await bot.get_updates() == []
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
        await first


async def test_raw_http_encodings(fake: FakeTelegram, anna: FakeUser) -> None:
    base = f"{fake.base_url}/bot{TOKEN}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/SENDMESSAGE", params={"chat_id": "1001", "text": "q"}) as resp:
            assert resp.status == 200 and (await resp.json())["result"]["text"] == "q"
        body: dict[str, Any] = {
            "chat_id": 1001,
            "text": "j",
            "reply_markup": {"inline_keyboard": []},
        }
        async with http.post(f"{base}/sendMessage", json=body) as resp:
            assert resp.status == 200
        form = {"chat_id": "1001", "text": "f", "disable_notification": "true"}
        async with http.post(f"{base}/sendMessage", data=form) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/sendMessage", data={"chat_id": "1001"}) as resp:
            payload = await resp.json()
            assert (
                resp.status == 400
                and payload["description"] == "Bad Request: message text is empty"
            )
        async with http.get(f"{fake.base_url}/file/bot{TOKEN}/nope.jpg") as resp:
            assert resp.status == 404
    assert [m.text for m in anna.messages] == ["q", "j", "f"]
    assert fake.last_call("sendMessage").params == {"chat_id": "1001"}


async def test_wait_helpers_time_out_with_context(fake: FakeTelegram, anna: FakeUser) -> None:
    with pytest.raises(WaitTimeout, match="Last bot messages"):
        await anna.wait_for_message(lambda m: "never" in m.text, timeout=0.05)
    with pytest.raises(WaitTimeout):
        await fake.wait_until(lambda: fake.count("sendMessage") > 0, timeout=0.05)


def build_router() -> Router:
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(
            "<b>Привет!</b> Баланс: 0",
            reply_markup=keyboard(
                InlineKeyboardButton(text="🎬 Создать видео", callback_data="make")
            ),
        )

    @router.callback_query(F.data == "make")
    async def make(callback: CallbackQuery) -> None:
        assert isinstance(callback.message, Message)
        await callback.message.edit_text("Пришлите фото товара")
        await callback.answer()

    @router.message(F.photo)
    async def photo(message: Message, bot: Bot) -> None:
        assert message.photo
        data = await bot.download(message.photo[-1])
        assert data is not None
        await message.answer_video(
            BufferedInputFile(data.read(), "video.mp4"), caption="Видео готово"
        )

    return router


async def test_dispatcher_end_to_end(fake: FakeTelegram) -> None:
    bot = fake.make_bot(default=DefaultBotProperties(parse_mode="HTML"))
    dp = Dispatcher()
    dp.include_router(build_router())
    polling = asyncio.create_task(dp.start_polling(bot, polling_timeout=1, handle_signals=False))
    try:
        user = fake.user(4004, first_name="Анна", username="anna")
        await user.send_text("/start")
        menu = await user.wait_for_message(lambda m: "Баланс" in m.text, timeout=5)
        assert menu.text == "Привет! Баланс: 0" and menu.buttons == [["🎬 Создать видео"]]

        cursor = user.cursor()
        callback_id = await user.click(menu, "🎬 Создать видео")
        edited = await user.wait_for_message(lambda m: m.edited, after=cursor, timeout=5)
        assert edited.message_id == menu.message_id and edited.text == "Пришлите фото товара"
        await user.wait_for_callback_answer(callback_id, timeout=5)

        image = jpeg()
        await user.send_photo(image)
        video = await user.wait_for_message(lambda m: m.kind == "video", timeout=5)
        assert video.media == image and video.text == "Видео готово"
    finally:
        await dp.stop_polling()
        await polling
        await bot.session.close()
    fake.assert_no_rejections()
