"""How the bot's Bot API calls travel: JSON bodies for plain calls, multipart for uploads."""

from __future__ import annotations

import json

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
