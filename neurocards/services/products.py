"""Accepting a product photo: check it is a usable image, keep it on disk, record the product."""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image, ImageOps, UnidentifiedImageError

from neurocards.config import Config
from neurocards.store.users import ProductStore

ACCEPTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
MIN_SIDE_PX = 256
MAX_PHOTO_BYTES = 20 * 1024 * 1024  # what getFile can hand over on the cloud Bot API
MAX_DESCRIPTION_CHARS = 500
# Read from the header before anything is decoded: a 50 MP camera shot passes, a 20000 x 20000
# "decompression bomb" (1.2 GB once decoded) never reaches the decoder.
MAX_PIXELS = 50_000_000
# KIE refuses image_urls over 10 MB (api-notes §1); bigger photos are re-encoded before upload.
PROVIDER_MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_PREPARED_SIDE = 4096
_CHECK_SIDE = 1024  # JPEG: checking every byte decodes at 1/8 scale, much cheaper than full size
# A full decode of a large PNG holds up to ~200 MB: two at a time at most.
_DECODES = threading.BoundedSemaphore(2)


class PhotoProblem(StrEnum):
    NOT_AN_IMAGE = "not_an_image"
    FORMAT = "format"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    ANIMATED = "animated"
    DAMAGED = "damaged"


class PhotoRejected(Exception):
    def __init__(self, problem: PhotoProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


@dataclass(frozen=True)
class CheckedPhoto:
    extension: str
    width: int
    height: int


def check_photo(data: bytes) -> CheckedPhoto:
    """A photo the video models can use: a still JPEG/PNG/WebP whose pixels really are there."""
    if len(data) > MAX_PHOTO_BYTES:
        raise PhotoRejected(PhotoProblem.TOO_LARGE)
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            width, height = img.size
            animated = bool(getattr(img, "is_animated", False))
    except Image.DecompressionBombError:  # Pillow's own guard, far above MAX_PIXELS
        raise PhotoRejected(PhotoProblem.TOO_MANY_PIXELS) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise PhotoRejected(PhotoProblem.NOT_AN_IMAGE) from None
    if animated:
        raise PhotoRejected(PhotoProblem.ANIMATED)
    if fmt not in ACCEPTED_FORMATS:
        raise PhotoRejected(PhotoProblem.FORMAT)
    if width * height > MAX_PIXELS:
        raise PhotoRejected(PhotoProblem.TOO_MANY_PIXELS)
    if min(width, height) < MIN_SIDE_PX:
        raise PhotoRejected(PhotoProblem.TOO_SMALL)
    _decode_fully(data)
    return CheckedPhoto(ACCEPTED_FORMATS[fmt], width, height)


def _decode_fully(data: bytes) -> None:
    """The header's size is a claim: decode the whole image so truncated or lying files fail here,
    not at the provider after the seller was charged."""
    with _DECODES:
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.draft("RGB", (_CHECK_SIDE, _CHECK_SIDE))  # JPEG only; others decode at full size
                img.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            raise PhotoRejected(PhotoProblem.DAMAGED) from None


def prepare_for_provider(data: bytes, max_bytes: int = PROVIDER_MAX_IMAGE_BYTES) -> tuple[bytes, str]:
    """The photo as a provider accepts it: unchanged when small enough, else a JPEG under
    `max_bytes` (turned upright, at most MAX_PREPARED_SIDE px, smaller until it fits).
    Returns (bytes, extension)."""
    if len(data) <= max_bytes:
        with Image.open(io.BytesIO(data)) as img:
            return data, ACCEPTED_FORMATS.get(img.format or "", ".jpg")
    with _DECODES, Image.open(io.BytesIO(data)) as src:
        img = ImageOps.exif_transpose(src)
        if "A" in img.getbands() or "transparency" in img.info:  # cut-out products: on white
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        img = img.convert("RGB")
    side, quality = MAX_PREPARED_SIDE, 90
    while True:
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= max_bytes or side <= MIN_SIDE_PX:
            return out.getvalue(), ".jpg"
        side, quality = int(side * 0.8), max(70, quality - 5)


async def save_product_photo(config: Config, products: ProductStore, user_id: int, file_id: str,
                             data: bytes) -> int:
    """Check and store the photo; returns the new product id. Raises PhotoRejected."""
    await asyncio.to_thread(check_photo, data)
    # Stored as the providers will get it, so an oversized photo is never charged and then refused.
    data, extension = await asyncio.to_thread(prepare_for_provider, data)
    folder = config.storage.photos_dir
    path = folder / f"{user_id}_{uuid.uuid4().hex}{extension}"

    def write() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    await asyncio.to_thread(write)
    return await products.create(user_id, file_id, str(path))
