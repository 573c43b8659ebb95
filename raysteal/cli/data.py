"""``raysteal data ...`` commands (placeholder until the data layer lands)."""

import typer

app = typer.Typer(no_args_is_help=True)
