"""Exceptions every layer raises, so callers (the CLI above all) can report them cleanly."""

from __future__ import annotations


class RaystealError(Exception):
    """Base class: an error caused by the user's input or environment, reported without a traceback."""


class UnknownNameError(RaystealError, KeyError):
    """A name (dataset, model, attack, defense, ...) that no registry knows."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DataFileError(RaystealError):
    """A dataset file that is missing or malformed (the message names file and line)."""


class ConfigError(RaystealError, ValueError):
    """An invalid configuration value (the message names the key)."""
