"""Accepting a product photo: check it is a usable image, keep it on disk, record the product."""

from __future__ import annotations

import asyncio
import io
import uuid
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image, UnidentifiedImageError

from neurocards.config import Config
from neurocards.store.users import ProductStore

ACCEPTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
MIN_SIDE_PX = 256
MAX_PHOTO_BYTES = 20 * 1024 * 1024  # what getFile can hand over on the cloud Bot API
MAX_DESCRIPTION_CHARS = 500


class PhotoProblem(StrEnum):
    NOT_AN_IMAGE = "not_an_image"
    FORMAT = "format"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"


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
    if len(data) > MAX_PHOTO_BYTES:
        raise PhotoRejected(PhotoProblem.TOO_LARGE)
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            width, height = img.size
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise PhotoRejected(PhotoProblem.NOT_AN_IMAGE) from None
    if fmt not in ACCEPTED_FORMATS:
        raise PhotoRejected(PhotoProblem.FORMAT)
    if min(width, height) < MIN_SIDE_PX:
        raise PhotoRejected(PhotoProblem.TOO_SMALL)
    return CheckedPhoto(ACCEPTED_FORMATS[fmt], width, height)


async def save_product_photo(config: Config, products: ProductStore, user_id: int, file_id: str,
                             data: bytes) -> int:
    """Check and store the photo; returns the new product id. Raises PhotoRejected."""
    checked = await asyncio.to_thread(check_photo, data)
    folder = config.storage.photos_dir
    path = folder / f"{user_id}_{uuid.uuid4().hex}{checked.extension}"

    def write() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    await asyncio.to_thread(write)
    return await products.create(user_id, file_id, str(path))
