"""A seller walks the whole conversation against the real bot, fake Telegram and fake KIE."""

from __future__ import annotations

import io

from PIL import Image

from tests.harness import Harness, launch, product_jpeg, videos, walk_to_confirm


async def test_start_shows_menu_balance_and_welcome_once(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1001, "Анна")
    await user.send_text("/start")
    menu = await user.wait_for_message(lambda m: "Баланс" in m.text)
    assert "30" in menu.text
    assert menu.buttons == [["🎬 Создать видео"], ["💰 Баланс", "💳 Пополнить"], ["📂 Мои видео", "👤 Кабинет"], ["📦 Мои заказы", "🆘 Поддержка"]]
    assert any("подарок" in m.text for m in user.messages)
    cursor = user.cursor()
    await user.send_text("/start")
    await user.wait_for_message(lambda m: "Баланс" in m.text, after=cursor)
    assert sum("подарок" in m.text for m in user.messages) == 1
    assert harness.balance(1001) == 30
    await user.click(None, "🆘 Поддержка")
    await user.wait_for_message(lambda m: "@nc_help" in m.text)


async def test_full_flow_delivers_videos_and_charges_once(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1002, "Борис")
    photo = product_jpeg()
    confirm = await walk_to_confirm(user, description="Белая кружка 350 мл с бамбуковой крышкой",
                                    template="🏡 В интерьере", wishes="на фоне моря", quantity=2, photo=photo)
    assert "20" in confirm.text and "Баланс после запуска: 10" in confirm.text
    assert "на фоне моря" in confirm.text
    cursor = user.cursor()
    await user.click(confirm, "✅ Запустить")
    accepted = await user.wait_for_message(lambda m: "Принял" in m.text, after=cursor)
    assert "Баланс: 10" in accepted.text
    delivered = await harness.tg.wait_until(lambda: videos(user) if len(videos(user)) == 2 else None)

    assert harness.kie.count("veoGenerate") == 2
    for task in harness.kie.tasks.values():
        prompt = task.body["prompt"]
        assert "Белая кружка 350 мл с бамбуковой крышкой" in prompt and "на фоне моря" in prompt
        assert task.body["imageUrls"] == [harness.kie.uploads[0].url]
    # The photo's bytes (never a Telegram URL with the token), given the video's 9:16 shape.
    with Image.open(io.BytesIO(harness.kie.uploads[0].data)) as uploaded:
        assert uploaded.format == "JPEG" and uploaded.size == (450, 800)
    for video in delivered:
        assert video.media == harness.kie.video_bytes
        assert "Видео готово" in video.text and "10" in video.text
        assert video.buttons == [["🔄 Сделать ещё с этим товаром"], ["🎞 Мои видео", "💳 Купить кредиты"], ["🏠 Меню"]]
    assert harness.balance(1002) == 10
    assert harness.ledger(1002) == [(30, "welcome"), (-10, "job_charge"), (-10, "job_charge")]
    jobs = await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    assert len(jobs) == 2
    assert all(j["video_file_id"] and j["video_path"] is None for j in jobs)
    assert not any((harness.tmp / "storage" / "outputs").iterdir())  # files deleted after delivery

    # "Make another" goes back to the styles with the same product: no new photo, no new description.
    photos_before = harness.tg.count("getFile")
    cursor = user.cursor()
    await user.click(delivered[0], "🔄 Сделать ещё с этим товаром")
    styles = await user.wait_for_message(lambda m: "Выберите стиль" in m.text, after=cursor)
    await user.click(styles, "🔍 Крупные детали")
    formats = await user.wait_for_message(lambda m: "Формат видео" in m.text, after=cursor)
    await user.click(formats, "⏭ Оставить")
    wishes = await user.wait_for_message(lambda m: "пожелания" in m.text, after=cursor)
    await user.click(wishes, "⏭ Пропустить")
    qty = await user.wait_for_message(lambda m: "Сколько видео" in m.text, after=cursor)
    await user.click(qty, "1 видео")
    confirm = await user.wait_for_message(lambda m: "Проверьте заказ" in m.text, after=cursor)
    assert "Белая кружка 350 мл с бамбуковой крышкой" in confirm.text
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 3)
    assert harness.tg.count("getFile") == photos_before
    assert harness.kie.count("veoGenerate") == 3
    assert len(harness.kie.uploads) == 1  # the uploaded photo is reused for the same product
    assert harness.balance(1002) == 0


