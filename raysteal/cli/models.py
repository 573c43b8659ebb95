"""``raysteal models`` and ``raysteal train-target`` (placeholder until the model zoo lands)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
