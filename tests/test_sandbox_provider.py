"""The sandbox provider renders real MP4s with the bundled ffmpeg; these tests check the files."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
from PIL import Image, ImageDraw

from neurocards.providers.base import ErrorKind, ProviderError, TaskState, TaskStatus, VideoRequest
from neurocards.providers.sandbox import (
    SandboxProvider,
    _covers,
    _pick_font,
    caption_from_prompt,
    clip_caption,
)

CYRILLIC = "Кружка керамическая «Утро», 350 мл"
# Small and slow: every test renders, and the suite must stay fast on a 2-core box.
SMALL = {"width": 144, "height": 256, "fps": 4}


def photo_jpeg(size: tuple[int, int] = (800, 600)) -> bytes:
    img = Image.new("RGB", size, (200, 220, 240))
    draw = ImageDraw.Draw(img)
    draw.ellipse((250, 150, 550, 450), fill=(220, 40, 40))
    draw.rectangle((40, 40, 140, 560), fill=(30, 120, 30))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def probe(path: Path) -> dict[str, object]:
    """Container/stream facts from `ffmpeg -i` (the bundled build has no ffprobe)."""
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                         capture_output=True, text=True, check=False).stderr
    video = re.search(r"Stream #\S+.*?: Video: (\w+).*?, (\w+)(?:\([^)]*\))?, (\d+)x(\d+)", out)
    assert video, out
    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    return {"codec": video[1], "pix_fmt": video[2], "size": (int(video[3]), int(video[4])),
            "audio": "Audio:" in out, "mp4": "mov,mp4" in out, "frames": frames, "secs": secs}


async def wait_done(provider: SandboxProvider, task_id: str) -> list[TaskStatus]:
    seen: list[TaskStatus] = []
    async with asyncio.timeout(15):
        while not seen or seen[-1].state is TaskState.PENDING:
            if seen:
                await asyncio.sleep(0.05)
            seen.append(await provider.poll(task_id, "sandbox", "sandbox"))
    return seen


async def render(provider: SandboxProvider, data: bytes, **request: object) -> tuple[str, list[TaskStatus]]:
    url = await provider.upload_image(data, "photo.jpg")
    fields: dict[str, object] = {"prompt": f"Product video of {CYRILLIC}. Soft light.", "model": "sandbox"}
    fields.update(request)
    task = await provider.submit(VideoRequest(image_url=url, **fields))  # type: ignore[arg-type]
    assert task.key_id == "sandbox" and re.fullmatch(r"sbx_[0-9a-f]{32}", task.task_id)
    return task.task_id, await wait_done(provider, task.task_id)


async def test_full_size_render_is_a_portrait_h264_mp4(tmp_path: Path) -> None:
    provider = SandboxProvider(tmp_path)
    try:
        task_id, seen = await render(provider, photo_jpeg(), duration_s=5,
                                     extra={"caption": "Термокружка стальная"})
    finally:
        await provider.aclose()
    assert seen[0].state is TaskState.PENDING
    assert seen[-1].state is TaskState.SUCCESS, seen[-1]
    assert seen[-1].result_urls == (f"sandbox://results/{task_id}.mp4",)
    path = tmp_path / "results" / f"{task_id}.mp4"
    facts = probe(path)
    assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p" and facts["mp4"]
    assert facts["size"] == (720, 1280) and not facts["audio"]
    assert 5 <= facts["secs"] <= 10 and facts["frames"] == 125  # type: ignore[operator]
    assert path.stat().st_size > 10_000
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # +faststart: the index comes first
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.parent.name != "uploads"]
    assert leftovers == [path.name]  # no scratch frames or .part files left behind


async def test_duration_is_clamped_and_download_copies(tmp_path: Path) -> None:
    provider = SandboxProvider(tmp_path, **SMALL)  # type: ignore[arg-type]
    task_id, seen = await render(provider, photo_jpeg((600, 900)), duration_s=30)
    assert seen[-1].state is TaskState.SUCCESS, seen[-1]
    src = tmp_path / "results" / f"{task_id}.mp4"
    facts = probe(src)
    assert facts["size"] == (144, 256) and abs(facts["secs"] - 10) < 0.01  # type: ignore[operator]

    dest = tmp_path / "out" / "video.mp4"
    size = await provider.download(seen[-1].result_urls[0], dest, max_bytes=10**9)
    assert size == src.stat().st_size and dest.read_bytes() == src.read_bytes()
    assert not dest.with_name("video.mp4.part").exists()

    with pytest.raises(ProviderError) as err:
        await provider.download(seen[-1].result_urls[0], tmp_path / "small.mp4", max_bytes=size - 1)
    assert err.value.kind is ErrorKind.DOWNLOAD and not (tmp_path / "small.mp4").exists()
    with pytest.raises(ProviderError) as err:
        await provider.download("sandbox://results/sbx_" + "0" * 32 + ".mp4", dest, max_bytes=10**9)
    assert err.value.kind is ErrorKind.DOWNLOAD
    with pytest.raises(ProviderError):
        await provider.download("sandbox://results/../uploads/x.mp4", dest, max_bytes=10**9)


async def test_short_request_gets_the_minimum_duration(tmp_path: Path) -> None:
    provider = SandboxProvider(tmp_path, **SMALL)  # type: ignore[arg-type]
    task_id, seen = await render(provider, photo_jpeg(), duration_s=2, aspect_ratio="16:9")
    assert seen[-1].state is TaskState.SUCCESS
    facts = probe(tmp_path / "results" / f"{task_id}.mp4")
    assert facts["size"] == (256, 144) and abs(facts["secs"] - 5) < 0.01  # type: ignore[operator]


async def test_corrupt_photo_fails_with_a_message(tmp_path: Path) -> None:
    provider = SandboxProvider(tmp_path, **SMALL)  # type: ignore[arg-type]
    task_id, seen = await render(provider, b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    final = seen[-1]
    assert final.state is TaskState.FAILED and final.fail_msg
    assert "invalid image" in final.fail_msg and str(tmp_path) not in final.fail_msg
    # Persisted: a restarted bot sees the same failure, not a retryable "lost" task.
    again = await SandboxProvider(tmp_path, **SMALL).poll(task_id, "sandbox", None)  # type: ignore[arg-type]
    assert again == final


async def test_ffmpeg_failure_reports_its_last_stderr_lines(tmp_path: Path) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8 9; do echo \"noise $i\" >&2; done\n"
                    "echo 'Error opening output file: disk on fire' >&2\nexit 1\n")
    fake.chmod(0o755)
    provider = SandboxProvider(tmp_path / "sbx", ffmpeg_exe=str(fake), **SMALL)  # type: ignore[arg-type]
    _, seen = await render(provider, photo_jpeg())
    final = seen[-1]
    assert final.state is TaskState.FAILED and final.fail_code == "500" and final.fail_msg
    assert final.fail_msg.startswith("ffmpeg failed:") and final.fail_msg.endswith("disk on fire")
    assert "noise 1" not in final.fail_msg and len(final.fail_msg) < 500


async def test_restart_reports_existing_result_and_lost_tasks(tmp_path: Path) -> None:
    first = SandboxProvider(tmp_path, **SMALL)  # type: ignore[arg-type]
    task_id, _ = await render(first, photo_jpeg())
    await first.aclose()

    second = SandboxProvider(tmp_path, **SMALL)  # type: ignore[arg-type]
    status = await second.poll(task_id, "sandbox", "sandbox")
    assert status.state is TaskState.SUCCESS
    assert status.result_urls == (f"sandbox://results/{task_id}.mp4",)

    lost = await second.poll("sbx_" + "ab" * 16, "sandbox", "sandbox")
    assert lost.state is TaskState.FAILED and lost.fail_code == "500"
    assert lost.fail_msg == "sandbox task lost (restart during render)"
    assert (await second.poll("../../etc/passwd", "sandbox", None)).state is TaskState.FAILED


async def test_aclose_kills_running_renders(tmp_path: Path) -> None:
    provider = SandboxProvider(tmp_path, max_concurrent_renders=1)
    url = await provider.upload_image(photo_jpeg(), "p.jpg")
    tasks = [await provider.submit(VideoRequest(prompt="Product video of x", image_url=url, model="m",
                                                duration_s=10)) for _ in range(2)]
    for _ in range(100):  # wait until ffmpeg is actually running
        if provider._procs:
            break
        await asyncio.sleep(0.05)
    procs = list(provider._procs)
    assert len(procs) == 1  # the semaphore holds the second render back
    started = time.monotonic()
    await provider.aclose()
    assert time.monotonic() - started < 3
    assert all(proc.returncode is not None for proc in procs) and not provider._procs
    for task in tasks:  # killed, not failed: a restarted bot resubmits them
        status = await provider.poll(task.task_id, "m", None)
        assert status.fail_msg == "sandbox task lost (restart during render)"
    assert not list((tmp_path / "results").iterdir())


async def test_submit_rejects_unknown_images(tmp_path: Path) -> None:
    provider = SandboxProvider(tmp_path, **SMALL)  # type: ignore[arg-type]
    with pytest.raises(ProviderError) as err:
        await provider.submit(VideoRequest(prompt="p", image_url="https://example.com/a.jpg", model="m"))
    assert err.value.code == 422
    with pytest.raises(ProviderError) as err:
        await provider.submit(VideoRequest(prompt="p", image_url="sandbox://uploads/" + "0" * 32 + ".jpg",
                                           model="m"))
    assert "failed to fetch the image" in err.value.message


async def test_upload_stores_bytes(tmp_path: Path) -> None:
    provider = SandboxProvider(tmp_path, **SMALL)  # type: ignore[arg-type]
    url = await provider.upload_image(b"abc", "p7.PNG")
    name = url.removeprefix("sandbox://uploads/")
    assert re.fullmatch(r"[0-9a-f]{32}\.png", name)
    assert (tmp_path / "uploads" / name).read_bytes() == b"abc"
    url = await provider.upload_image(b"abc", "../../evil")
    assert url.endswith(".jpg") and "/" not in url.removeprefix("sandbox://uploads/")


def test_caption_is_the_product_name() -> None:
    prompt = ("Lifestyle product video of Плед флисовый 🛋 серый 150x200 placed naturally in a cosy room. "
              "Slow dolly-in.")
    assert caption_from_prompt(prompt) == "Плед флисовый серый 150x200"
    assert caption_from_prompt("Product video of Кружка 350 мл. The product stands") == "Кружка 350 мл"
    assert caption_from_prompt("A mug on a table") == "A mug on a table"
    long = clip_caption("Очень длинное название товара для маркетплейса с деталями")
    assert len(long) <= 40 and long.endswith("…") and not long.endswith(" …")


def test_a_cyrillic_font_is_found() -> None:
    font, text = _pick_font(CYRILLIC, 40)
    assert text == CYRILLIC  # a font covering the text was found (or else it was transliterated)
    assert _covers(font, CYRILLIC)


def test_without_a_cyrillic_font_the_caption_is_transliterated(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    from neurocards.providers import sandbox

    monkeypatch.setattr(sandbox, "_font_files", lambda: ())
    font, text = _pick_font("Кружка «Утро»", 40)
    assert text == "Kruzhka «Utro»" and _covers(font, text)  # Pillow's default font is Latin only
    assert sandbox.render_caption("Кружка «Утро»", 144, tmp_path / "c.png") > 10
