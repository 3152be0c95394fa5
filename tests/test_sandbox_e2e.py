"""`--sandbox`: the whole bot with only a Telegram token; real MP4 files through the real delivery path."""

from __future__ import annotations

import imageio_ffmpeg

from tests.harness import Harness, launch, videos


async def test_sandbox_makes_a_real_video_from_the_photo(harness: Harness) -> None:
    harness.overrides = {"kie": {"api_keys": []}, "generation": {"sandbox": True}}
    await harness.start()
    user = harness.tg.user(8001)
    await launch(user, description="Синяя керамическая ваза")
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=90)
    await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    data = videos(user)[0].media
    assert data is not None and data[4:8] == b"ftyp" and len(data) > 10_000
    path = harness.tmp / "got.mp4"
    path.write_bytes(data)
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert 5 <= seconds <= 10 and frames > 50
    assert harness.kie.count("veoGenerate") == 0 and harness.kie.count("upload") == 0
    assert harness.balance(8001) == 20
