"""Delivery to Telegram fails in every way the Bot API can fail; the seller is never charged for nothing."""

from __future__ import annotations

import os
import subprocess

import imageio_ffmpeg

from tests.fakes.kie import SMALL_MP4
from tests.harness import Harness, launch, videos


async def _state(harness: Harness, state: str) -> None:
    await harness.wait_jobs(lambda rows: bool(rows) and all(r["state"] == state for r in rows))


def _metric(harness: Harness, name: str) -> float:
    assert harness.app is not None
    return harness.app.metrics.registry.get_sample_value(name) or 0.0


def _delivery_retry_delays(harness: Harness, job_id: int) -> list[float]:
    events = harness.query("SELECT detail FROM job_events WHERE job_id = ? AND detail LIKE 'delivery retry %'"
                           " ORDER BY id", (job_id,))
    return [float(e["detail"].split(" in ")[1].split("s ")[0]) for e in events]


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


async def test_a_dropped_send_is_repeated_once_and_counted(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(4002)
    harness.tg.fail_next("sendVideo", mode="drop", times=1)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await _state(harness, "done")
    assert harness.tg.count("sendVideo") == 2 and len(videos(user)) == 1 and harness.balance(4002) == 20
    assert harness.jobs(4002)[0]["send_unsure"] == 1  # the repeat is on record (and in the metric)
    assert _metric(harness, "neurocards_telegram_video_resends_total") == 1


async def test_two_sends_of_unknown_outcome_refund_and_never_send_a_third(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(4003)
    harness.tg.fail_next("sendVideo", mode="drop", times=5)
    await launch(user)
    message = await user.wait_for_message(lambda m: "Ошибка при отправке видео" in m.text)
    await _state(harness, "failed")
    assert "Кредиты возвращены" in message.text
    assert harness.tg.count("sendVideo") == 2 and videos(user) == []
    assert harness.balance(4003) == 30


async def test_an_answer_lost_after_telegram_took_the_video_means_at_most_two_copies(harness: Harness) -> None:
    harness.overrides = {"telegram": {"request_timeout_s": 1}}
    await harness.start()
    user = harness.tg.user(4010)
    # Telegram posts the video, the answer comes after our timeout: we cannot know it arrived.
    harness.tg.fail_next("sendVideo", mode="delay", delay=2.5, process=True, times=1)
    await launch(user)
    await _state(harness, "done")
    assert len(videos(user)) == 2  # the known, counted risk: one repeat, never more
    assert _metric(harness, "neurocards_telegram_video_resends_total") == 1
    assert harness.balance(4010) == 20


async def test_telegram_outage_keeps_the_paid_video_and_tells_the_seller_once(harness: Harness) -> None:
    harness.overrides = {"generation.retry": {"delivery_delays_s": [0.05, 0.1]},
                         "delivery": {"give_up_after_s": 60, "max_delay_s": 0.3}}
    await harness.start()
    user = harness.tg.user(4011)
    harness.tg.fail_next("sendVideo", status=502, description="Bad Gateway", times=8)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=20)
    await _state(harness, "done")
    assert harness.tg.count("sendVideo") == 9
    assert sum("Telegram сейчас не принимает" in m.text for m in user.messages) == 1
    gaps = _delivery_retry_delays(harness, harness.jobs(4011)[0]["id"])
    assert gaps[:3] == [0.05, 0.1, 0.2] and max(gaps) == 0.3  # growing, then capped
    assert harness.balance(4011) == 20
    assert not os.listdir(harness.tmp / "storage" / "outputs")


async def test_telegram_outage_longer_than_the_limit_refunds(harness: Harness) -> None:
    harness.overrides = {"generation.retry": {"delivery_delays_s": [0.05, 0.1]},
                         "delivery": {"give_up_after_s": 1.0, "max_delay_s": 0.2}}
    await harness.start()
    user = harness.tg.user(4012)
    harness.tg.fail_next("sendVideo", status=502, description="Bad Gateway", times=1000)
    await launch(user)
    message = await user.wait_for_message(lambda m: "Ошибка при отправке видео" in m.text, timeout=15)
    await _state(harness, "failed")
    assert "Кредиты возвращены" in message.text
    assert sum("Telegram сейчас не принимает" in m.text for m in user.messages) == 1
    job = harness.jobs(4012)[0]
    assert job["finished_at"] - job["delivery_failing_since"] >= 1.0
    assert harness.balance(4012) == 30


async def test_a_slow_upload_of_a_big_file_is_given_the_time_it_needs(harness: Harness) -> None:
    # 250 kB at the planned 1000 kbit/s is 2 s more than the 1 s request timeout.
    harness.overrides = {"telegram": {"request_timeout_s": 1}, "delivery": {"min_upload_kbps": 1000}}
    harness.kie.video_bytes = SMALL_MP4 + bytes(250_000)
    await harness.start()
    user = harness.tg.user(4013)
    harness.tg.fail_next("sendVideo", mode="delay", delay=1.8, times=1)
    await launch(user)
    await _state(harness, "done")
    assert harness.tg.count("sendVideo") == 1 and len(videos(user)) == 1


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
