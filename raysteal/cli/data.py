"""``raysteal data list | fetch | info``: list, download and inspect datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from raysteal.cli import directory_option
from raysteal.cli.options import key_values
from raysteal.errors import DataFileError
from raysteal.paths import data_dir as resolve_data_dir

app = typer.Typer(no_args_is_help=True)

DATA_DIR_HELP = "data directory (default: $RAYSTEAL_DATA, else ~/.cache/raysteal/data)"


@app.command("list")
def list_datasets(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List the registered datasets, their paper recipe and whether their file is present."""
    from raysteal.data import dataset_names, dataset_spec

    root = resolve_data_dir(data_dir)
    rows = []
    for name in dataset_names():
        spec = dataset_spec(name)
        found = None if spec.generator else spec.find(root)
        status = "generated" if spec.generator else (str(found) if found else "missing")
        rows.append(
            {"name": name, "paper": spec.paper, "status": status, "fetchable": spec.fetch is not None, "description": spec.description}
        )
    if as_json:
        typer.echo(json.dumps({"data_dir": str(root), "datasets": rows}, indent=2))
        return
    typer.echo(f"data directory: {root}")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        fetch_hint = "" if r["status"] != "missing" or not r["fetchable"] else f" (raysteal data fetch {r['name']})"
        typer.echo(f"  {r['name']:<{width}}  paper={r['paper']:<15} {r['status']}{fetch_hint}")
        typer.echo(f"  {'':<{width}}  {r['description']}")


@app.command("fetch")
def fetch_dataset(
    name: str = typer.Argument(..., help="dataset name (see `raysteal data list`)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    url: str | None = typer.Option(None, "--url", help="download from this URL instead (a mirror or file://)"),
    sha256: str | None = typer.Option(None, "--sha256", help="expected sha256 of the download (overrides the known one)"),
    force: bool = typer.Option(False, "--force", help="download even if a data file is already present"),
) -> None:
    """Download a dataset's official file, verify its sha256 and install it in the data directory."""
    from raysteal.data import fetch

    result = fetch(name, directory_option(data_dir, "--data-dir"), url=url, sha256=sha256, force=force)
    if not result.downloaded:
        typer.echo(f"{name}: already present at {result.paths[0]} (use --force to download again)")
        return
    typer.echo(f"{name}: downloaded, sha256 {result.sha256} verified; installed:")
    for path in result.paths:
        typer.echo(f"  {path}")


def _file_recipe(preprocess: str, kcore: int | None):
    from raysteal.data.preprocess import Preprocess

    return Preprocess.parse(preprocess).with_kcore(kcore)


def _names_a_file(name: str, known: list[str]) -> bool:
    """Whether ``name`` (not a registered dataset) is a path: it exists or has a directory part.
    A bare name with an extension that does not exist is either a missing file or a mistyped
    dataset name: ``DataFileError`` says both (never "unknown dataset" alone)."""
    path = Path(name)
    if path.exists() or "/" in name or "\\" in name:
        return True
    if path.suffix:
        raise DataFileError(f"{name}: no such file here, and no registered dataset of that name (known datasets: {', '.join(known)})")
    return False


@app.command("info")
def info(
    name: str = typer.Argument(..., help="dataset name (see `raysteal data list`), or the path of an interaction file"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    preprocess: str = typer.Option("none", "--preprocess", "-p", help="none | paper | dedupe | kcoreN, joined by '+'"),
    kcore: int | None = typer.Option(None, "--kcore", min=0, help="iterative k-core threshold (overrides the recipe's)"),
    file_format: str | None = typer.Option(None, "--format", help="a file's format (default: guessed from its name)"),
    column: list[str] = typer.Option([], "--column", help="a file's parser option KEY=VALUE, e.g. user=who item=what delimiter=';'"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Counts, density and activity quantiles of a dataset (or of your own file) after preprocessing."""
    from raysteal.data import dataset_names, load_file, load_table, resolve_preprocess
    from raysteal.data.preprocess import build_interactions

    if name not in dataset_names() and _names_a_file(name, dataset_names()):
        log = load_file(name, file_format, preprocess, kcore=kcore, **key_values(column, "--column", yaml_values=False))
        recipe, source = _file_recipe(preprocess, kcore), Path(name).resolve()
    else:
        if file_format or column:
            raise typer.BadParameter(f"--format / --column describe a file; {name!r} is not one")
        recipe = resolve_preprocess(name, preprocess, kcore)
        table, source = load_table(name, data_dir)
        log = build_interactions(table, name=name, preprocess=recipe)
    out = {**log.summary(), "dataset": name, "preprocess": recipe.name, "source": str(source) if source else None}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{name}  (preprocess: {recipe.name}; source: {out['source'] or 'generated'})")
    typer.echo(f"  users         {out['users']:,}")
    typer.echo(f"  items         {out['items']:,}")
    typer.echo(f"  interactions  {out['interactions']:,}")
    typer.echo(f"  density       {out['density']:.6f}")
    for key, label in (("user_activity_quantiles", "user activity"), ("item_popularity_quantiles", "item popularity")):
        qs = "  ".join(f"q{float(q):g}={v:g}" for q, v in out[key].items())
        typer.echo(f"  {label:<16}{qs}")
