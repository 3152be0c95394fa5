"""Broadcasts reach every reachable seller once: previewed, paced behind videos, resumed after a kill."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from neurocards.services.broadcast import DraftProblem, check_draft, parse_button
from tests.fakes.telegram_user import FakeUser
from tests.harness import Harness, product_jpeg, videos, walk_to_confirm
from tests.test_cli import run_cli

ADMIN = 900
ADMIN2 = 901
CAPTION = "Новые стили видео уже в боте"


def started_seller(harness: Harness, user_id: int) -> FakeUser:
    """A seller who has written to the bot before (the fake lets the bot write to them)."""
    user = harness.tg.user(user_id, f"S{user_id}")
    user._chat.started = True
    return user


def seed_users(db_path: Path, ids: list[int], **columns: object) -> None:
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        now = time.time()
        extra = "".join(f", {k}" for k in columns)
        marks = "".join(", ?" for _ in columns)
        conn.executemany(f"INSERT INTO users (id, first_seen, last_seen{extra}) VALUES (?, ?, ?{marks})",
                         [(uid, now, now, *columns.values()) for uid in ids])
        conn.commit()
    finally:
        conn.close()


async def seed_users_in_process(harness: Harness, ids: list[int]) -> None:
    assert harness.app is not None
    now = time.time()
    async with harness.app.db.transaction() as conn:
        await conn.executemany("INSERT INTO users (id, first_seen, last_seen) VALUES (?, ?, ?)",
                               [(uid, now, now) for uid in ids])


def broadcast_rows(harness: Harness) -> dict[str, int]:
    rows = harness.query("SELECT state, COUNT(*) AS n FROM broadcast_recipients GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


def _ban_in_the_database(db_path: Path, user_id: int) -> None:
    conn = sqlite3.connect(db_path, timeout=10)
    with conn:
        conn.execute("UPDATE users SET is_banned = 1 WHERE id = ?", (user_id,))
    conn.close()


async def _say(user: FakeUser, text: str, expect) -> str:
    cursor = user.cursor()
    await user.send_text(text)
    return (await user.wait_for_message(expect, after=cursor)).text


async def _click(user: FakeUser, message, button: str, expect):
    cursor = user.cursor()
    await user.click(message, button)
    return await user.wait_for_message(expect, after=cursor)


async def draft_text_broadcast(admin: FakeUser, text: str):
    """/admin_broadcast → a text → the preview and the control message."""
    await _say(admin, "/admin_broadcast", lambda m: "Пришлите сообщение" in m.text)
    cursor = admin.cursor()
    await admin.send_text(text)
    return await admin.wait_for_message(lambda m: "Так сообщение увидят" in m.text, after=cursor)


def test_draft_rules() -> None:
    assert check_draft("text", "   ", None, 100) is DraftProblem.EMPTY
    assert check_draft(None, "", None, 100) is DraftProblem.KIND
    assert check_draft("text", "я" * 4097, None, 100) is DraftProblem.TEXT_TOO_LONG
    assert check_draft("photo", "я" * 1025, 10, 100) is DraftProblem.CAPTION_TOO_LONG
    assert check_draft("video", "ok", 101, 100) is DraftProblem.FILE_TOO_BIG
    assert check_draft("video", "", 100, 100) is None
    assert parse_button("Каталог | https://example.com/a?b=1") == ("Каталог", "https://example.com/a?b=1")
    assert parse_button("Каталог https://example.com") is None
    assert parse_button("| https://example.com") is None


async def test_admin_previews_chooses_a_segment_and_every_seller_gets_it_once(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}, "broadcast": {"per_s": 200, "progress_every_s": 0.2}}
    await harness.start()
    admin = harness.tg.user(ADMIN, "Owner")
    await _say(admin, "/start", lambda m: "Баланс" in m.text)
    sellers = [harness.tg.user(uid, f"S{uid}") for uid in range(8001, 8006)]
    for s in sellers:
        await _say(s, "/start", lambda m: "Баланс" in m.text)
    banned, opted, flooded = sellers[0], sellers[1], sellers[2]
    harness.query("SELECT 1")  # the DB exists
    await asyncio.to_thread(_ban_in_the_database, harness.db_path, banned.id)  # the bot's loop keeps running

    # Bad drafts are refused at the preview, nothing is sent.
    await _say(admin, "/admin_broadcast", lambda m: "Пришлите сообщение" in m.text)
    cursor = admin.cursor()
    await admin.send_photo(product_jpeg(), caption="х" * 1025)
    refusal = await admin.wait_for_message(lambda m: "1024" in m.text, after=cursor)
    assert "Сократите" in refusal.text
    await _say(admin, "   ", lambda m: "пустое" in m.text)

    cursor = admin.cursor()
    await admin.send_photo(product_jpeg(), caption=CAPTION)
    control = await admin.wait_for_message(lambda m: "Так сообщение увидят" in m.text, after=cursor)
    preview = next(m for m in admin.messages if m.kind == "photo" and CAPTION in m.text)
    assert any("Не присылать новости" in b for row in preview.buttons for b in row)
    assert "получателей: 5" in control.text  # the admin and the 4 sellers not banned
    control = await _click(admin, control, "Покупали", lambda m: "Покупали" in m.text and "получателей" in m.text)
    assert "получателей: 0" in control.text
    answer = await admin.wait_for_callback_answer(await admin.click(control, "✅ Отправить"))
    assert "нет получателей" in (answer.text or "")
    control = await _click(admin, control, "Все", lambda m: "✓ Все" in str(m.buttons))
    await _click(admin, control, "🔗 Кнопка-ссылка", lambda m: "Текст кнопки" in m.text)
    await _say(admin, "Каталог без ссылки", lambda m: "Не получилось" in m.text)
    control_text = await _say(admin, "Каталог | https://example.com/styles", lambda m: "Так сообщение увидят" in m.text)
    assert "получателей: 5" in control_text
    control = admin.last_message

    harness.tg.fail_next("sendPhoto", 429, retry_after=1, chat_id=flooded.id)
    started = time.monotonic()
    await admin.click(control, "✅ Отправить")
    report = await admin.wait_for_message(lambda m: "завершена" in m.text, timeout=15)
    assert "Доставлено: 5" in report.text and "Осталось: 0 из 5" in report.text
    for s in sellers[1:]:
        got = [m for m in s.messages if m.kind == "photo" and CAPTION in m.text]
        assert len(got) == 1, s.id
        assert any("Каталог" == b for row in got[0].buttons for b in row)
    assert not [m for m in banned.messages if CAPTION in m.text]
    flooded_calls = [c for c in harness.tg.calls_of("sendPhoto") if str(c.params.get("chat_id")) == str(flooded.id)]
    assert len(flooded_calls) == 2 and flooded_calls[1].at - flooded_calls[0].at >= 0.9  # retry_after honoured
    assert time.monotonic() - started < 10
    # The opt-out button: the next broadcast skips that seller.
    news = next(m for m in opted.messages if CAPTION in m.text)
    answer = await opted.wait_for_callback_answer(await opted.click(news, "🔕 Не присылать новости"))
    assert "не будем" in (answer.text or "")
    control = await draft_text_broadcast(admin, "Вторая новость")
    assert "получателей: 4" in control.text
    await admin.click(control, "✅ Отправить")
    await admin.wait_for_message(lambda m: "#2 завершена" in m.text, timeout=15)
    assert not [m for m in opted.messages if "Вторая новость" in m.text]
    assert sum("Вторая новость" in m.text for m in sellers[2].messages) == 1


async def test_two_admins_at_once_make_two_broadcasts_each_once_per_seller(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN, ADMIN2]}, "broadcast": {"per_s": 200}}
    await harness.start()
    admins = [harness.tg.user(ADMIN, "A"), harness.tg.user(ADMIN2, "B")]
    sellers = [harness.tg.user(uid) for uid in range(8101, 8111)]
    for u in admins + sellers:
        await _say(u, "/start", lambda m: "Баланс" in m.text)
    controls = [await draft_text_broadcast(a, f"Новость от {a.id}") for a in admins]
    await asyncio.gather(*(a.click(c, "✅ Отправить") for a, c in zip(admins, controls, strict=True)))
    # A second press of the same draft starts nothing.
    await admins[0].click(controls[0], "✅ Отправить")
    for a in admins:
        await a.wait_for_message(lambda m: "завершена" in m.text, timeout=15)
    for s in sellers:
        for a in admins:
            assert sum(f"Новость от {a.id}" in m.text for m in s.messages) == 1
    assert harness.query("SELECT COUNT(*) AS n FROM broadcasts")[0]["n"] == 2
    assert broadcast_rows(harness) == {"sent": 24}


async def test_kill_mid_broadcast_resumes_and_nobody_gets_it_twice(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}, "broadcast": {"per_s": 25, "progress_every_s": 0.5}}
    await harness.spawn_ready()
    admin = harness.tg.user(ADMIN, "Owner")
    await _say(admin, "/start", lambda m: "Баланс" in m.text)
    ids = list(range(8201, 8261))
    seed_users(harness.db_path, ids)
    sellers = [started_seller(harness, uid) for uid in ids]
    blocked = sellers[7]
    blocked.block()
    control = await draft_text_broadcast(admin, CAPTION)
    assert "получателей: 61" in control.text
    await admin.click(control, "✅ Отправить")
    await harness.tg.wait_until(lambda: sum(c.params.get("text") == CAPTION
                                            for c in harness.tg.calls_of("sendMessage")) >= 25, timeout=20)
    harness.kill()
    killed = broadcast_rows(harness)
    assert killed.get("sending", 0) <= 1 and killed.get("pending", 0) > 0
    await harness.spawn_ready()
    await harness.tg.wait_until(
        lambda: harness.query("SELECT state FROM broadcasts")[0]["state"] == "done", timeout=30)
    rows = broadcast_rows(harness)
    assert rows.get("unknown", 0) <= 1 and rows["blocked"] == 1 and "pending" not in rows
    assert rows["sent"] + rows.get("unknown", 0) == 60
    for s in sellers + [admin]:
        n = sum(CAPTION == m.text for m in s.messages) - (s is admin)  # the admin also has the preview
        if s is blocked:
            assert n == 0
        else:
            assert n <= 1, s.id
            unknown = harness.query("SELECT state FROM broadcast_recipients WHERE user_id = ?", (s.id,))[0]["state"]
            assert n == 1 or unknown == "unknown", s.id
    blocked_tries = [c for c in harness.tg.calls_of("sendMessage")
                     if str(c.params.get("chat_id")) == str(blocked.id) and c.params.get("text") == CAPTION]
    assert len(blocked_tries) == 1
    assert harness.query("SELECT unreachable_at FROM users WHERE id = ?", (blocked.id,))[0]["unreachable_at"]


async def test_a_video_finishing_during_a_big_broadcast_is_sent_in_the_usual_time(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN], "send_per_s": 30},
                         "broadcast": {"per_s": 25, "progress_every_s": 1}}
    harness.kie.generation_delay_s = 0.3
    await harness.start()
    admin = harness.tg.user(ADMIN, "Owner")
    await _say(admin, "/start", lambda m: "Баланс" in m.text)
    ids = list(range(10_000, 11_000))
    await seed_users_in_process(harness, ids)
    for uid in ids:
        started_seller(harness, uid)
    control = await draft_text_broadcast(admin, CAPTION)
    assert "получателей: 1001" in control.text
    await admin.click(control, "✅ Отправить")
    await harness.tg.wait_until(lambda: broadcast_rows(harness).get("sent", 0) >= 20, timeout=10)
    seller = harness.tg.user(7777, "Продавец")
    dialogue_started = time.monotonic()
    confirm = await walk_to_confirm(seller)
    dialogue_s = time.monotonic() - dialogue_started
    await seller.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(seller)) == 1, timeout=15)
    await harness.wait_jobs(lambda rows: [r["state"] for r in rows] == ["done"])
    job = harness.jobs(7777)[0]
    events = harness.query("SELECT at, state FROM job_events WHERE job_id = ? ORDER BY id", (job["id"],))
    sending_at = next(e["at"] for e in events if e["state"] == "sending")
    assert job["finished_at"] - sending_at < 1.0, "the broadcast delayed the video"
    assert dialogue_s < 5.0
    assert broadcast_rows(harness).get("pending", 0) > 500  # the broadcast was still going
    await _say(admin, "/admin_broadcast_stop", lambda m: "Остановлена" in m.text)


async def test_the_cli_lists_broadcasts(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}, "broadcast": {"per_s": 25}}
    await harness.start()
    admin = harness.tg.user(ADMIN, "Owner")
    await _say(admin, "/start", lambda m: "Баланс" in m.text)
    control = await draft_text_broadcast(admin, "Только админу")
    await admin.click(control, "✅ Отправить")
    await admin.wait_for_message(lambda m: "завершена" in m.text, timeout=10)
    await harness.stop()
    listed = await asyncio.to_thread(run_cli, "broadcast", "list", "--json", "--config", str(harness.config_path),
                                     cwd=harness.tmp)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["state"] == "done" and row["sent"] == 1 and row["total"] == 1 and row["segment"] == "all"
    assert set(row) == {"id", "created_at", "admin_id", "kind", "segment", "state", "total", "pending", "sent",
                        "blocked", "failed", "unknown"}
