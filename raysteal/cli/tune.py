"""``raysteal tune FILE --out DIR``: a Ray Tune sweep; resumes an unfinished one in DIR."""

from __future__ import annotations

from pathlib import Path

import typer

from raysteal.cli import directory_option
from raysteal.cli.options import Address, CacheDir, DataDir, NumCpus, path_text
from raysteal.cli.run import save_experiment
from raysteal.termination import terminate_as_interrupt


def register(app: typer.Typer) -> None:
    """Add ``tune`` to the top-level app."""

    @app.command("tune")
    def tune_command(
        file: Path = typer.Argument(..., help="tune file: an experiment file plus search_space and tune sections"),
        out: Path | None = typer.Option(None, "--out", help="results directory (default: results/<experiment>-tune)"),
        address: Address = None,
        data_dir: DataDir = None,
        cache_dir: CacheDir = None,
        num_cpus: NumCpus = None,
        storage: str | None = typer.Option(
            None, "--storage", help="Tune storage path or URI (default: OUT/tune; on a cluster a shared path or s3://, gs://)"
        ),
        quiet: bool = typer.Option(False, "--quiet", help="no Tune progress tables"),
        sources: list[Path] | None = typer.Option(
            None,
            "--from",
            help="a directory holding this very sweep's trial summary (tune_trials.parquet/.json: an earlier --out, "
            "or its published folder): its trials count towards num_samples and Optuna learns from them; only the rest run",
        ),
    ) -> None:
        """Search an experiment's hyperparameters with Ray Tune (ASHA over clone epochs by default).

        Rows land in OUT/runs/*.parquet beside raysteal run's; Tune's state in OUT/tune. The best
        trial is the one whose metric peaked best over all reported epochs (ASHA-stopped trials
        included); its configuration, epochs set to the peak epoch, is printed and written to
        OUT/best.yaml (runnable with raysteal run); every trial's peak, peak epoch, last value and
        epochs run to OUT/tune_trials.json and .parquet. Running the same command again on the
        same OUT resumes an interrupted sweep (the Optuna searcher's study included).
        """
        from raysteal.distributed.tune import run_tune
        from raysteal.experiment.tune_config import load_tune

        tune_exp = load_tune(file)  # validated before anything launches
        if storage is not None and not storage.strip():
            raise typer.BadParameter("--storage: an empty path; leave the option out for OUT/tune")
        out_dir = directory_option(out or Path("results") / f"{tune_exp.name}-tune", "--out")
        if storage is not None and "://" not in storage:
            directory_option(Path(storage), "--storage")
        save_experiment(tune_exp.experiment, out_dir)
        with terminate_as_interrupt():  # SIGTERM ends the sweep as Ctrl-C does: Tune checkpoints it, resumable
            outcome = run_tune(
                tune_exp,
                out_dir,
                address=address,
                data_dir=path_text(data_dir),
                cache_dir=path_text(cache_dir),
                num_cpus=num_cpus,
                storage=storage,
                verbose=0 if quiet else 1,
                sources=list(sources or []),
            )
        settings = tune_exp.tune
        typer.echo(
            f"\n{tune_exp.name}: {outcome.trials} trials ({outcome.completed} completed, {outcome.stopped_early} stopped early)"
            f"{' — resumed' if outcome.resumed else ''}{f'; {outcome.imported} taken from elsewhere (--from)' if outcome.imported else ''}"
            f"; rows in {out_dir}/runs, Tune state in {outcome.experiment_path}"
        )
        typer.echo(f"rule: {outcome.rule}")
        status = "" if outcome.best_status in ("", "completed") else f", {outcome.best_status.replace('_', ' ')}"
        typer.echo(
            f"best configuration ({settings.metric} = {outcome.best_metric:.4f}, {settings.mode}, at epoch {outcome.best_epoch} of "
            f"{outcome.best_epochs_run}{status}; last {outcome.best_last:.4f}; trial {outcome.best_trial}, run {outcome.best_run_id}):"
        )
        for key, value in outcome.best_config.items():
            typer.echo(f"  {key}: {value}")
        for key, value in outcome.best_overrides.items():
            typer.echo(f"  attack.{key}: {value}  (training ends at the peak epoch)")
        typer.echo(f"every trial's peak, epoch and last value: {outcome.summary_file}")
        typer.echo(f"written {outcome.best_file} (raysteal run {outcome.best_file})")
