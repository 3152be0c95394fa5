"""The live status of an order: one message, edited in place, throttled, true after a kill -9."""

from __future__ import annotations

import asyncio

from tests.fakes.telegram_user import AlbumPart
from tests.harness import Harness, launch, product_jpeg, videos
from tests.test_albums import COLORS, step, to_confirmation


async def test_status_is_edited_while_a_job_runs_and_never_faster_than_the_interval(harness: Harness) -> None:
    # Scaled down ten times: a 3 s job with edits at most every 0.5 s stands for a 30 s job with
    # the production interval of 5 s (orders.status_edit_interval_s is the throttle).
    harness.overrides = {"orders": {"status_edit_interval_s": 0.5, "status_tick_s": 0.05}}
    harness.kie.generation_delay_s = 3.0
    await harness.start()
    user = harness.tg.user(4001)
    await launch(user, description="Термос стальной 500 мл")
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=15)
    await asyncio.sleep(0.6)  # the final edit may wait out the interval
    posts = [c for c in harness.tg.calls_of("sendMessage") if "Заказ" in str(c.params.get("text"))]
    assert len(posts) == 1  # one status message for an order of one...
    status_id = posts[0].result["message_id"]
    edits = [c for c in harness.tg.calls_of("editMessageText") if c.params.get("message_id") == status_id]
    assert len(edits) >= 2  # ...edited in place while the job runs (generating, time so far, ready)
    gaps = [b.at - a.at for a, b in zip(edits, edits[1:], strict=False)]
    assert min(gaps) >= 0.5 - 0.02, gaps
    assert any("создаётся, попытка 1 из 5" in str(c.params["text"]) for c in edits)
    assert "✅ готово" in str(edits[-1].params["text"]) and "Заказ завершён" in str(edits[-1].params["text"])
    # A status nobody needs to read twice: the single video is its own summary.
    assert not any("🏁" in m.text for m in user.messages)


async def test_deleted_status_message_is_left_alone(harness: Harness) -> None:
    harness.overrides = {"orders": {"status_edit_interval_s": 0.2, "status_tick_s": 0.05}}
    harness.kie.generation_delay_s = 1.0
    await harness.start()
    user = harness.tg.user(4002)
    await launch(user, quantity=2, description="Подушка декоративная")
    status = await user.wait_for_message(lambda m: "Заказ" in m.text and "в очереди" in m.text
                                         or "создаётся" in m.text)
    harness.tg.state.chat_for_user(user.info).messages.pop(status.message_id)  # the seller deleted it
    await harness.tg.wait_until(lambda: len(videos(user)) == 2, timeout=15)
    await user.wait_for_message(lambda m: "готово 2 из 2" in m.text)
    assert len([c for c in harness.tg.calls_of("sendMessage") if "📦 <b>Заказ" in str(c.params.get("text"))]) == 1
    # One try found it gone; nothing more was tried on it.
    assert [r.method for r in harness.tg.rejected] == ["editMessageText"]
    harness.tg.rejected.clear()


