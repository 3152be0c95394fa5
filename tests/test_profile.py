"""The cabinet and "My videos": delivered videos come back by their Telegram file_id, free."""

from __future__ import annotations

from neurocards.store.history import HistoryStore
from tests.harness import Harness, launch, videos
from tests.test_payments import open_menu


async def test_my_videos_resends_by_file_id_without_charge(harness: Harness) -> None:
    app = await harness.start()
    user = harness.tg.user(4001, "Оля")
    await launch(user, description="Синяя ваза из стекла")
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    jobs = await harness.wait_jobs(lambda rows: rows and all(r["state"] == "done" for r in rows))
    file_id = jobs[0]["video_file_id"]
    assert file_id
    balance = harness.balance(4001)
    ledger = harness.ledger(4001)

    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "📂 Мои видео")
    page = await user.wait_for_message(lambda m: "Мои видео" in m.text, after=cursor)
    assert "Синяя ваза из стекла" in page.text and "всего 1" in page.text
    assert page.buttons == [["▶️ 1"], ["🏠 Меню"]]

    sends = harness.tg.count("sendVideo")
    cursor = user.cursor()
    await user.click(page, "▶️ 1")
    again = await user.wait_for_message(lambda m: m.kind == "video", after=cursor)
    call = harness.tg.last_call("sendVideo")
    assert harness.tg.count("sendVideo") == sends + 1
    assert call.params["video"] == file_id and call.files == {}  # the stored id, not an upload
    assert again.media == harness.kie.video_bytes and "Синяя ваза" in again.text
    assert harness.balance(4001) == balance and harness.ledger(4001) == ledger
    assert harness.kie.count("veoGenerate") == 1

    # Someone else's job id finds nothing.
    assert await HistoryStore(app.db).video(4999, jobs[0]["id"]) is None

    cursor = user.cursor()
    await user.click(None, "🏠 Меню")
    menu = await user.wait_for_message(lambda m: "Баланс" in m.text and bool(m.buttons), after=cursor)
    await user.click(menu, "👤 Кабинет")
    cabinet = await user.wait_for_message(lambda m: "Кабинет" in m.text, after=cursor)
    assert f"Баланс: <b>{balance}</b>" in cabinet.source_text
    assert "Готовых видео: 1" in cabinet.text and "Оплат: 0" in cabinet.text
    assert "https://t.me/neurocards_test_bot?start=ref_" in cabinet.text


async def test_my_videos_pages_by_five(harness: Harness) -> None:
    harness.overrides = {"credits": {"welcome": 60}}
    await harness.start()
    user = harness.tg.user(4002)
    await launch(user, description="Первый товар", quantity=1)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await launch(user, description="Второй товар", quantity=5)
    await harness.tg.wait_until(lambda: len(videos(user)) == 6, timeout=30)
    await harness.wait_jobs(lambda rows: len(rows) == 6 and all(r["state"] == "done" for r in rows))

    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "📂 Мои видео")
    first = await user.wait_for_message(lambda m: "Мои видео" in m.text, after=cursor)
    assert first.buttons == [["▶️ 1", "▶️ 2", "▶️ 3", "▶️ 4", "▶️ 5"], ["▶️"], ["🏠 Меню"]]
    assert "всего 6" in first.text and "Второй товар" in first.text and "Первый товар" not in first.text

    cursor = user.cursor()
    await user.click(first, "▶️")
    second = await user.wait_for_message(lambda m: "Мои видео" in m.text and "Первый товар" in m.text, after=cursor)
    assert second.buttons == [["▶️ 6"], ["◀️"], ["🏠 Меню"]]
    cursor = user.cursor()
    await user.click(second, "▶️ 6")
    oldest = await user.wait_for_message(lambda m: m.kind == "video", after=cursor)
    assert "Первый товар" in oldest.text
    cursor = user.cursor()
    await user.click(second, "◀️")
    await user.wait_for_message(lambda m: "Мои видео" in m.text and "▶️ 1" in str(m.buttons), after=cursor)
    assert harness.balance(4002) == 0


async def test_no_videos_yet(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(4003)
    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "📂 Мои видео")
    empty = await user.wait_for_message(lambda m: "Пока их нет" in m.text, after=cursor)
    assert empty.buttons == [["🎬 Создать видео"], ["🏠 Меню"]]
