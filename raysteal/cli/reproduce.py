"""``raysteal reproduce PAPER --out DIR``: every experiment file of ``experiments/PAPER/``, then one report.

Each file runs exactly as ``raysteal run FILE --out DIR/<file stem>`` would (the same checks, the
same runner, resumable: finished runs are skipped), one file after the other in the order of
:func:`raysteal.results.reproduction.plan` (files sharing a trained target together, cheap ones
first; the target cache shares the trained targets, ``DIR/cache`` the auxiliary models). Then
``DIR/report.md`` (+ PNGs) puts every table and figure beside the paper's values.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import typer

from raysteal.cli import directory_option
from raysteal.cli.options import Address, CacheDir, DataDir, MaxConcurrent, NumCpus, Quiet
from raysteal.cli.run import check_rows_for_report, comma_list, finished_runs, resume_command, run_file, warn_retrained_targets
from raysteal.errors import ConfigError, RaystealError
from raysteal.termination import terminate_as_interrupt


def register(app: typer.Typer) -> None:
    """Add ``reproduce`` to the top-level app."""

    @app.command("reproduce")
    def reproduce_command(
        paper: str = typer.Argument(
            ..., help="a folder of experiments/ (zhu2023, yue2021, bahsd), or the path of a folder of experiment files"
        ),
        out: Path | None = typer.Option(
            None,
            "--out",
            help="results directory (default results/<PAPER>): a file's runs in OUT/<file stem>/, the report in OUT/report.md",
        ),
        seeds: int | None = typer.Option(
            None, "--seeds", help="override the number of seeds of every file (of the table files where --figure-seeds is given)"
        ),
        figure_seeds: int | None = typer.Option(
            None, "--figure-seeds", help="override the number of seeds of the files whose report is figures only"
        ),
        only: list[str] | None = typer.Option(
            None,
            "--only",
            help="run only these files (file stem, name or glob such as 'fig*'; repeat the option or comma-separate); the report still shows every file",
        ),
        sources: list[Path] | None = typer.Option(
            None,
            "--from",
            help="a results directory (raysteal run's --out, an earlier reproduction's, or a published one such as docs/results/zhu2023) whose rows of these files' runs are copied in rather than run again; the report says which; repeatable",
        ),
        experiments: Path | None = typer.Option(
            None, "--experiments", help="the folder PAPER is in (default: ./experiments, else the checkout's)"
        ),
        report_only: bool = typer.Option(
            False,
            "--report-only",
            help="run nothing: rewrite OUT/report.md from the rows there (after taking in those --from holds, with their sittings' wall times)",
        ),
        publish: Path | None = typer.Option(
            None,
            "--publish",
            help="also copy the report (+ PNGs) to DIR and each file's results.parquet and own report to DIR/<file stem>/"
            " (e.g. docs/results/zhu2023); never query logs or checkpoints",
        ),
        address: Address = None,
        data_dir: DataDir = None,
        cache_dir: CacheDir = None,
        num_cpus: NumCpus = None,
        max_concurrent: MaxConcurrent = None,
        quiet: Quiet = False,
    ) -> None:
        """Run every experiment file of a paper's folder (Tune and simulate files aside) into OUT/<file stem>/,
        resumably, then write OUT/report.md: each table with the paper's value beside ours and the
        held-out measure, each figure as a PNG with the paper's values and the popularity floor, and
        each file's wall time."""
        wanted = [name for item in (only or []) for name in comma_list(item)]
        options = RunOptions(address, data_dir, cache_dir, num_cpus, max_concurrent, quiet)
        reproduce(
            paper,
            out,
            seeds,
            figure_seeds,
            wanted if only is not None else None,
            list(sources or []),
            experiments,
            report_only,
            options,
            publish=None if publish is None else Path(directory_option(publish, "--publish")),
        )


@dataclass(frozen=True)
class RunOptions:
    """The options each file's ``raysteal run`` takes as given (``--address`` ... ``--quiet``)."""

    address: str | None
    data_dir: Path | None
    cache_dir: Path | None
    num_cpus: int | None
    max_concurrent: int | None
    quiet: bool

    def as_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


