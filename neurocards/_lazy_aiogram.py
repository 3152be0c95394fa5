"""aiogram.types calls model_rebuild() on all ~440 Telegram types at import, which builds
every pydantic validator/serializer (~130 MB RSS, seconds of CPU). Remember the namespace instead
and let pydantic build a model the first time it is used.

Measured by bench/: the bot's RSS with 1,000 jobs in flight fell from ~295 MB to ~116 MB and the
start-up from ~6 s to ~2 s. Only aiogram's own models are affected; the full test suite (which
parses every kind of update and answer the bot uses through real HTTP) runs with it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_original = BaseModel.model_rebuild.__func__  # type: ignore[attr-defined]
_namespace: dict[str, Any] = {}


def _lazy_rebuild(cls: type[BaseModel], *, force: bool = False, raise_errors: bool = True,
                  _parent_namespace_depth: int = 2, _types_namespace: Any = None) -> bool | None:
    if (cls.__module__ or "").startswith("aiogram."):
        if _types_namespace is not None and not force and not cls.__pydantic_complete__:
            _namespace.update(_types_namespace)
            return None
        if _types_namespace is None and _namespace:
            _types_namespace = _namespace
    return _original(cls, force=force, raise_errors=raise_errors,
                     _parent_namespace_depth=_parent_namespace_depth + 1, _types_namespace=_types_namespace)


BaseModel.model_rebuild = classmethod(_lazy_rebuild)  # type: ignore[method-assign,assignment]


_response_types: dict[tuple[type, Any], type[BaseModel]] = {}
_class_getitem: Any = None


def keep_response_types() -> None:
    """aiogram's session writes ``Response[method.__returning__]`` for every answer it parses.
    pydantic keeps parametrized generics only in a WeakValueDictionary, so once the garbage
    collector frees one, the next answer creates the class again and builds its validator (a
    ``Response[Message]`` takes milliseconds). bench/ caught this as ~20 % of the bot's CPU at 200
    updates/s. Keeping every parametrization alive makes the lookup a dict hit; there are only as
    many as Bot API return types."""
    global _class_getitem
    from aiogram.methods.base import Response

    if _class_getitem is None:
        _class_getitem = Response.__class_getitem__.__func__  # type: ignore[attr-defined]
        Response.__class_getitem__ = classmethod(_response_of)  # type: ignore[assignment,method-assign]


def _response_of(cls: type[BaseModel], item: Any) -> type[BaseModel]:
    key = (cls, item)
    try:
        return _response_types[key]
    except KeyError:
        parametrized = _response_types[key] = _class_getitem(cls, item)
        return parametrized
    except TypeError:  # an unhashable parameter: pydantic's own path, uncached
        return _class_getitem(cls, item)  # type: ignore[no-any-return]
