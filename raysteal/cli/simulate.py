"""``raysteal simulate FILE --out DIR``: many concurrent attackers against shared target servers."""

from __future__ import annotations

from pathlib import Path

import typer

from raysteal.cli import directory_option
from raysteal.cli.options import Address, CacheDir, DataDir, NumCpus, Quiet, path_text
from raysteal.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the top-level app."""

    @app.command("simulate")
    def simulate_command(
        file: Path = typer.Argument(..., help="simulation file: an experiment file plus a simulation section"),
        out: Path | None = typer.Option(None, "--out", help="results directory (default: results/<experiment>)"),
        attackers: int | None = typer.Option(None, "--attackers", help="override simulation.attackers"),
        address: Address = None,
        data_dir: DataDir = None,
        cache_dir: CacheDir = None,
        num_cpus: NumCpus = None,
        quiet: Quiet = False,
        rescore: bool = typer.Option(False, "--rescore", help="score the accounts of the finished run in --out again (no attacker runs)"),
    ) -> None:
        """Run N attackers at once (own knowledge and budget each) against one or more TargetServers.

        Per-attacker rows land in OUT/runs/*.parquet, the servers' query logs in OUT/query_logs, and
        OUT/summary.json holds attackers, queries, qps, latency_ms {p50, p99} and budget_overspend.
        With simulation.benign and simulation.detection, real users' traffic runs beside the
        attackers and OUT/detection/ holds each account's score from the query log, ROC/AUC per
        attack and budget, and the fidelity each attacker reached before it was flagged.
        """
        import json

        from raysteal.distributed.simulate import detect, run_simulation
        from raysteal.experiment.simulate_config import load_simulation

        sim = load_simulation(file, attackers=attackers)  # validated before anything launches
        out_dir = directory_option(out or Path("results") / sim.name, "--out")
        if rescore:
            if sim.simulation.detection is None:
                raise ConfigError(f"--rescore: {file} has no simulation.detection section (its false-positive rate)")
            for g in detect(out_dir, sim.simulation.detection.fpr):
                typer.echo(_detection_line(g))
            typer.echo(f"detection report: {Path(out_dir) / 'detection' / 'report.md'}")
            return
        summary = run_simulation(
            sim,
            out_dir,
            address=address,
            data_dir=path_text(data_dir),
            cache_dir=path_text(cache_dir),
            num_cpus=num_cpus,
            progress=not quiet,
        )
        lat = summary["latency_ms"]
        agr = summary["agreement"].get("agr@k/heldout", {})
        typer.echo(
            f"\n{sim.name}: {summary['attackers']} attackers on {len(summary['servers'])} server(s), {summary['queries']} queries "
            f"in {summary['requests']} requests, {summary['qps']:.0f} queries/s, latency p50 {lat['p50']:.1f} ms / p99 {lat['p99']:.1f} ms, "
            f"budget overspend {summary['budget_overspend']}, {summary['wall_s']:.1f} s"
        )
        if agr:
            typer.echo(
                f"agreement agr@k/heldout: mean {agr['mean']:.4f} (p10 {agr['p10']:.4f}, p50 {agr['p50']:.4f}, p90 {agr['p90']:.4f})"
            )
        if "benign" in summary:
            b = summary["benign"]
            typer.echo(
                f"benign: {b['accounts']} accounts replayed {b['requests']} requests ({b['source']} users, offered "
                f"{b['offered_qps']:.0f} queries/s, {b['failed']} failed)"
            )
        for g in summary.get("detection", []):
            typer.echo(_detection_line(g))
        if "detection" in summary:
            typer.echo(f"detection report: {Path(out_dir) / 'detection' / 'report.md'}")
        typer.echo(f"summary: {Path(out_dir) / 'summary.json'}")
        typer.echo(json.dumps({k: summary[k] for k in ("attackers", "queries", "qps", "latency_ms", "budget_overspend")}))


def _detection_line(g: dict) -> str:
    """One attack and budget of the detection results, as the CLI prints it."""
    before = g["fidelity_before_flag"]
    before = "before any measured budget" if before != before else f"{before:.4f}"  # NaN: flagged before the smallest budget finished
    return (
        f"detection {g['attack']} budget {g['budget']}: AUC {g['auc']:.3f} (content only {g['auc_content']:.3f}), flagged "
        f"{g['flagged']:.0%} at {g['fpr_target']:.0%} FPR after {g['queries_to_flag_p50']:.0f} queries (p50), fidelity before flag "
        f"{before} (final {g['fidelity_final']:.4f})"
    )