def reproduce(
    paper: str,
    out: Path | None,
    seeds: int | None,
    figure_seeds: int | None,
    wanted: list[str] | None,
    sources: list[Path],
    experiments: Path | None,
    report_only: bool,
    options: RunOptions,
    publish: Path | None = None,
) -> None:
    """``raysteal reproduce`` (see the command's help): check every file, import rows ``--from``
    sources, run the chosen files in the planned order, write the report (and ``--publish`` it)."""
    from raysteal.report.reproduction import publish_reproduction, render_reproduction
    from raysteal.results.reproduction import check_sources, experiment_files, plan, resolve_paper, select_files

    folder = resolve_paper(paper, experiments)
    files = experiment_files(folder)
    if wanted is not None and not wanted:
        raise ConfigError(f"--only: name files; the folder's are: {', '.join(p.stem for p in files)}")
    chosen = select_files(files, wanted or [])
    check_sources(sources)
    out_root = Path(directory_option(out or Path("results") / folder.name, "--out"))
    entries = load_entries(files, out_root, seeds=seeds, figure_seeds=figure_seeds)  # every file checked before any work
    command = _resume_command(paper, out_root, seeds, figure_seeds, wanted, sources, experiments, options)
    selected = {p.stem for p in chosen}
    if sources:  # --report-only too: a fresh checkout's report (and --publish) from published rows
        _import_from(entries, selected, sources)
    entries = plan(entries)
    to_run = [e for e in entries if e.stem in selected and not report_only]
    if to_run:
        typer.echo(f"reproduce {folder.name}: {len(to_run)} file(s) into {out_root}, in this order:")
        for i, entry in enumerate(to_run, 1):
            typer.echo(f"  {i:2d}. {entry.stem:<28} {entry.pending:5d} of {entry.total:5d} runs to go, {entry.config.seeds} seeds")
    status: dict[str, str] = {}
    try:  # a Ctrl-C (or SIGTERM) inside a file's runs is said by run_file; between files or in the report, here
        with terminate_as_interrupt():
            for i, entry in enumerate(to_run, 1):
                if entry.pending == 0:
                    _export_if_missing(entry.out_dir)
                    continue
                typer.echo(f"\n[{i}/{len(to_run)}] {entry.stem}: {entry.pending} run(s) -> {entry.out_dir}")
                if options.cache_dir is None:  # auxiliary models shared between the files (targets: the target cache)
                    from raysteal.results.reproduction import link_shared_cache

                    link_shared_cache(entry.out_dir, out_root / "cache")
                error = _run_entry(entry, command, folder.name, options)
                if error is not None:
                    status[entry.stem] = f"failed: {' '.join(error.split())[:500]}"
                render_reproduction(out_root, folder.name, entries, command=command, status=status)  # progress for a long reproduction
            path = render_reproduction(out_root, folder.name, entries, command=command, status=status)
    except KeyboardInterrupt:
        typer.echo(f"interrupted; finished runs are kept; resume with: {command}", err=True)
        raise typer.Exit(130) from None
    for entry in to_run:
        warn_retrained_targets(entry.config, entry.out_dir)
    typer.echo(f"\nreport written to {path}")
    if publish is not None:
        written = publish_reproduction(out_root, entries, publish)
        typer.echo(f"published {len(written)} file(s) to {publish}")
    failed = list(status)  # in the order the files ran
    if failed:
        raise RaystealError(
            f"{len(failed)} file(s) had failures ({', '.join(failed)}); the others' runs are done and in the "
            f"report; fix the cause and resume with: {command}"
        )


def _resume_command(
    paper: str,
    out_root: Path,
    seeds: int | None,
    figure_seeds: int | None,
    wanted: list[str] | None,
    sources: list[Path],
    experiments: Path | None,
    options: RunOptions,
) -> str:
    """The ``raysteal reproduce`` line that resumes this invocation."""
    return resume_command(
        paper,
        out_root,
        command="reproduce",
        seeds=seeds,
        figure_seeds=figure_seeds,
        only=wanted or None,
        **{"from": [str(s) for s in sources] or None},
        experiments=experiments,
        **options.as_dict(),
    )


