"""The aiogram speed-ups in neurocards.speedups keep aiogram's behaviour and their gains, are
installed only when asked, and stand down when pydantic's private signatures change."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

from aiogram.methods.base import Response
from aiogram.types import Message
from pydantic import BaseModel

from neurocards import speedups

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
    assert speedups.install()
    first = _parse_once()
    gc.collect()
    assert first() is not None
    assert Response[Message] is first()
    assert Response[bool].model_validate({"ok": True, "result": True}).result is True


def test_installing_twice_is_harmless() -> None:
    assert speedups.install() and speedups.install()
    assert Response[list[int]] is Response[list[int]]


def test_the_signature_check_names_what_changed() -> None:
    assert speedups.unsupported(BaseModel.model_rebuild, BaseModel.__class_getitem__) == ""

    def rebuild(*, force: bool = False, raise_errors: bool = True) -> None: ...

    assert "_types_namespace" in speedups.unsupported(rebuild, BaseModel.__class_getitem__)


IMPORT_ONLY = """
import logging, sys
from pydantic import BaseModel
stock_rebuild, stock_getitem = BaseModel.model_rebuild, BaseModel.__dict__["__class_getitem__"]
import neurocards, neurocards.app  # imports aiogram and every module of the bot
from aiogram.methods.base import Response
assert BaseModel.model_rebuild == stock_rebuild, "importing neurocards patched pydantic"
assert "__class_getitem__" not in Response.__dict__, "importing neurocards patched aiogram"

logging.basicConfig(stream=sys.stdout, format="%(message)s")
def changed_rebuild(cls, *, force=False): return None
BaseModel.model_rebuild = classmethod(changed_rebuild)
from neurocards import speedups
assert speedups.install() is False
assert BaseModel.model_rebuild.__func__ is changed_rebuild and "__class_getitem__" not in Response.__dict__
"""


def test_importing_neurocards_patches_nothing_and_a_changed_pydantic_is_left_alone() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_ONLY], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert "speed-ups off" in line and "_types_namespace" in line
