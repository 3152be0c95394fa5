"""The shape of a video (9:16, 3:4, 1:1, 16:9): what a model is given and what the seller gets.

A model that cannot make the chosen shape makes the nearest one it can (Veo: 16:9 or 9:16); a
model without a shape field keeps the photo's. So the photo is first given the shape the model
will make (fitted over a blurred copy of itself, never cut), and the finished video is then
centre-cropped to the chosen shape, or padded when a crop would lose more than half the frame.
Whatever the model did, the seller gets the shape they chose.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
from pathlib import Path

from PIL import Image

from neurocards.config import FORMATS
from neurocards.providers.base import VideoProvider
from neurocards.providers.video_tools import compress_to_fit, mp4_video_size, reshape

log = logging.getLogger("neurocards.formats")

__all__ = ["FORMATS", "fit_video", "model_aspect", "photo_in_shape", "ratio", "target_frame"]

PHOTO_LONG_SIDE = 2048  # plenty for a 1080p video, far under KIE's 10 MB as a JPEG
SAME_SHAPE = 0.01  # log-ratio tolerance: encoders round sides to even numbers
MIN_KEPT_BY_CROP = 0.5


def model_aspect(backend: VideoProvider, model: str, wanted: str) -> str:
    """The shape `backend`'s `model` will make for a video wanted in `wanted`."""
    return backend.output_aspect(model, wanted)


def ratio(aspect: str) -> float:
    w, h = (float(x) for x in aspect.split(":"))
    return w / h


def _same_shape(width: int, height: int, aspect: str) -> bool:
    return abs(math.log(width / height) - math.log(ratio(aspect))) < SAME_SHAPE


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def photo_in_shape(data: bytes, aspect: str) -> bytes | None:
    """The photo as a JPEG of shape `aspect`, the whole product visible; None when it already is."""
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
    if _same_shape(width, height, aspect):
        return None
    long = min(max(width, height), PHOTO_LONG_SIDE)
    r = ratio(aspect)
    size = (long, _even(long / r)) if r >= 1 else (_even(long * r), long)
    from neurocards.providers.sandbox import (
        compose_image,  # Pillow's drawing modules: only when used
    )

    out = io.BytesIO()
    compose_image(io.BytesIO(data), *size).save(out, "JPEG", quality=92)
    return out.getvalue()


def target_frame(width: int, height: int, aspect: str) -> tuple[int, int, bool]:
    """(width, height, pad) of the video in shape `aspect` made from a width x height one."""
    r = ratio(aspect)
    crop_w, crop_h = (height * r, height) if width / height > r else (width, width / r)
    if crop_w * crop_h / (width * height) >= MIN_KEPT_BY_CROP:
        return _even(crop_w), _even(crop_h), False
    long = max(width, height)
    return (long, _even(long / r), True) if r >= 1 else (_even(long * r), long, True)


async def fit_video(path: Path, aspect: str, max_bytes: int) -> str | None:
    """Give the video at `path` the shape `aspect` and at most `max_bytes`, in place.

    Returns what was done (for the job's events), or None when nothing was needed. A file ffmpeg
    cannot read is left alone: delivery decides what to do with it."""
    # The MP4's own header first: most results already have the shape and need no ffmpeg at all.
    size = await asyncio.to_thread(mp4_video_size, path)
    if size is None:
        log.warning("%s: no MP4 video header, left as it is", path.name)
        return None
    done: list[str] = []
    if not _same_shape(*size, aspect):
        width, height, pad = target_frame(*size, aspect)
        if not await reshape(path, path.with_name(path.stem + ".shaped.mp4"), width, height, pad=pad):
            return None
        await asyncio.to_thread(path.with_name(path.stem + ".shaped.mp4").replace, path)
        done.append(f"{'padded' if pad else 'cropped'} {size[0]}x{size[1]} to {width}x{height}")
    if path.stat().st_size > max_bytes:
        smaller = path.with_name(path.stem + ".capped.mp4")
        new_size = await compress_to_fit(path, smaller, max_bytes)
        if new_size is not None:
            await asyncio.to_thread(smaller.replace, path)
            done.append(f"re-encoded to {new_size} bytes")
    return "; ".join(done) or None
