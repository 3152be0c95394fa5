"""Many products in one order: an album becomes one order, charged at once, delivered with captions."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from PIL import Image

from tests.fakes.telegram_user import AlbumPart, FakeUser
from tests.harness import Harness, product_jpeg, videos

FAST_ORDERS = {"orders": {"album_settle_s": 0.3, "status_edit_interval_s": 0.3, "status_tick_s": 0.05}}
COLORS = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (200, 200, 40), (160, 40, 160), (40, 160, 160),
          (120, 60, 20), (20, 60, 120), (90, 90, 90), (250, 120, 0), (0, 0, 0), (255, 0, 128)]


def center_color(jpeg: bytes) -> tuple[int, ...]:
    """The product's colour (the middle of the picture), rounded against JPEG noise."""
    with Image.open(io.BytesIO(jpeg)) as img:
        pixel = img.convert("RGB").getpixel((img.width // 2, img.height // 2))
    return tuple(round(c / 40) for c in pixel)


def photos(n: int) -> list[bytes]:
    return [product_jpeg(color=COLORS[i]) for i in range(n)]


async def step(user: FakeUser, action: Any, expect: Any, timeout: float = 10.0) -> Any:
    cursor = user.cursor()
    await action
    return await user.wait_for_message(expect, after=cursor, timeout=timeout)


async def to_confirmation(user: FakeUser, quantity: int = 1, after: int | None = None,
                          aspect: str | None = None) -> Any:
    """Style, format, wishes, quantity: chosen once for every product of the album."""
    styles = await user.wait_for_message(lambda m: "Выберите стиль" in m.text, after=after)
    formats = await step(user, user.click(styles, "🔄 Студийный поворот"), lambda m: "Формат видео" in m.text)
    wishes = await step(user, user.click(formats, aspect or "⏭ Оставить"), lambda m: "пожелания" in m.text)
    qty = await step(user, user.click(wishes, "⏭ Пропустить"), lambda m: "Сколько видео" in m.text)
    return await step(user, user.click(qty, f"{quantity} видео"),
                      lambda m: "Проверьте заказ" in m.text or "Не хватает" in m.text)


async def test_album_of_three_captioned_photos_is_one_order(harness: Harness) -> None:
    harness.overrides = dict(FAST_ORDERS)
    await harness.start()
    user = harness.tg.user(3001, "Галина")
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text)
    names = ["Кружка керамическая белая 350 мл", "Футболка хлопковая с принтом", "Рюкзак городской чёрный"]
    pics = photos(3)
    cursor = user.cursor()
    await user.send_album([AlbumPart(p, caption=c) for p, c in zip(pics, names, strict=True)])
    confirm = await to_confirmation(user)
    answers = [m for m in user.history[cursor:] if not m.edited]
    assert len([m for m in answers if "Выберите стиль" in m.text or "альбом" in m.text]) == 2
    assert "3 товара" in answers[0].text
    assert "3 × 1 × 10 = 30" in confirm.text and "Баланс после запуска: 0" in confirm.text
    cursor = user.cursor()
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 3, timeout=15)
    summary = await user.wait_for_message(lambda m: "готово 3 из 3" in m.text, after=cursor)

    assert harness.kie.count("veoGenerate") == 3
    by_photo = {u.url: u.data for u in harness.kie.uploads}
    made = {}
    for task in harness.kie.tasks.values():
        photo = by_photo[task.body["imageUrls"][0]]
        name = next(n for n in names if n in task.body["prompt"])
        made[name] = center_color(photo)
    # Each product with its own photo (the bot reshapes photos for the model: compare their colours).
    assert made == {n: center_color(p) for n, p in zip(names, pics, strict=True)}
    captions = sorted(v.text.splitlines()[0] for v in videos(user))
    assert captions == sorted(f"📦 {n} · {i}/3" for i, n in enumerate(names, start=1))
    assert harness.ledger(3001) == [(30, "welcome"), (-10, "job_charge"), (-10, "job_charge"), (-10, "job_charge")]
    orders = harness.query("SELECT * FROM orders")
    assert len(orders) == 1 and orders[0]["jobs_total"] == 3
    assert {j["order_id"] for j in harness.jobs(3001)} == {orders[0]["id"]}
    status = [m for m in user.messages if m.message_id == orders[0]["status_message_id"]][0]
    assert status.edited and "Заказ завершён" in status.text and status.text.count("✅ готово") == 3
    assert sum("готово 3 из 3" in m.text for m in user.messages) == 1
    assert summary.buttons[0] == ["🗜 Все видео одним архивом"]


