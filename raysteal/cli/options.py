"""Options shared by the commands that run on Ray (``run``, ``tune``, ``simulate``): one spelling,
one help text, one check each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Address = Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="datasets directory")]
CacheDir = Annotated[Optional[Path], typer.Option("--cache-dir", help="trained-target cache")]
NumCpus = Annotated[Optional[int], typer.Option("--num-cpus", min=1, help="CPUs for a local Ray runtime")]


def path_text(path: Optional[Path]) -> Optional[str]:
    """An optional path option as the string the runners take (None stays None)."""
    return str(path) if path else None
