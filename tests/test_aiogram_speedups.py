"""The aiogram speed-ups in neurocards._lazy_aiogram keep aiogram's behaviour and their gains."""

from __future__ import annotations

import gc
import weakref

from aiogram.methods.base import Response
from aiogram.types import Message

from neurocards._lazy_aiogram import keep_response_types

ANSWER = {"ok": True, "result": {"message_id": 7, "date": 0, "chat": {"id": 1, "type": "private"},
                                 "text": "Меню"}}


def _parse_once() -> weakref.ref[type]:
    response_type = Response[Message]
    parsed = response_type.model_validate(ANSWER)
    assert parsed.result.message_id == 7 and parsed.result.text == "Меню"
    return weakref.ref(response_type)


def test_parsed_answer_types_survive_garbage_collection() -> None:
    # Without the strong cache a collected Response[Message] is rebuilt (validator and all) on the
    # next answer: milliseconds of CPU per answer under load.
    keep_response_types()
    first = _parse_once()
    gc.collect()
    assert first() is not None
    assert Response[Message] is first()
    assert Response[bool].model_validate({"ok": True, "result": True}).result is True


def test_keeping_response_types_is_idempotent() -> None:
    keep_response_types()
    keep_response_types()
    assert Response[list[int]] is Response[list[int]]