async def test_kill_in_the_middle_of_a_ten_product_order(harness: Harness) -> None:
    harness.kie.generation_delay_s = 3600  # every task stays "generating" until the bot is killed
    harness.overrides = {"credits": {"welcome": 100},
                         "orders": {"album_settle_s": 0.3, "status_edit_interval_s": 0.3, "status_tick_s": 0.05}}
    await harness.spawn_ready()
    user = harness.tg.user(4003, "Жанна")
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text, timeout=30)
    names = [f"Товар номер {i}" for i in range(1, 11)]
    await user.send_album([AlbumPart(product_jpeg(color=COLORS[i]), caption=n) for i, n in enumerate(names)])
    confirm = await to_confirmation(user)
    harness.kie.fail_next("veoGenerate", times=2, http_status=400,
                          msg="Your image was flagged as violating content policies")
    await user.click(confirm, "✅ Запустить")
    await harness.wait_jobs(lambda rows: len(rows) == 10 and sum(r["state"] == "generating" for r in rows) == 8
                            and sum(r["state"] == "failed" for r in rows) == 2, timeout=30)
    status = await user.wait_for_message(lambda m: "Заказ" in m.text and "↩️" in m.text, timeout=10)
    harness.kill()

    harness.kie.generation_delay_s = 0
    await harness.spawn_ready()
    await harness.tg.wait_until(lambda: len(videos(user)) == 8, timeout=30)
    summary = await user.wait_for_message(lambda m: "готово 8 из 10" in m.text, timeout=15)
    assert "за 2 вернули 20 кредитов (сервис отклонил фото по правилам)" in summary.text
    await asyncio.sleep(0.5)  # would a second summary or a second status message show up?
    assert sum("готово 8 из 10" in m.text for m in user.messages) == 1
    posts = [c for c in harness.tg.calls_of("sendMessage") if "📦 <b>Заказ" in str(c.params.get("text"))]
    assert len(posts) == 1  # the status was edited after the restart, not sent again
    final = [m for m in user.messages if m.message_id == status.message_id][0]
    assert final.text.count("✅ готово") == 8 and final.text.count("↩️") == 2
    assert harness.kie.count("veoGenerate") == 10
    rows = harness.jobs(4003)
    assert sorted(r["state"] for r in rows) == ["done"] * 8 + ["failed"] * 2
    ledger = harness.ledger(4003)
    assert ledger.count((-10, "job_charge")) == 10 and ledger.count((10, "job_refund")) == 2
    assert harness.balance(4003) == 20


async def test_a_big_order_waits_its_turn_instead_of_being_refused(harness: Harness) -> None:
    harness.overrides = {"limits": {"max_jobs_in_flight": 3}, "credits": {"welcome": 60},
                         "orders": {"album_settle_s": 0.3, "status_edit_interval_s": 0.2, "status_tick_s": 0.05}}
    harness.kie.generation_delay_s = 0.6
    await harness.start()
    user = harness.tg.user(4004)
    await step(user, user.send_text("/start"), lambda m: "Баланс" in m.text)
    await user.send_album([AlbumPart(product_jpeg(color=COLORS[i]), caption=f"Товар {i}") for i in range(3)])
    confirm = await to_confirmation(user, quantity=2)  # 6 videos, 3 at a time
    await user.click(confirm, "✅ Запустить")
    most, deadline = 0, asyncio.get_running_loop().time() + 20
    while len(videos(user)) < 6:
        rows = await asyncio.to_thread(harness.jobs, 4004)
        most = max(most, sum(r["claimed"] and r["state"] not in ("done", "failed") for r in rows))
        assert asyncio.get_running_loop().time() < deadline, [(r["state"], r["claimed"]) for r in rows]
        await asyncio.sleep(0.05)
    assert most == 3 and len(rows) == 6
    assert any("в очереди" in c.params["text"] for c in harness.tg.calls_of("editMessageText")
               + harness.tg.calls_of("sendMessage") if "Заказ" in str(c.params.get("text")))


async def test_my_orders_shows_the_open_orders(harness: Harness) -> None:
    harness.overrides = {"orders": {"status_edit_interval_s": 0.2, "status_tick_s": 0.05}}
    harness.kie.generation_delay_s = 2.0
    await harness.start()
    user = harness.tg.user(4005)
    cursor = user.cursor()
    await user.send_text("/start")
    menu = await user.wait_for_message(lambda m: "Привет" in m.text, after=cursor)
    await user.click(menu, "📦 Мои заказы")
    await user.wait_for_message(lambda m: "нет заказов в работе" in m.text, after=cursor)
    await launch(user, quantity=2, description="Лампа настольная")
    cursor = user.cursor()
    await user.send_text("/start")
    menu = await user.wait_for_message(lambda m: "Привет" in m.text, after=cursor)
    await user.click(menu, "📦 Мои заказы")
    screen = await user.wait_for_message(lambda m: "Заказ" in m.text and "Лампа настольная" in m.text,
                                         after=cursor)
    assert "1/2" in screen.text and "2/2" in screen.text and "примерно через" in screen.text
    await harness.tg.wait_until(lambda: len(videos(user)) == 2, timeout=15)
