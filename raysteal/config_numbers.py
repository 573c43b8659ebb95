"""Numbers in configs are numbers: ``true`` is not ``1``.

YAML reads ``true``/``false`` as booleans and pydantic's lax mode turns them into ``1``/``0`` for
an ``int`` or ``float`` field, so ``k: true`` or ``budget: yes`` would run as ``k = 1`` without a
word. Every config model derives from :class:`NumbersAreNotBooleans`, which refuses a boolean
for any field whose type admits numbers but not booleans (``int``, ``float | None``, ...).
"""

from __future__ import annotations

import types
import typing
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, model_validator


@lru_cache(maxsize=None)
def _numeric_not_boolean(annotation: Any) -> bool:
    """True when ``annotation`` admits int or float and not bool (unions and ``Annotated`` looked through)."""
    seen: set[Any] = set()

    def walk(tp: Any) -> None:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            walk(typing.get_args(tp)[0])
        elif origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(tp):
                walk(arg)
        else:
            seen.add(tp)

    walk(annotation)
    return bool(seen & {int, float}) and not seen & {bool, Any}


class NumbersAreNotBooleans(BaseModel):
    """Base for config models: a boolean given for a numeric field is an error, not 0 or 1."""

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and field is not None and _numeric_not_boolean(field.annotation):
                    raise ValueError(f"{name}: must be a number, got {str(value).lower()}")
        return data
