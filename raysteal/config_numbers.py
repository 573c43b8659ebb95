"""Numbers in configs are numbers: ``true`` is not ``1``.

YAML reads ``true``/``false`` as booleans and pydantic's lax mode turns them into ``1``/``0`` for
an ``int`` or ``float`` field, so ``k: true`` or ``budget: yes`` would run as ``k = 1`` without a
word. Every config model derives from :class:`NumbersAreNotBooleans`, which refuses a boolean
for any field whose type admits numbers but not booleans (``int``, ``float | None``, ...), and
inside lists and mappings of such numbers (``list[int]``, ``dict[str, float] | None``).
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel, model_validator

from raysteal.errors import ConfigError, describe_validation


@cache
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


@cache
def _numeric_items(annotation: Any) -> bool:
    """True when ``annotation`` is (or optionally is) a list, tuple or mapping of numbers that are
    not booleans: its items (a mapping's values) are checked one by one."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _numeric_items(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_numeric_items(arg) for arg in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset) and args:
        return _numeric_not_boolean(args[0])
    if origin is dict and len(args) == 2:
        return _numeric_not_boolean(args[1])
    return False


def _boolean_item(value: Any) -> Any:
    """The first boolean among a list's items or a mapping's values (``None`` when there is none)."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return next((item for item in items if isinstance(item, bool)), None)


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
                if field is not None and _numeric_items(field.annotation) and _boolean_item(value) is not None:
                    raise ValueError(f"{name}: must hold numbers, got {str(_boolean_item(value)).lower()} among them")
        return data


_Model = typing.TypeVar("_Model", bound=BaseModel)


def validated_section(cls: type[_Model], config: Any, section: str, keys: str) -> _Model:
    """``config`` (a mapping, or already a ``cls``) validated into ``cls``; anything else, or a bad
    key or value, is a one-line ``ConfigError`` starting with ``section`` (``keys``: what the
    mapping holds, for the message)."""
    if isinstance(config, cls):
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"{section}: expected a mapping ({keys}), got {config!r}")
    try:
        return cls(**config)
    except Exception as err:  # pydantic.ValidationError names the key
        raise ConfigError(f"{section}: {describe_validation(err)}") from None
