"""Media handling: uploads, file_id reuse, photo sizes and file metadata."""

from __future__ import annotations

import io
import mimetypes
import struct
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .telegram_schema import ATTACH_PREFIX, ApiError, UploadedFile, bad_request
from .telegram_state import FileRecord, TelegramState

PHOTO_SIDES = (90, 320, 800, 1280)  # the thumbnail ladder Telegram generates
DEFAULT_VIDEO = {"width": 720, "height": 1280, "duration": 0}


@dataclass(frozen=True)
class ResolvedMedia:
    kind: str
    media: Any  # the Bot API object (a list of PhotoSize for photos)
    data: bytes
    file_id: str  # for photos: the largest size


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - any undecodable payload just gets defaults
        return None


def _thumbnail(data: bytes, side: int) -> tuple[bytes, int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.save(out, format="JPEG")
        return out.getvalue(), image.width, image.height


def store_photo(state: TelegramState, data: bytes) -> list[FileRecord]:
    """Photo sizes like Telegram's: thumbnails up to the original, which is kept
    byte-exact as the largest size so tests can compare downloads with uploads."""
    size = _image_size(data)
    sizes: list[FileRecord] = []
    if size is not None:
        for side in PHOTO_SIDES:
            if side < max(size):
                thumb, width, height = _thumbnail(data, side)
                meta = {"width": width, "height": height}
                sizes.append(state.store_file("photo", thumb, meta, "jpg"))
    width, height = size or (1280, 1280)
    sizes.append(state.store_file("photo", data, {"width": width, "height": height}, "jpg"))
    for record in sizes:
        state.photo_sets[record.file_id] = sizes
    return sizes


def _mp4_info(data: bytes) -> dict[str, int]:
    """Width/height/duration from the moov box of an MP4, when there is one."""
    info: dict[str, int] = {}

    def walk(start: int, end: int) -> None:
        pos = start
        while pos + 8 <= end:
            size, box = struct.unpack(">I4s", data[pos : pos + 8])
            header = 8
            if size == 1 and pos + 16 <= end:
                size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
            elif size == 0:
                size = end - pos
            if size < header:
                return
            body = pos + header
            if box in (b"moov", b"trak"):
                walk(body, pos + size)
            elif box == b"mvhd" and "duration" not in info:
                version = data[body]
                fmt, off = (">IQ", body + 20) if version == 1 else (">II", body + 12)
                timescale, duration = struct.unpack(fmt, data[off : off + struct.calcsize(fmt)])
                if timescale:
                    info["duration"] = round(duration / timescale)
            elif box == b"tkhd" and "width" not in info:
                width, height = struct.unpack(">II", data[pos + size - 8 : pos + size])
                if width and height:
                    info.update(width=width >> 16, height=height >> 16)
            pos += size

    try:
        walk(0, len(data))
    except (struct.error, IndexError):
        pass
    return info


def store_upload(
    state: TelegramState, kind: str, upload: UploadedFile, params: dict[str, Any]
) -> list[FileRecord]:
    if not upload.data:
        raise bad_request("file must be non-empty")
    if kind == "photo":
        return store_photo(state, upload.data)
    suffix = PurePosixPath(upload.filename).suffix.lstrip(".")
    mime = upload.content_type
    if mime in ("", "application/octet-stream"):
        mime = mimetypes.guess_type(upload.filename)[0] or mime or "application/octet-stream"
    meta: dict[str, Any] = {"file_name": upload.filename, "mime_type": mime}
    if kind in ("video", "animation"):
        meta.update(DEFAULT_VIDEO)
        meta.update(_mp4_info(upload.data))
        meta.update({k: params[k] for k in ("width", "height", "duration") if params.get(k)})
        if mime == "application/octet-stream":
            meta["mime_type"] = "video/mp4"
    return [state.store_file(kind, upload.data, meta, suffix or "bin")]


def resolve_media(
    state: TelegramState,
    kind: str,
    value: Any,
    files: dict[str, UploadedFile],
    params: dict[str, Any],
) -> ResolvedMedia:
    """Turn an InputFile-or-string parameter into stored media, as the server does."""
    if not isinstance(value, str) or not value:
        raise bad_request(f"there is no {kind} in the request")
    if value.startswith(ATTACH_PREFIX):
        records = store_upload(state, kind, files[value[len(ATTACH_PREFIX) :]], params)
    elif value.startswith(("http://", "https://")):
        if value not in state.url_contents:
            raise bad_request("failed to get HTTP URL content")
        data, mime = state.url_contents[value]
        name = PurePosixPath(urlsplit(value).path).name or "file"
        records = store_upload(state, kind, UploadedFile(kind, name, mime, data), params)
    else:
        record = state.files.get(value)
        if record is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        if (record.kind == "photo") != (kind == "photo"):
            raise bad_request("type of file mismatch")
        records = state.photo_sets.get(value, [record])
        kind = record.kind  # a re-sent file keeps its original media type
    largest = records[-1]
    media = [r.as_media() for r in records] if kind == "photo" else largest.as_media()
    return ResolvedMedia(kind=kind, media=media, data=largest.data, file_id=largest.file_id)


def file_object(state: TelegramState, file_id: Any) -> dict[str, Any]:
    """The File object getFile returns; files over 20 MB can't be downloaded by bots."""
    record = state.files.get(str(file_id))
    if record is None:
        raise bad_request("invalid file_id")
    if len(record.data) > 20 * 1024 * 1024:
        raise bad_request("file is too big")
    return {**_ids(record), "file_size": len(record.data), "file_path": record.file_path}


def _ids(record: FileRecord) -> dict[str, Any]:
    return {"file_id": record.file_id, "file_unique_id": record.file_unique_id}


def too_large() -> ApiError:
    return ApiError(413, "Request Entity Too Large")
