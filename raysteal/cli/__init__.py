"""The ``raysteal`` command line (Typer). Each command group lives in its own module.

Every command imports what it runs inside its own function, not at the top of its module: the
package is loaded for any command (and for ``raysteal --help``), so it must load neither torch
nor Ray (``tests/test_static_checks.py`` checks that it does not)."""

from __future__ import annotations

import sys

import typer

from raysteal.errors import ConfigError, RaystealError

app = typer.Typer(
    name="raysteal",
    help="Simulate model-stealing attacks on recommender systems, and defenses, at scale with Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def directory_option(path, option: str):
    """``path`` (a ``Path`` or ``None``) for an option naming an output directory: an existing
    file there, or at one of the folders above it, is a clear error before any work
    (``--out base.yaml``, ``--out base.yaml/sub``)."""
    from pathlib import Path

    if path is None:
        return path
    for place in (Path(path), *Path(path).parents):
        if place.is_dir():
            break
        if place.exists() or place.is_symlink():  # a file, or a link to nothing
            what = "" if place == Path(path) else f"{place} "
            raise ConfigError(f"{option} {path}: {what}is a file, not a directory")
    return path


def _mount() -> None:
    """Attach every command group; imports stay lazy inside each command body."""
    from raysteal.cli import data as data_cli
    from raysteal.cli import models as models_cli
    from raysteal.cli import reproduce as reproduce_cli
    from raysteal.cli import run as run_cli
    from raysteal.cli import simulate as simulate_cli
    from raysteal.cli import tune as tune_cli
    from raysteal.cli import verify as verify_cli

    app.add_typer(data_cli.app, name="data", help="List, fetch and inspect datasets.")
    models_cli.register(app)
    run_cli.register(app)
    reproduce_cli.register(app)
    tune_cli.register(app)
    simulate_cli.register(app)
    verify_cli.register(app)


_mount()


def main() -> None:
    """Console entry point: user errors print one clear line and exit 2, never a traceback."""
    try:
        app()
    except RaystealError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
