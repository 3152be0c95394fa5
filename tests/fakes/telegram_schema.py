"""Request decoding and schema validation for the fake Bot API.

The only machine-readable Bot API schema we have is aiogram's own method models
(``aiogram.methods.*``), so every incoming call is checked against the model whose
``__api_method__`` matches the URL: unknown parameters, missing required ones and
type errors are rejected the way the real server rejects a malformed request.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

import aiogram.methods
from aiogram.methods.base import TelegramMethod
from aiogram.types import BufferedInputFile
from aiohttp import BodyPartReader, web
from pydantic import ValidationError

ATTACH_PREFIX = "attach://"


class ApiError(Exception):
    """An error answer of the Bot API: HTTP status plus ``description``.

    ``expected`` marks errors the *test* provoked on purpose (e.g. a user who blocked
    the bot), so they are not reported as bot bugs by ``assert_no_rejections``.
    """

    def __init__(
        self,
        status: int,
        description: str,
        *,
        retry_after: int | None = None,
        expected: bool = False,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.expected = expected

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(message: str) -> ApiError:
    return ApiError(400, f"Bad Request: {message}")


@dataclass(frozen=True)
class UploadedFile:
    """One multipart part that carried a file (``filename`` was set)."""

    name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RawRequest:
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    # Set when the uploaded files exceed the size limit; the body was drained (so the
    # client sees a clean HTTP answer instead of a reset) but not stored.
    too_large: bool = False


@cache
def _method_registry() -> dict[str, type[TelegramMethod[Any]]]:
    registry: dict[str, type[TelegramMethod[Any]]] = {}
    for obj in vars(aiogram.methods).values():
        if inspect.isclass(obj) and issubclass(obj, TelegramMethod) and obj is not TelegramMethod:
            registry[obj.__api_method__.lower()] = obj
    return registry


def find_method(name: str) -> type[TelegramMethod[Any]] | None:
    """The aiogram model for an API method name; the real API ignores case."""
    return _method_registry().get(name.lower())


async def read_request(request: web.Request, max_upload_bytes: int) -> RawRequest:
    """Decode parameters from the query string and any supported body encoding."""
    raw = RawRequest(params=dict(request.query))
    ctype = request.content_type
    if ctype == "multipart/form-data":
        await _read_multipart(request, raw, max_upload_bytes)
    elif ctype == "application/json":
        body = await request.read()
        if body:
            try:
                decoded = json.loads(body)
            except ValueError as exc:
                raise bad_request("can't parse JSON object") from exc
            if not isinstance(decoded, dict):
                raise bad_request("JSON object expected")
            raw.params.update(decoded)
    elif request.can_read_body:
        body = await request.read()
        if len(body) > max_upload_bytes:
            raw.too_large = True
        raw.params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return raw


async def _read_multipart(request: web.Request, raw: RawRequest, limit: int) -> None:
    reader = await request.multipart()
    total = 0
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue  # nested multipart: the Bot API does not use it
        name = part.name or ""
        if part.filename is None:
            raw.params[name] = await part.text()
            continue
        chunks: list[bytes] = []
        while chunk := await part.read_chunk(1 << 16):
            total += len(chunk)
            if total <= limit:
                chunks.append(chunk)
        if total > limit:
            raw.too_large = True
            continue
        raw.files[name] = UploadedFile(
            name=name,
            filename=part.filename,
            content_type=part.headers.get("Content-Type", "application/octet-stream"),
            data=b"".join(chunks),
        )


# Friendlier wording for the parameters whose absence the real API words specially.
_MISSING_MESSAGES = {
    "text": "message text is empty",
    "chat_id": "chat_id is empty",
    "photo": "there is no photo in the request",
    "video": "there is no video in the request",
    "document": "there is no document in the request",
    "animation": "there is no animation in the request",
}


def _accepts_str(annotation: Any) -> bool:
    """Whether a field type admits a plain string (then a string value is not JSON)."""
    if annotation is str or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_str(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return any(isinstance(arg, str) for arg in typing.get_args(annotation))
    return False


def prepare_params(cls: type[TelegramMethod[Any]], raw: RawRequest) -> dict[str, Any]:
    """Check parameter names and JSON-decode the non-string ones sent as form strings."""
    fields = cls.model_fields
    params = dict(raw.params)
    # A file part named after a parameter is the classic (non attach://) upload form.
    for name in raw.files:
        if name in fields and name not in params:
            params[name] = ATTACH_PREFIX + name
    for name in params:
        if name not in fields:
            raise bad_request(f'unknown parameter "{name}" for method {cls.__api_method__}')
    for name, info in fields.items():
        if info.is_required() and params.get(name) in (None, ""):
            raise bad_request(_MISSING_MESSAGES.get(name, f'parameter "{name}" is required'))
    for name, value in list(params.items()):
        if isinstance(value, str) and not _accepts_str(fields[name].annotation):
            try:
                params[name] = json.loads(value)
            except ValueError:
                pass  # leave it to pydantic, which explains what was expected
    return params


def _with_attachments(value: Any, files: dict[str, UploadedFile]) -> Any:
    """Replace ``attach://name`` references by InputFile objects so InputFile-only
    fields (e.g. ``thumbnail``) validate exactly like aiogram built them."""
    if isinstance(value, str) and value.startswith(ATTACH_PREFIX):
        name = value[len(ATTACH_PREFIX) :]
        if name not in files:
            raise bad_request(f'file "{value}" is not found in the request')
        upload = files[name]
        return BufferedInputFile(upload.data, filename=upload.filename)
    if isinstance(value, dict):
        return {k: _with_attachments(v, files) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_attachments(v, files) for v in value]
    return value


def validate_model(
    cls: type[TelegramMethod[Any]], params: dict[str, Any], files: dict[str, UploadedFile]
) -> TelegramMethod[Any]:
    try:
        return cls.model_validate(_with_attachments(params, files))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise bad_request(f"invalid parameter {loc}: {first['msg']}") from exc