async def test_not_enough_credits_says_how_many_are_missing(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1003)
    screen = await walk_to_confirm(user, quantity=5)
    assert "Не хватает" in screen.text and "20" in screen.text  # 50 needed, 30 on the balance
    assert "✅ Запустить" not in [b for row in screen.buttons for b in row]
    assert harness.balance(1003) == 30 and harness.jobs(1003) == []


async def test_double_press_on_launch_charges_once(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1004)
    confirm = await walk_to_confirm(user, quantity=1)
    await user.click(confirm, "✅ Запустить")
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    assert len(harness.jobs(1004)) == 1
    assert harness.balance(1004) == 20


async def test_cancel_charges_nothing_and_a_new_photo_starts_a_new_product(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1005)
    confirm = await walk_to_confirm(user)
    cursor = user.cursor()
    await user.click(confirm, "❌ Отмена")
    await user.wait_for_message(lambda m: "отменён" in m.text, after=cursor)
    assert harness.balance(1005) == 30 and harness.jobs(1005) == []
    # A photo at any moment starts over with a new product.
    cursor = user.cursor()
    await user.send_photo(product_jpeg(color=(10, 120, 10)))
    await user.wait_for_message(lambda m: "опишите товар" in m.text, after=cursor)
    assert len(harness.query("SELECT id FROM products WHERE user_id = 1005")) == 2


async def test_image_sent_as_file_and_bad_files(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1006)
    await user.send_text("/start")
    await user.wait_for_message(lambda m: "Баланс" in m.text)
    cursor = user.cursor()
    await user.send_document(b"not an image at all", file_name="x.png", mime_type="image/png")
    await user.wait_for_message(lambda m: "картинку" in m.text, after=cursor)
    cursor = user.cursor()
    await user.send_document(product_jpeg(100, 100), file_name="tiny.jpg", mime_type="image/jpeg")
    await user.wait_for_message(lambda m: "маленькое" in m.text, after=cursor)
    cursor = user.cursor()
    await user.send_document(product_jpeg(), file_name="p.jpg", mime_type="image/jpeg")
    await user.wait_for_message(lambda m: "опишите товар" in m.text, after=cursor)


async def test_old_buttons_change_nothing(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1007)
    first = await walk_to_confirm(user)
    second = await walk_to_confirm(user, description="Другой товар: синяя ваза")
    # The first confirmation screen is stale now: pressing it answers politely and charges nothing.
    query_id = await user.click(first, "✅ Запустить")
    answer = await user.wait_for_callback_answer(query_id)
    assert "устарела" in (answer.text or "")
    assert harness.balance(1007) == 30 and harness.jobs(1007) == []
    await user.click(second, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    assert "синяя ваза" in next(iter(harness.kie.tasks.values())).body["prompt"]
    assert harness.balance(1007) == 20


async def test_make_another_after_the_photo_expired_asks_for_a_new_photo(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1008)
    await launch(user)
    video = await harness.tg.wait_until(lambda: videos(user)[0] if videos(user) else None)
    for photo in (harness.tmp / "storage" / "photos").iterdir():
        photo.unlink()  # what the retention sweep does after storage.retention_days
    answer = await user.wait_for_callback_answer(await user.click(video, "🔄 Сделать ещё с этим товаром"))
    assert "Отправьте фото заново" in (answer.text or "")
    assert harness.balance(1008) == 20 and len(harness.jobs(1008)) == 1


async def test_a_flood_wait_on_a_dialogue_reply_is_sat_out(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1009)
    harness.tg.fail_next("sendMessage", status=429, retry_after=1)
    await user.send_text("/start")
    await user.wait_for_message(lambda m: "Баланс" in m.text, timeout=10)
