"""``raysteal run FILE`` and ``raysteal report DIR``."""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

import typer

from raysteal import __version__
from raysteal.atomic import remove_stale_temp_files, write_text_atomically
from raysteal.cli import directory_option
from raysteal.cli.options import Address, CacheDir, DataDir, MaxConcurrent, NumCpus, Quiet, path_text
from raysteal.errors import ConfigError
from raysteal.provenance import code_commit
from raysteal.termination import terminate_as_interrupt


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``report`` to the top-level app."""

    @app.command("run")
    def run_command(
        file: Path = typer.Argument(..., help="experiment file (YAML or JSON)"),
        out: Path | None = typer.Option(None, "--out", help="results directory (default: results/<experiment>)"),
        seeds: int | None = typer.Option(None, "--seeds", help="override the number of seeds"),
        targets: str | None = typer.Option(None, "--targets", help="run only these targets' runs (comma-separated model names)"),
        attacks: str | None = typer.Option(None, "--attacks", help="run only these attacks' runs (comma-separated attack names)"),
        only_seeds: str | None = typer.Option(None, "--only-seeds", help="run only these seeds' runs (comma-separated, e.g. 1,2)"),
        where: list[str] | None = typer.Option(
            None,
            "--where",
            help="run only the runs whose grid key or attack setting takes these values (KEY=V1,V2; repeatable), "
            "e.g. --where split.attacker_fraction=0.3 --where attack.baseline=ranking,none",
        ),
        address: Address = None,
        data_dir: DataDir = None,
        cache_dir: CacheDir = None,
        num_cpus: NumCpus = None,
        max_concurrent: MaxConcurrent = None,
        quiet: Quiet = False,
        require_target_lift: float | None = typer.Option(
            None,
            "--require-target-lift",
            help="refuse to attack a target whose test NDCG@10 is under X times the popularity recommender's (overrides the file's require_target_lift)",
        ),
        sources: list[Path] | None = typer.Option(
            None,
            "--from",
            help="a results directory, or a published one holding only results.parquet (e.g. docs/results/bahsd/converged-real-ml1m), "
            "whose rows of this file's runs are copied in rather than run again (matched by run id); repeatable",
        ),
    ) -> None:
        """Run an experiment grid on Ray; rows land in OUT/runs/*.parquet; resumes finished runs."""
        from raysteal.results.summary import summary_markdown

        chosen_seeds = None if only_seeds is None else seed_numbers(only_seeds)
        config, whole = selected_config(file, seeds, chosen_seeds, targets, attacks, where, require_target_lift)
        out_dir = directory_option(out or Path("results") / config.experiment, "--out")
        if sources:
            import_from(config, Path(out_dir), list(sources))
        resume = resume_command(
            file,
            out_dir,
            seeds=seeds,
            targets=targets,
            attacks=attacks,
            only_seeds=only_seeds,
            where=where,
            address=address,
            data_dir=data_dir,
            cache_dir=cache_dir,
            num_cpus=num_cpus,
            max_concurrent=max_concurrent,
            quiet=quiet,
            require_target_lift=require_target_lift,
        )
        frame = run_file(
            file,
            config,
            out_dir,
            whole=whole,
            resume=resume,
            selection=dict(targets=targets, attacks=attacks, only_seeds=chosen_seeds, seeds=seeds, where=where or None),
            address=address,
            data_dir=data_dir,
            cache_dir=cache_dir,
            num_cpus=num_cpus,
            max_concurrent=max_concurrent,
            quiet=quiet,
        )
        warn_retrained_targets(config, Path(out_dir))
        typer.echo(f"\n{config.experiment}: {len(frame)} runs in {out_dir}/runs (mean ± std over seeds)\n")
        typer.echo(summary_markdown(frame, paper=config.paper))
        check_rows_for_report(frame, config, out_dir)

    @app.command("report")
    def report_command(
        results: Path = typer.Argument(..., help="results directory written by raysteal run"),
        out: Path | None = typer.Option(None, "--out", help="where report.md and the PNGs go (default RESULTS/report)"),
        sources: list[Path] | None = typer.Option(
            None,
            "--from",
            help="a results directory or a published one (its results.parquet): its rows of the runs of every "
            "experiment RESULTS keeps a specification of, matched by run id, are taken into RESULTS first "
            "(as raysteal run --from does for one file); repeatable",
        ),
    ) -> None:
        """Render tables (Markdown) and figures (PNG) from a results directory."""
        from raysteal.report import render_report

        if sources:
            from raysteal.results.reproduction import import_saved_experiments_rows, rows_of_unkept_experiments

            for experiment, copied in import_saved_experiments_rows(results, sources).items():
                for source, count in copied.items():
                    typer.echo(f"{experiment}: {count} finished run(s) taken from {source}")
            for line in rows_of_unkept_experiments(results, sources):
                typer.echo(f"warning: {line}", err=True)
        path = render_report(results, directory_option(out, "--out"))
        typer.echo(path.read_text())
        typer.echo(f"\nreport written to {path}")


def import_from(config, out_dir: Path, sources: list[Path]) -> None:
    """Copy in the rows of ``config``'s runs that the ``--from`` directories hold (before any run
    starts, so those runs are skipped as finished), saying how many came from where."""
    from raysteal.results.reproduction import check_sources, import_rows

    check_sources(sources)
    for source, count in import_rows(config, out_dir, sources).items():
        typer.echo(f"{config.experiment}: {count} finished run(s) taken from {source}")


def warn_retrained_targets(config, out_dir: Path) -> None:
    """Say (on stderr) where rows taken ``--from`` and rows run here saw two trainings of one target."""
    from raysteal.results.reproduction import retrained_targets

    for line in retrained_targets(config, out_dir):
        typer.echo(f"warning: {line}", err=True)


def selected_config(
    file: Path,
    seeds: int | None,
    only_seeds: list[int] | None,
    targets: str | None,
    attacks: str | None,
    where: list[str] | None,
    require_target_lift: float | None,
):
    """The experiment ``file``, validated before any work starts, narrowed to the part of its grid
    the options ask for; and its whole grid (kept beside the results)."""
    from raysteal.experiment.config import load_experiment, select_attacks, select_targets
    from raysteal.experiment.selection import select_all

    config = load_experiment(file, seeds=seeds, only_seeds=only_seeds)
    whole = config.model_copy(update={"only_seeds": None})  # the file's grid, whatever part of it runs now
    if targets is not None:
        config = select_targets(config, comma_list(targets))
    if attacks is not None:
        config = select_attacks(config, comma_list(attacks))
    if where:
        config = select_all(config, where)
    if require_target_lift is not None:  # not part of any run's id: only whether a weak target is attacked
        from raysteal.errors import ConfigError

        if not require_target_lift > 0:
            raise ConfigError(f"--require-target-lift {require_target_lift:g}: a lift is a multiple of popularity's NDCG@10, > 0")
        config = config.model_copy(update={"require_target_lift": require_target_lift})
    return config, whole


def run_file(
    file: Path,
    config,
    out_dir: Path,
    *,
    resume: str,
    whole=None,
    selection: dict | None = None,
    address: str | None = None,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    num_cpus: int | None = None,
    max_concurrent: int | None = None,
    quiet: bool = False,
):
    """The work of ``raysteal run`` on one validated experiment ``config`` (read from ``file``; ``whole``:
    the file's full grid, kept beside the results; ``selection``: the part of it asked for, recorded in
    ``OUT/invocations``): the data checked, the unfinished runs run into ``out_dir``, finished ones
    skipped. Returns the experiment's rows. On Ctrl-C or SIGTERM it writes ``results.parquet`` from
    the finished rows, says what finished and how to resume (``resume``: the command line) and exits 130; failed runs raise ``RaystealError`` once the rest are done."""
    from raysteal.distributed.experiment_runner import run_experiment
    from raysteal.experiment.preflight import check_experiment_data
    from raysteal.results.store import ResultStore

    finished_before = finished_runs(config, out_dir)
    try:
        with terminate_as_interrupt():
            # the data, the list lengths and the user groups, before Ray starts or anything is written
            check_experiment_data(config, str(file), data_dir=path_text(data_dir), wanted=lambda run: run.id not in finished_before)
            remove_stale_temp_files(out_dir, cache_dir)  # what writers killed mid-write left
            save_experiment(config if whole is None else whole, out_dir)  # one results directory may gather several partial runs
            record_invocation(config, out_dir, file, **(selection or {}))
            store = run_experiment(
                config,
                out_dir,
                address=address,
                data_dir=path_text(data_dir),
                cache_dir=path_text(cache_dir),
                num_cpus=num_cpus,
                progress=not quiet,
                max_concurrent=max_concurrent,
            )
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (terminate_as_interrupt)
        ResultStore(out_dir).export_or_warn()  # the rows finished so far, this sitting's too
        typer.echo(interrupted_message(config, out_dir, finished_before, resume), err=True)
        raise typer.Exit(130) from None
    frame = store.load()
    return frame[frame["experiment"] == config.experiment] if not frame.empty else frame


def check_rows_for_report(frame, config, out_dir: Path) -> None:
    """Every table and figure of ``config``'s ``report:`` finds its columns in the rows (a
    ``ConfigError`` naming the entry, saying the runs are done, otherwise)."""
    if frame.empty:
        return
    from raysteal.report.render import check_report_columns

    try:
        check_report_columns(frame, [entry.model_dump() for entry in config.report], config.experiment)
    except ConfigError as err:
        raise ConfigError(f"{err} (the runs are done: their rows are in {Path(out_dir) / 'runs'})") from None


def finished_runs(config, out_dir: Path) -> set[str]:
    """Ids of ``config``'s runs that have a row in ``out_dir`` (under any id they had)."""
    from raysteal.experiment.run import expand_runs
    from raysteal.results.store import ResultStore

    store = ResultStore(out_dir)
    done = store.finished()
    return {run.id for run in expand_runs(config) if store.is_finished(run.ids, done)}


def interrupted_message(config, out_dir: Path, finished_before: set[str], resume: str) -> str:
    """One line after Ctrl-C: how many runs finished (now and in all) and the command that resumes."""
    from raysteal.experiment.run import expand_runs

    total = len({run.id for run in expand_runs(config)})
    finished = finished_runs(config, out_dir)
    return (
        f"interrupted: {len(finished - finished_before)} run(s) finished in this sitting, {len(finished)} of {total} in all "
        f"(their rows are kept in {Path(out_dir) / 'runs'}; unfinished runs start again); resume with: {resume}"
    )


def resume_command(file: str | Path, out_dir: Path, command: str = "run", **options) -> str:
    """The ``raysteal run`` (or ``command``) line that resumes this invocation (its file, ``--out``
    and options; an option given as a list is repeated once per value)."""
    import shlex

    words = ["raysteal", command, str(file), "--out", str(out_dir)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                words += [flag, str(item)]
        elif value is not None and value is not False:
            words += [flag, str(value)]
    return shlex.join(words)


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def seed_numbers(text: str) -> list[int]:
    """``--only-seeds 1,3`` as integers; anything else is a ``ConfigError`` naming the option."""
    names = comma_list(text)
    bad = [n for n in names if not n.isdecimal()]
    if bad:
        raise ConfigError(f"--only-seeds {text!r}: seeds are non-negative integers, comma-separated (e.g. 1,2); not {bad[0]!r}")
    return [int(n) for n in names]


def record_invocation(config, out_dir: Path, file: Path, **selection) -> Path:
    """Write ``OUT/invocations/<UTC time>-<pid>.json``: which file, which part of its grid
    (``--targets``/``--attacks``/``--only-seeds``/``--seeds``/``--where``) and which run ids this invocation
    set out to run. One file each, so invocations sharing a results directory at once never race;
    with the rows' run ids it tells which sitting made which rows."""
    from raysteal.experiment.run import expand_runs

    now = datetime.datetime.now(datetime.timezone.utc)
    record = {
        "started_utc": now.isoformat(timespec="seconds"),
        "file": str(file),
        "experiment": config.experiment,
        "selection": {name: value for name, value in selection.items() if value is not None},
        "run_ids": [run.id for run in expand_runs(config)],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "raysteal": __version__,
        "commit": code_commit(),
    }
    path = Path(out_dir) / "invocations" / f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{os.getpid()}.json"
    write_text_atomically(path, json.dumps(record, indent=2))
    return path


def save_experiment(config, out_dir: Path) -> None:
    """Keep the experiment's validated spec beside its results (for report and provenance)."""
    from raysteal.results.store import ResultStore

    ResultStore(out_dir).save_experiment(config.experiment, config.model_dump(mode="json"))
