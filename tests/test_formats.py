"""The seller chooses the shape (9:16 · 3:4 · 1:1 · 16:9) and the delivered MP4 has exactly it."""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import pytest
from PIL import Image

from neurocards.providers.base import VideoRequest
from neurocards.providers.kie_models import get_adapter
from neurocards.providers.video_tools import mp4_video_size
from tests.fakes.telegram_user import FakeUser
from tests.harness import Harness, videos, walk_to_confirm

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def make_mp4(width: int, height: int, *, seconds: float = 1, noisy: bool = False) -> bytes:
    """A real H.264 MP4 (what a model returns), width x height."""
    vf = "noise=alls=100:allf=t,format=yuv420p" if noisy else "format=yuv420p"
    quality = ["-qp", "0"] if noisy else []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        subprocess.run(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
             f"testsrc=size={width}x{height}:rate=10", "-t", str(seconds), "-vf", vf, "-c:v", "libx264",
             "-preset", "ultrafast", *quality, "-movflags", "+faststart", str(path)], capture_output=True, check=True)
        return path.read_bytes()


def mp4_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an MP4 as ffmpeg reads it."""
    probe = subprocess.run([FFMPEG, "-hide_banner", "-i", "pipe:0"], input=data, capture_output=True)
    match = re.search(rb"Video: .*?(\d{2,5})x(\d{2,5})", probe.stderr)
    assert match, probe.stderr[-500:]
    return int(match.group(1)), int(match.group(2))


async def order(harness: Harness, user: FakeUser, aspect: str) -> bytes:
    confirm = await walk_to_confirm(user, aspect=aspect)
    assert f"Формат: {aspect}" in confirm.text
    count = len(videos(user))
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) > count, timeout=60)
    video = videos(user)[-1].media
    assert video is not None
    return video


async def test_veo_makes_9_16_and_the_seller_gets_3_4(harness: Harness) -> None:
    harness.kie.video_bytes = make_mp4(180, 320)
    await harness.start()
    user = harness.tg.user(5301)
    video = await order(harness, user, "3:4")
    task = list(harness.kie.tasks.values())[-1]
    assert task.body["aspectRatio"] == "9:16"  # the nearest shape Veo makes
    with Image.open(io.BytesIO(harness.kie.uploads[-1].data)) as photo:  # the whole product, in 9:16
        assert abs(photo.width / photo.height - 9 / 16) < 0.01
    assert mp4_size(video) == (180, 240)
    assert harness.balance(5301) == 20


async def test_a_landscape_order_is_never_delivered_vertical(harness: Harness) -> None:
    harness.kie.video_bytes = make_mp4(180, 320)  # the model ignored the request (a known complaint)
    await harness.start()
    user = harness.tg.user(5302)
    video = await order(harness, user, "16:9")
    assert list(harness.kie.tasks.values())[-1].body["aspectRatio"] == "16:9"
    assert mp4_size(video) == (320, 180)  # padded: a crop would have lost two thirds of the frame


async def test_a_model_without_a_shape_field_gets_a_photo_of_the_shape(harness: Harness) -> None:
    harness.overrides = {"generation": {"providers": ["kie:kling-2.6/image-to-video"]}}
    harness.kie.video_bytes = make_mp4(180, 320)
    await harness.start()
    user = harness.tg.user(5303)
    video = await order(harness, user, "1:1")
    task = list(harness.kie.tasks.values())[-1]
    assert "aspect_ratio" not in task.input
    with Image.open(io.BytesIO(harness.kie.uploads[-1].data)) as photo:
        assert photo.width == photo.height
    assert mp4_size(video) == (180, 180)


async def test_the_sandbox_renders_the_chosen_shape(harness: Harness) -> None:
    harness.overrides = {"generation": {"providers": ["sandbox"]}}
    await harness.start()
    user = harness.tg.user(5304)
    video = await order(harness, user, "3:4")
    width, height = mp4_size(video)
    assert width * 4 == height * 3


async def test_size_cap_per_format_and_surcharge(harness: Harness) -> None:
    harness.overrides = {"formats": {"max_mb": {"9:16": 1}, "surcharge": {"16:9": 2}}}
    big = make_mp4(240, 426, seconds=2, noisy=True)
    assert len(big) > 2 * 1024 * 1024
    harness.kie.video_bytes = big
    await harness.start()
    user = harness.tg.user(5305)
    video = await order(harness, user, "9:16")
    assert len(video) <= 1024 * 1024 and mp4_size(video) == (240, 426)
    assert harness.balance(5305) == 20

    confirm = await walk_to_confirm(user, aspect="16:9 +2")
    assert "Формат: 16:9" in confirm.text and "Стоимость: <b>12</b>" in (confirm.source_text or "")
    harness.kie.video_bytes = make_mp4(320, 180)
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 2, timeout=30)
    assert harness.balance(5305) == 8
    assert harness.ledger(5305)[-1] == (-12, "job_charge")


async def test_one_tap_keeps_the_style_s_shape(harness: Harness) -> None:
    harness.kie.video_bytes = make_mp4(180, 320)
    await harness.start()
    user = harness.tg.user(5306)
    confirm = await walk_to_confirm(user)  # taps "⏭ Оставить 9:16"
    assert "Формат: 9:16" in confirm.text
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=30)
    assert mp4_size(videos(user)[0].media or b"") == (180, 320)
    assert harness.jobs(5306)[0]["aspect_ratio"] == "9:16"


@pytest.mark.parametrize("aspect", ["9:16", "3:4", "1:1", "16:9"])
def test_every_model_with_a_shape_field_is_given_one(aspect: str) -> None:
    def body(model: str) -> dict:
        adapter = get_adapter(model)
        request = VideoRequest(prompt="p", image_url="https://x/y.jpg", model=model,
                               aspect_ratio=adapter.output_aspect(aspect))
        return adapter.build_body(model, request)

    assert body("veo3_fast")["aspectRatio"] == ("16:9" if aspect == "16:9" else "9:16")
    assert body("sora-2-image-to-video")["input"]["aspect_ratio"] == \
        ("landscape" if aspect == "16:9" else "portrait")
    assert body("bytedance/seedance-1.5-pro")["input"]["aspect_ratio"] == aspect
    assert get_adapter("kling-2.6/image-to-video").output_aspect(aspect) == aspect  # via the photo


def test_the_size_is_read_from_the_mp4_header_without_ffmpeg(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(make_mp4(180, 320))
    assert mp4_video_size(video) == (180, 320)
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"not a movie")
    assert mp4_video_size(video) is None
