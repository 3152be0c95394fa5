"""Delivery to Telegram fails in every way the Bot API can fail; the seller is never charged for nothing."""

from __future__ import annotations

import os
import subprocess

import imageio_ffmpeg

from tests.harness import Harness, launch, videos


async def _state(harness: Harness, state: str) -> None:
    await harness.wait_jobs(lambda rows: bool(rows) and all(r["state"] == state for r in rows))


def real_mp4(path: str, seconds: int = 4, bitrate: str = "4M") -> bytes:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size=720x1280:rate=25:duration={seconds}", "-c:v", "libx264",
                    "-preset", "ultrafast", "-b:v", bitrate, "-pix_fmt", "yuv420p", path], check=True, timeout=120)
    with open(path, "rb") as f:
        return f.read()


async def test_flood_control_waits_and_never_counts_as_a_failure(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(4001)
    harness.tg.fail_next("sendVideo", status=429, retry_after=1, times=2)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=15)
    await _state(harness, "done")
    assert harness.tg.count("sendVideo") == 3
    assert harness.balance(4001) == 20


async def test_network_error_is_retried(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(4002)
    harness.tg.fail_next("sendVideo", mode="drop", times=2)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await _state(harness, "done")
    assert len(videos(user)) == 1 and harness.balance(4002) == 20


async def test_network_error_three_times_refunds_with_a_message(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(4003)
    harness.tg.fail_next("sendVideo", mode="drop", times=3)
    await launch(user)
    message = await user.wait_for_message(lambda m: "Ошибка при отправке видео" in m.text)
    await _state(harness, "failed")
    assert "Кредиты возвращены" in message.text
    assert harness.tg.count("sendVideo") == 3 and videos(user) == []
    assert harness.balance(4003) == 30


async def test_bad_request_refunds_with_a_message(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(4004)
    harness.tg.fail_next("sendVideo", status=400, description="Bad Request: VIDEO_CONTENT_TYPE_INVALID")
    await launch(user)
    message = await user.wait_for_message(lambda m: "Ошибка при отправке видео" in m.text)
    await _state(harness, "failed")
    assert message.buttons == [["🔄 Попробовать ещё раз"], ["🏠 Меню"]]
    assert harness.tg.count("sendVideo") == 1
    assert harness.balance(4004) == 30


async def test_blocked_bot_stops_at_once_and_refunds(harness: Harness) -> None:
    harness.kie.generation_delay_s = 0.5
    await harness.start()
    user = harness.tg.user(4005)
    await launch(user)
    user.block()
    await _state(harness, "failed")
    assert harness.tg.count("sendVideo") == 1  # no retries against a blocked chat
    job = harness.jobs(4005)[0]
    assert job["error_class"] == "delivery" and "forbidden" in job["error_text"]
    assert harness.balance(4005) == 30


async def test_video_over_the_upload_limit_is_compressed(harness: Harness) -> None:
    harness.overrides = {"telegram": {"max_upload_mb": 1}}
    big = real_mp4(str(harness.tmp / "big.mp4"))
    assert len(big) > 1024 * 1024
    harness.kie.video_bytes = big
    await harness.start()
    user = harness.tg.user(4006)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=60)
    sent = videos(user)[0].media
    assert sent is not None and len(sent) <= 1024 * 1024 and sent[4:8] == b"ftyp"
    await _state(harness, "done")
    assert not os.listdir(harness.tmp / "storage" / "outputs")


async def test_oversized_file_that_cannot_be_shrunk_is_refunded(harness: Harness) -> None:
    harness.overrides = {"telegram": {"max_upload_mb": 1}}
    harness.kie.video_bytes = os.urandom(1024 * 1024 + 10)
    await harness.start()
    user = harness.tg.user(4007)
    await launch(user)
    await user.wait_for_message(lambda m: "Ошибка при отправке видео" in m.text, timeout=30)
    await _state(harness, "failed")
    assert harness.tg.count("sendVideo") == 0
    assert harness.balance(4007) == 30
