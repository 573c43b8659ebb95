"""Options shared by the commands that run on Ray (``run``, ``tune``, ``simulate``): one spelling,
one help text, one check each; and the parser of repeated ``KEY=VALUE`` options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from raysteal.errors import ConfigError

Address = Annotated[str | None, typer.Option("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="datasets directory")]
CacheDir = Annotated[Path | None, typer.Option("--cache-dir", help="trained-target cache")]
NumCpus = Annotated[int | None, typer.Option("--num-cpus", min=1, help="CPUs for a local Ray runtime")]
MaxConcurrent = Annotated[int | None, typer.Option("--max-concurrent", min=1, help="runs executing at once (default: the cluster's CPUs)")]
Quiet = Annotated[bool, typer.Option("--quiet", help="no progress display")]


def path_text(path: Path | None) -> str | None:
    """An optional path option as the string the runners take (None stays None)."""
    return str(path) if path else None


def key_values(pairs: list[str], option: str, yaml_values: bool) -> dict[str, Any]:
    """Repeated ``option KEY=VALUE`` arguments as a mapping; values parsed as YAML when
    ``yaml_values`` (``--set lr=3e-3``), else kept as text (``--column user=007``)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} expects key=value, got {pair!r}")
        if not yaml_values:
            out[key.strip()] = raw
            continue
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"{option} {pair}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
    return out