async def test_album_split_across_updates_and_interleaved_with_another_seller(harness: Harness) -> None:
    harness.overrides = dict(FAST_ORDERS)
    await harness.start()
    user, other = harness.tg.user(3002, "Дина"), harness.tg.user(3003, "Егор")
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text)
    pics = photos(3)
    cursor = user.cursor()
    group = await user.send_album([AlbumPart(pics[0], caption="Свеча ароматическая"),
                                   AlbumPart(pics[1], caption="Плед вязаный")])
    await other.send_text("/start")
    # The bot has taken the first part and the other seller's update in one getUpdates answer...
    await harness.tg.wait_until(lambda: not harness.tg.pending_updates)
    await user.send_album([AlbumPart(pics[2], caption="Ваза стеклянная")], media_group_id=group)
    await other.wait_for_message(lambda m: "Баланс" in m.text)
    await to_confirmation(user)
    # ...and the rest in another one: still one album, one answer.
    answers = [m for m in user.history[cursor:] if "альбом" in m.text]
    assert len(answers) == 1 and "3 товара" in answers[0].text
    assert sum("Выберите стиль" in m.text for m in user.history[cursor:]) == 1
    assert not any("альбом" in m.text or "стиль" in m.text for m in other.messages)


async def test_not_enough_credits_for_the_album_charges_nothing(harness: Harness) -> None:
    harness.overrides = dict(FAST_ORDERS)
    await harness.start()
    user = harness.tg.user(3004)
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text)
    names = ["Тарелка", "Чашка", "Ложка", "Вилка"]
    await user.send_album([AlbumPart(p, caption=n) for p, n in zip(photos(4), names, strict=True)])
    screen = await to_confirmation(user)
    assert "ничего не списано" in screen.text and "Не хватает: 10" in screen.text
    assert screen.buttons[0] == ["💳 Пополнить"] and ["➖ Убрать последний товар"] in screen.buttons
    assert harness.ledger(3004) == [(30, "welcome")] and not harness.jobs(3004)
    # Dropping a product makes the order fit; then it goes through as usual.
    confirm = await step(user, user.click(screen, "➖ Убрать последний товар"),
                         lambda m: "Проверьте заказ" in m.text)
    assert "Вилка" not in confirm.text and "3 × 1 × 10 = 30" in confirm.text
    cursor = user.cursor()
    query = await user.click(confirm, "✅ Запустить")
    await user.wait_for_callback_answer(query)
    # A second press of the same confirmation (or a stale one) never makes a second order.
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 3, timeout=15)
    await user.wait_for_message(lambda m: "готово 3 из 3" in m.text, after=cursor)
    assert len(harness.query("SELECT * FROM orders")) == 1 and len(harness.jobs(3004)) == 3
    assert harness.balance(3004) == 0


async def test_photos_without_captions_are_described_one_by_one_or_all_at_once(harness: Harness) -> None:
    harness.overrides = dict(FAST_ORDERS)
    await harness.start()
    user = harness.tg.user(3005)
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text)
    pics = photos(3)
    long_caption = "Сумка " + "очень " * 120
    ask = await step(user, user.send_album([AlbumPart(pics[0], caption=long_caption), AlbumPart(pics[1]),
                                            AlbumPart(pics[2])]),
                     lambda m: "Опишите товар 2 из 3" in m.text)
    report = [m for m in user.messages if "альбом" in m.text][-1]
    assert "Подписи №1 длиннее 500 символов — сократил" in report.text
    await step(user, user.click(ask, "📝 Одно описание для всех"), lambda m: "одно описание" in m.text)
    confirm = await step(user, user.send_text("Органайзер для ванной"), lambda m: "Выберите стиль" in m.text)
    assert confirm
    products = harness.query("SELECT description FROM products WHERE user_id = 3005 ORDER BY id")
    assert [len(p["description"]) for p in products][0] == 500
    assert [p["description"] for p in products][1:] == ["Органайзер для ванной"] * 2

    # One by one: each photo without a caption is asked for in turn.
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text)
    first = await step(user, user.send_album([AlbumPart(pics[0]), AlbumPart(pics[1], caption="Зонт")]),
                       lambda m: "Опишите товар 1 из 2" in m.text)
    assert first
    await step(user, user.send_text("Шарф шерстяной"), lambda m: "Выберите стиль" in m.text)
    products = harness.query("SELECT description FROM products WHERE user_id = 3005 ORDER BY id")
    assert [p["description"] for p in products][3:] == ["Шарф шерстяной", "Зонт"]


