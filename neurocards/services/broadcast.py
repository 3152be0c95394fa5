"""What an admin may broadcast: checked at the preview, so nothing is ever half-sent."""

from __future__ import annotations

import re
from enum import StrEnum

TEXT_LIMIT = 4096  # Telegram's limits, in characters after entity parsing
CAPTION_LIMIT = 1024
BUTTON_TEXT_LIMIT = 64
_BUTTON = re.compile(r"\s*(?P<text>[^|]{1,64}?)\s*\|\s*(?P<url>https?://[^\s|]{3,2000})\s*")


class DraftProblem(StrEnum):
    EMPTY = "empty"
    KIND = "kind"  # neither text, nor a photo, nor a video
    TEXT_TOO_LONG = "text_too_long"
    CAPTION_TOO_LONG = "caption_too_long"
    FILE_TOO_BIG = "file_too_big"


def check_draft(kind: str | None, plain_text: str, file_size: int | None, max_file_bytes: int) -> DraftProblem | None:
    """`kind`: text | photo | video, or None for anything else; `plain_text`: text or caption."""
    if kind is None:
        return DraftProblem.KIND
    if kind == "text":
        if not plain_text.strip():
            return DraftProblem.EMPTY
        return DraftProblem.TEXT_TOO_LONG if len(plain_text) > TEXT_LIMIT else None
    if len(plain_text) > CAPTION_LIMIT:
        return DraftProblem.CAPTION_TOO_LONG
    if file_size is not None and file_size > max_file_bytes:
        return DraftProblem.FILE_TOO_BIG
    return None


def parse_button(text: str) -> tuple[str, str] | None:
    """`Текст кнопки | https://…` → (text, url), or None."""
    match = _BUTTON.fullmatch(text or "")
    if match is None or not match["text"].strip():
        return None
    return match["text"].strip(), match["url"]