def _import_from(entries: list, selected: set[str], sources: list[Path]) -> None:
    """Copy in the rows of the chosen files' runs that ``--from`` directories hold, and the
    sittings that ran them there (their wall time)."""
    from raysteal.results.reproduction import carry_sittings, import_rows, import_sources

    for entry in entries:
        if entry.stem in selected:
            directories = import_sources(sources, entry.stem)
            copied = import_rows(entry.config, entry.out_dir, directories)
            for source, count in copied.items():
                typer.echo(f"{entry.stem}: {count} finished run(s) taken from {source}")
            carry_sittings(entry.out_dir, directories)


def _run_entry(entry, command: str, paper: str, options: RunOptions) -> str | None:
    """One file's runs, as ``raysteal run`` runs them, with the sitting recorded in its
    ``reproduce.json`` (however it ends); the error's text when it failed (a raysteal error:
    the other files go on), else ``None``."""
    from raysteal.report.reproduction import duration
    from raysteal.results.reproduction import record_sitting

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    before = len(finished_runs(entry.config, entry.out_dir))
    clock = time.perf_counter()
    outcome, error = "error", None
    try:
        selection = {"seeds": entry.config.seeds, "reproduce": paper}
        frame = run_file(entry.path, entry.config, entry.out_dir, resume=command, selection=selection, **options.as_dict())
        check_rows_for_report(frame, entry.config, entry.out_dir)
        outcome = "done"
    except (KeyboardInterrupt, typer.Exit):
        outcome = "interrupted"
        raise
    except RaystealError as err:
        outcome, error = "failed", str(err)
        typer.secho(f"{entry.stem}: {err}", fg=typer.colors.RED, err=True)
    finally:
        wall = time.perf_counter() - clock
        after = len(finished_runs(entry.config, entry.out_dir))
        sitting = {
            "started_utc": started,
            "wall_s": round(wall, 3),
            "status": outcome,
            "runs_before": before,
            "runs_after": after,
            "runs_total": entry.total,
            "seeds": entry.config.seeds,
            "command": command,
        }
        record_sitting(entry.out_dir, entry.path, entry.config.experiment, sitting)
    typer.echo(f"{entry.stem}: {after} of {entry.total} runs finished ({after - before} now, {duration(wall)})")
    return error


def load_entries(files: list[Path], out_root: Path, seeds: int | None = None, figure_seeds: int | None = None):
    """Every file validated (its paper keys included), as plan entries with their seed counts:
    ``figure_seeds`` for the files whose report is figures only, ``seeds`` for the others (and for
    all of them where ``figure_seeds`` is not given); ``None``: the file's own."""
    from raysteal.experiment.config import load_experiment
    from raysteal.results.reproduction import PlanEntry, is_figure_file
    from raysteal.results.summary import parse_paper_key

    entries = []
    for path in files:
        config = load_experiment(path)
        figure = is_figure_file(config)
        count = figure_seeds if figure and figure_seeds is not None else seeds
        if count is not None:
            config = load_experiment(path, seeds=count)
        for key in config.paper:
            try:
                parse_paper_key(key)
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}") from None
        entries.append(PlanEntry(path=path, config=config, out_dir=out_root / path.stem, figure=figure))
    stems = [e.stem for e in entries]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ConfigError(f"two files of the folder share the stem {twice[0]!r} (their results directories would be one)")
    return entries


def _export_if_missing(out_dir: Path) -> None:
    """``results.parquet`` for a finished file where it is missing or older than a row (rows
    imported with ``--from``, or never exported)."""
    from raysteal.results.store import ResultStore

    store = ResultStore(out_dir)
    rows = list(store.runs_dir.glob("*.parquet")) if store.runs_dir.is_dir() else []
    newest = max((p.stat().st_mtime for p in rows), default=0.0)
    if rows and (not store.results_file.is_file() or store.results_file.stat().st_mtime < newest):
        store.export()