async def test_non_photos_are_skipped_bad_photos_named_and_more_than_ten_cut(harness: Harness) -> None:
    harness.overrides = dict(FAST_ORDERS)
    await harness.start()
    user = harness.tg.user(3006)
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text)
    pics = photos(12)
    tiny = product_jpeg(width=100, height=100)
    cursor = user.cursor()
    # Twelve product photos in a row (Telegram splits them into albums of 10 and 2), a video and a
    # photo too small for the video service inside.
    await user.send_album([AlbumPart(p, caption=f"Товар {i}") for i, p in enumerate(pics[:8], start=1)]
                          + [AlbumPart(b"\x00\x00\x00\x18ftypmp42", kind="video", file_name="clip.mp4"),
                             AlbumPart(tiny, caption="Крошка")])
    await user.send_album([AlbumPart(p, caption=f"Товар {i}") for i, p in enumerate(pics[8:], start=9)])
    await user.wait_for_message(lambda m: "Выберите стиль" in m.text, after=cursor)
    report = [m for m in user.history[cursor:] if "альбом" in m.text]
    assert len(report) == 1
    text = report[0].text
    assert "10 товаров" in text and "№9 — видео" in text and "№10 — слишком маленькое" in text
    assert "взял первые 10, не вошли: №13, №14" in text  # 8 + the 2 of the second album fit, the rest not
    descriptions = [r["description"] for r in harness.query(
        "SELECT description FROM products WHERE user_id = 3006 ORDER BY id")]
    assert descriptions == [f"Товар {i}" for i in range(1, 11)]


async def test_second_album_in_the_dialogue_replaces_or_adds(harness: Harness) -> None:
    harness.overrides = dict(FAST_ORDERS)
    await harness.start()
    user = harness.tg.user(3007)
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text)
    pics = photos(5)
    await step(user, user.send_album([AlbumPart(pics[0], caption="Лампа"), AlbumPart(pics[1], caption="Стол")]),
               lambda m: "Выберите стиль" in m.text)
    ask = await step(user, user.send_album([AlbumPart(pics[2], caption="Стул"),
                                            AlbumPart(pics[3], caption="Полка")]),
                     lambda m: "Заменить" in m.text)
    assert "уже собран заказ: 2 товара" in ask.text
    cursor = user.cursor()
    await step(user, user.click(ask, "➕ Добавить"), lambda m: "Выберите стиль" in m.text)
    confirm = await to_confirmation(user, after=cursor)
    assert all(n in confirm.text for n in ("Лампа", "Стол", "Стул", "Полка")) and "ничего не списано" in confirm.text, confirm.text

    ask = await step(user, user.send_album([AlbumPart(pics[4], caption="Кресло"),
                                            AlbumPart(pics[0], caption="Табурет")]),
                     lambda m: "Заменить" in m.text)
    cursor = user.cursor()
    await step(user, user.click(ask, "🔁 Заменить"), lambda m: "Выберите стиль" in m.text)
    confirm = await to_confirmation(user, after=cursor)
    assert "Кресло" in confirm.text and "Табурет" in confirm.text and "Лампа" not in confirm.text


async def test_album_of_one_photo_goes_on_like_a_single_photo(harness: Harness) -> None:
    harness.overrides = dict(FAST_ORDERS)
    await harness.start()
    user = harness.tg.user(3008)
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text)
    await step(user, user.send_album([AlbumPart(photos(1)[0]),
                                      AlbumPart(b"\x00\x00\x00\x18ftypmp42", kind="video", file_name="v.mp4")]),
               lambda m: "Коротко опишите товар" in m.text)
    await user.send_text("Кошелёк кожаный")
    confirm = await to_confirmation(user, quantity=2)
    assert "📦 Товар: Кошелёк кожаный" in confirm.text and "20" in confirm.text
    cursor = user.cursor()
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 2, timeout=15)
    summary = await user.wait_for_message(lambda m: "готово 2 из 2" in m.text, after=cursor)
    # Both videos of the order as one ZIP, named by place and product.
    await user.click(summary, "🗜 Все видео одним архивом")
    document = await user.wait_for_message(lambda m: m.kind == "document", after=cursor)
    with zipfile.ZipFile(io.BytesIO(document.media)) as zf:
        assert zf.namelist() == ["01-Кошелёк-кожаный.mp4", "02-Кошелёк-кожаный.mp4"]
        assert zf.read("01-Кошелёк-кожаный.mp4") == harness.kie.video_bytes
