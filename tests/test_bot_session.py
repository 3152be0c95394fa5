"""How the bot's Bot API calls travel: JSON bodies for plain calls, multipart for uploads,
and getUpdates batched under load without delaying an idle bot."""

from __future__ import annotations

import json
import time
from typing import Any

from aiogram.methods import AnswerCallbackQuery, GetUpdates

from neurocards.bot.rate_limit import UpdateBatching
from tests.harness import Harness, launch, videos


async def test_plain_calls_go_as_json_and_uploads_as_multipart(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(1101, "Вера")
    await launch(user, description="Синий шерстяной плед 150×200", quantity=1)
    [video] = await harness.tg.wait_until(lambda: videos(user) or None)
    assert video.media == harness.kie.video_bytes

    sends = harness.tg.calls_of("sendMessage")
    assert sends and all(c.content_type == "application/json" for c in sends)
    menu = next(c for c in sends if "Баланс" in c.params["text"])
    # Russian text and the keyboard arrive exactly as a user sees them
    assert "Баланс" in menu.params["text"]
    keyboard = menu.params["reply_markup"]
    keyboard = json.loads(keyboard) if isinstance(keyboard, str) else keyboard
    assert keyboard["inline_keyboard"][0][0]["text"] == "🎬 Создать видео"
    assert all(c.content_type == "application/json" for c in harness.tg.calls_of("editMessageText"))
    [upload] = [c for c in harness.tg.calls_of("sendVideo") if c.status == 200]
    assert upload.content_type == "multipart/form-data"
    assert "Видео готово" in upload.params["caption"]
    assert harness.balance(1101) == 20


async def _fake_polling(batching: UpdateBatching, answers: list[list[Any]]) -> list[float]:
    """Runs getUpdates calls back to back; returns when each reached the server."""
    started: list[float] = []

    async def make_request(bot: Any, method: Any) -> Any:
        started.append(time.monotonic())
        return answers[len(started) - 1]

    for _ in answers:
        await batching(make_request, None, GetUpdates(timeout=30))  # type: ignore[arg-type]
    return started


async def test_busy_polling_waits_for_more_updates() -> None:
    started = await _fake_polling(UpdateBatching(0.05), [[object()], [object()], []])
    assert started[1] - started[0] >= 0.045  # after updates came, the next call gathers more
    assert started[2] - started[1] >= 0.045


async def test_idle_polling_and_other_calls_are_not_delayed() -> None:
    batching = UpdateBatching(0.2)
    started = await _fake_polling(batching, [[], [], []])
    assert started[-1] - started[0] < 0.1  # a long poll that timed out empty goes again at once

    await _fake_polling(batching, [[object()]])  # busy now
    begin = time.monotonic()

    async def answer(bot: Any, method: Any) -> bool:
        return True

    await batching(answer, None, AnswerCallbackQuery(callback_query_id="1"))  # type: ignore[arg-type]
    assert time.monotonic() - begin < 0.1  # only getUpdates is held back


async def test_batching_off_never_waits() -> None:
    started = await _fake_polling(UpdateBatching(0), [[object()]] * 3)
    assert started[-1] - started[0] < 0.05
