"""Balance everywhere it matters: low-balance warnings, a top-up one tap away, units, purchases."""

from __future__ import annotations

from tests.harness import Harness, launch, videos
from tests.test_payments import buy, open_menu


async def test_low_balance_line_and_buttons_under_each_video(harness: Harness) -> None:
    harness.overrides = {"credits": {"welcome": 20, "per_video": 10, "low_balance_videos": 3}}
    await harness.start()
    user = harness.tg.user(5101, "Ира")

    accepted = await launch(user)
    assert "Баланс: 10 кр." in accepted.text
    assert "хватит ещё на 1 видео" in accepted.text
    assert accepted.buttons == [["🏠 Меню"]]  # one more video is still affordable
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    first = videos(user)[0]
    assert "Баланс: 10 кр." in first.text and "хватит ещё на 1 видео" in first.text
    assert first.buttons == [["🔄 Сделать ещё с этим товаром"], ["🎞 Мои видео", "💳 Купить кредиты"],
                             ["🏠 Меню"]]

    accepted = await launch(user)
    assert "Баланс: 0 кр." in accepted.text and "не хватает на следующее видео" in accepted.text
    assert ["💳 Купить кредиты"] in accepted.buttons
    await harness.tg.wait_until(lambda: len(videos(user)) == 2)
    second = videos(user)[1]
    assert "Баланс: 0 кр." in second.text and "нужно 10 кр." in second.text

    cursor = user.cursor()
    await user.click(second, "💳 Купить кредиты")
    packs = await user.wait_for_message(lambda m: "Пополнение баланса" in m.text, after=cursor)
    assert any("⭐" in b for row in packs.buttons for b in row)
    cursor = user.cursor()
    await user.click(second, "🎞 Мои видео")
    page = await user.wait_for_message(lambda m: "Мои видео" in m.text, after=cursor)
    assert "всего 2" in page.text


async def test_plenty_of_credits_means_no_warning(harness: Harness) -> None:
    harness.overrides = {"credits": {"welcome": 100, "per_video": 10}}
    await harness.start()
    user = harness.tg.user(5102)
    accepted = await launch(user)
    assert "Баланс: 90 кр." in accepted.text and "⚠️" not in accepted.text
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    assert "⚠️" not in videos(user)[0].text
    # The success message always offers the seller's videos and more credits.
    assert ["🎞 Мои видео", "💳 Купить кредиты"] in videos(user)[0].buttons


async def test_a_failure_offers_a_top_up_when_one_video_is_out_of_reach(harness: Harness) -> None:
    harness.overrides = {"credits": {"welcome": 10, "per_video": 10}}
    await harness.start()
    user = harness.tg.user(5103)
    harness.kie.generation_delay_s = 60  # the task stays "generating" until the test says so
    await launch(user)
    await harness.tg.wait_until(lambda: harness.kie.tasks or None)
    # The owner raises the price while the job runs: after the refund one video is out of reach.
    harness.overrides["credits"]["per_video"] = 20
    await harness.restart()
    task_id = next(iter(harness.kie.tasks))
    harness.kie.fail_task(task_id, fail_code="400",
                          fail_msg="Your prompt was flagged by Website as violating content policies.")
    harness.kie.generation_delay_s = 0
    failure = await user.wait_for_message(lambda m: "Кредиты возвращены" in m.text, timeout=15)
    assert harness.balance(5103) == 10
    assert ["💳 Купить кредиты"] in failure.buttons
    cursor = user.cursor()
    await user.click(failure, "💳 Купить кредиты")
    await user.wait_for_message(lambda m: "Пополнение баланса" in m.text, after=cursor)


async def test_a_failure_with_credits_left_keeps_its_plain_buttons(harness: Harness) -> None:
    harness.overrides = {"credits": {"welcome": 10, "per_video": 10}}
    await harness.start()
    user = harness.tg.user(5105)
    harness.kie.fail_task(fail_code="400", fail_msg="Your prompt was flagged by Website as violating content policies.")
    await launch(user)
    failure = await user.wait_for_message(lambda m: "Кредиты возвращены" in m.text, timeout=15)
    assert harness.balance(5105) == 10
    assert ["💳 Купить кредиты"] not in failure.buttons


async def test_cabinet_lists_purchases(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [9001]}}
    await harness.start()
    user = harness.tg.user(5104)
    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "👤 Кабинет")
    cabinet = await user.wait_for_message(lambda m: "Кабинет" in m.text, after=cursor)
    cursor = user.cursor()
    await user.click(cabinet, "🧾 История покупок")
    empty = await user.wait_for_message(lambda m: "Покупок пока не было" in m.text, after=cursor)
    assert empty.buttons

    await buy(user, "120 кредитов")
    payment = await buy(user, "50 кредитов")
    admin = harness.tg.user(9001)
    cursor = admin.cursor()
    await admin.send_text(f"/admin_refund 5104 {payment.charge_id}")
    await admin.wait_for_message(lambda m: "возвращено" in m.text, after=cursor)

    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "👤 Кабинет")
    cabinet = await user.wait_for_message(lambda m: "Кабинет" in m.text, after=cursor)
    cursor = user.cursor()
    await user.click(cabinet, "🧾 История покупок")
    history = await user.wait_for_message(lambda m: "История покупок" in m.text, after=cursor)
    lines = history.text.splitlines()
    refunded = next(line for line in lines if "50 кредитов" in line)
    kept = next(line for line in lines if "120 кредитов" in line)
    assert "50 ⭐ → 50 кр." in refunded and "возвращено" in refunded
    assert "100 ⭐ → 120 кр." in kept and "возвращено" not in kept
    assert lines.index(refunded) < lines.index(kept)  # newest first
