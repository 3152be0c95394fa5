"""Two patches of aiogram's use of pydantic that bench/ measured as worth it. Nothing here runs
on import: `install()` is called by the CLI (before aiogram is imported) and by the test suite.

1. aiogram.types calls model_rebuild() on all ~440 Telegram types at import, which builds every
   pydantic validator/serializer (~130 MB RSS, seconds of CPU). `install()` makes aiogram's models
   remember the namespace instead and build the first time they are used: the bot's RSS with 1,000
   jobs in flight is ~116 MB instead of ~295 MB, start-up ~2 s instead of ~6 s.
2. aiogram's session writes ``Response[method.__returning__]`` for every answer it parses.
   pydantic keeps parametrized generics only in a WeakValueDictionary, so once the garbage
   collector frees one, the next answer creates the class again and builds its validator (a
   ``Response[Message]`` takes milliseconds; ~20 % of the bot's CPU at 200 updates/s). Keeping
   every parametrization alive makes the lookup a dict hit; there are only as many as Bot API
   return types.

Both rely on private parts of pydantic (the keywords of ``BaseModel.model_rebuild`` and
``BaseModel.__class_getitem__``). `install()` checks they are there and otherwise logs one line and
changes nothing: the bot then works as stock aiogram does, only slower and larger. pyproject.toml
bounds aiogram and pydantic at the minor versions this was measured with.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

log = logging.getLogger("neurocards")

REBUILD_KEYWORDS = ("force", "raise_errors", "_parent_namespace_depth", "_types_namespace")

_original_rebuild: Any = None
_namespace: dict[str, Any] = {}
_response_types: dict[tuple[type, Any], type[BaseModel]] = {}
_original_class_getitem: Any = None


def install() -> bool:
    """Patches pydantic for aiogram's models (idempotent); returns whether the speed-ups are on."""
    if _original_rebuild is not None:
        return True
    problem = unsupported(BaseModel.model_rebuild, BaseModel.__class_getitem__)
    if problem:
        log.warning("aiogram speed-ups off (pydantic changed: %s); running unpatched", problem)
        return False
    _build_models_lazily()
    _keep_response_types()
    return True


def unsupported(model_rebuild: Callable[..., Any], class_getitem: Callable[..., Any]) -> str:
    """Why the private signatures the patches rely on do not fit, or "" when they do."""
    try:
        rebuild = inspect.signature(model_rebuild).parameters
        getitem = list(inspect.signature(class_getitem).parameters)
    except (TypeError, ValueError) as exc:
        return f"no signature: {exc}"
    missing = [name for name in REBUILD_KEYWORDS if name not in rebuild]
    if missing:
        return f"model_rebuild() has no {', '.join(missing)}"
    if len(getitem) != 1:
        return f"__class_getitem__ takes {getitem}"
    return ""


def _build_models_lazily() -> None:
    global _original_rebuild
    _original_rebuild = BaseModel.model_rebuild.__func__  # type: ignore[attr-defined]
    BaseModel.model_rebuild = classmethod(_lazy_rebuild)  # type: ignore[method-assign,assignment]


def _lazy_rebuild(cls: type[BaseModel], *, force: bool = False, raise_errors: bool = True,
                  _parent_namespace_depth: int = 2, _types_namespace: Any = None) -> bool | None:
    if (cls.__module__ or "").startswith("aiogram."):
        if _types_namespace is not None and not force and not cls.__pydantic_complete__:
            _namespace.update(_types_namespace)
            return None
        if _types_namespace is None and _namespace:
            _types_namespace = _namespace
    return _original_rebuild(cls, force=force, raise_errors=raise_errors,  # type: ignore[no-any-return]
                             _parent_namespace_depth=_parent_namespace_depth + 1,
                             _types_namespace=_types_namespace)


def _keep_response_types() -> None:
    global _original_class_getitem
    if _original_class_getitem is not None:
        return
    from aiogram.methods.base import Response

    _original_class_getitem = Response.__class_getitem__.__func__  # type: ignore[attr-defined]
    Response.__class_getitem__ = classmethod(_response_of)  # type: ignore[assignment,method-assign]


def _response_of(cls: type[BaseModel], item: Any) -> type[BaseModel]:
    key = (cls, item)
    try:
        return _response_types[key]
    except KeyError:
        parametrized = _response_types[key] = _original_class_getitem(cls, item)
        return parametrized
    except TypeError:  # an unhashable parameter: pydantic's own path, uncached
        return _original_class_getitem(cls, item)  # type: ignore[no-any-return]
