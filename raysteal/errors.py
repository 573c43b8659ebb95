"""Exceptions every layer raises, so callers (the CLI above all) can report them cleanly."""

from __future__ import annotations

from typing import Any


class RaystealError(Exception):
    """Base class: an error caused by the user's input or environment, reported without a traceback."""


class UnknownNameError(RaystealError, KeyError):
    """A name (dataset, model, attack, defense, ...) that no registry knows."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]

    def __reduce__(self):  # picklable with its own arguments (a Ray task re-raises it on the driver)
        return (type(self), (self.kind, self.name, self.known))


class DataFileError(RaystealError):
    """A dataset file that is missing or malformed (the message names file and line)."""


class ConfigError(RaystealError, ValueError):
    """An invalid configuration value (the message names the key)."""


def describe_validation(err: Exception, unknown: str = "unknown key") -> str:
    """A pydantic ``ValidationError`` as one line, ``key: problem; key: unknown key`` (any other
    exception: its text), for error messages that name the key without a multi-line dump;
    ``unknown`` words the problem of a key the model does not have."""
    errors = getattr(err, "errors", None)
    if not callable(errors):
        return str(err)
    parts = []
    items: Any = errors()  # pydantic's list of error dicts
    for item in items:
        key = ".".join(str(p) for p in item.get("loc", ()))
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden":
            parts.append(f"{key}: {unknown}")
        else:  # a model-level check names its keys itself
            parts.append(f"{key}: {message}" if key else message)
    return "; ".join(parts) or str(err)
