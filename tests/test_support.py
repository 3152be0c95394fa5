"""Support reaches a person: a link when there is a support account, otherwise a relay to the
operators and back; no text promises a channel that does not exist."""

from __future__ import annotations

from tests.harness import Harness, launch, product_jpeg, videos

ADMIN = 900


async def _start(harness: Harness, user_id: int, name: str = "Продавец"):
    user = harness.tg.user(user_id, name)
    cursor = user.cursor()
    await user.send_text("/start")
    await user.wait_for_message(lambda m: "Баланс" in m.text, after=cursor)
    return user


async def test_support_button_links_to_the_support_account(harness: Harness) -> None:
    await harness.start()
    user = await _start(harness, 7000)
    cursor = user.cursor()
    await user.click(None, "🆘 Поддержка")
    screen = await user.wait_for_message(lambda m: "@nc_help" in m.text, after=cursor)
    link = screen.button("✉️ Написать в поддержку")
    assert link["url"] == "https://t.me/nc_help"


async def test_without_a_support_account_the_message_reaches_an_admin_and_the_answer_comes_back(
        harness: Harness) -> None:
    harness.overrides = {"telegram": {"support_username": "", "admin_ids": [ADMIN]}}
    await harness.start()
    admin = await _start(harness, ADMIN, "Админ")
    seller = await _start(harness, 7001, "Вера")
    await launch(seller)
    await harness.tg.wait_until(lambda: len(videos(seller)) == 1)

    cursor = seller.cursor()
    await seller.click(None, "🆘 Поддержка")
    ask = await seller.wait_for_message(lambda m: "следующим сообщением" in m.text, after=cursor)
    assert "в ответ на это сообщение" not in ask.text
    admin_cursor = admin.cursor()
    cursor = seller.cursor()
    await seller.send_text("Видео пришло без звука, что делать?")
    await seller.wait_for_message(lambda m: "передано оператору" in m.text, after=cursor)
    relayed = await admin.wait_for_message(lambda m: "без звука" in m.text, after=admin_cursor)
    assert "ID продавца: 7001" in relayed.text and "Вера" in relayed.text and "#1" in relayed.text

    cursor, admin_cursor = seller.cursor(), admin.cursor()
    await admin.send_text("Звук добавим в следующей версии, спасибо!", reply_to=relayed)
    await admin.wait_for_message(lambda m: "отправлен продавцу 7001" in m.text, after=admin_cursor)
    await seller.wait_for_message(lambda m: "Ответ поддержки" in m.text, after=cursor)
    await seller.wait_for_message(lambda m: "следующей версии" in m.text, after=cursor)

    # the relay is one message: the next one is the normal dialogue again
    cursor = seller.cursor()
    await seller.send_text("спасибо")
    await seller.wait_for_message(lambda m: "Не понял" in m.text, after=cursor)


async def test_paysupport_relays_a_photo_with_its_caption(harness: Harness) -> None:
    harness.overrides = {"telegram": {"support_username": "", "admin_ids": [ADMIN]}}
    await harness.start()
    admin = await _start(harness, ADMIN, "Админ")
    seller = await _start(harness, 7002)
    cursor = seller.cursor()
    await seller.send_text("/paysupport")
    await seller.wait_for_message(lambda m: "оплате" in m.text and "следующим сообщением" in m.text, after=cursor)
    admin_cursor = admin.cursor()
    await seller.send_photo(product_jpeg(), caption="Списали 50 ⭐, кредитов нет")
    relayed = await admin.wait_for_message(lambda m: m.kind == "photo", after=admin_cursor)
    assert "ID продавца: 7002" in relayed.text and "кредитов нет" in relayed.text
    assert harness.query("SELECT COUNT(*) AS n FROM products")[0]["n"] == 0  # not taken as a product photo


async def test_no_support_channel_promises_nothing(harness: Harness) -> None:
    harness.overrides = {"telegram": {"support_username": "", "admin_ids": []}}
    await harness.start()
    seller = await _start(harness, 7003)
    cursor = seller.cursor()
    await seller.click(None, "🆘 Поддержка")
    screen = await seller.wait_for_message(lambda m: "Поддержка" in m.text, after=cursor)
    assert "не подключена" in screen.text and "ответ" not in screen.text.lower()
    for command in ("/paysupport", "/support"):
        cursor = seller.cursor()
        await seller.send_text(command)
        answer = await seller.wait_for_message(lambda m: "не подключена" in m.text, after=cursor)
        assert "в ответ на это сообщение" not in answer.text
