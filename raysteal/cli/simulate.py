"""``raysteal simulate FILE --out DIR``: many concurrent attackers against shared target servers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from raysteal.cli.options import Address, CacheDir, DataDir, NumCpus, path_text


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the top-level app."""

    @app.command("simulate")
    def simulate_command(
        file: Path = typer.Argument(..., help="simulation file: an experiment file plus a simulation section"),
        out: Optional[Path] = typer.Option(None, "--out", help="results directory (default: results/<experiment>)"),
        attackers: Optional[int] = typer.Option(None, "--attackers", help="override simulation.attackers"),
        address: Address = None,
        data_dir: DataDir = None,
        cache_dir: CacheDir = None,
        num_cpus: NumCpus = None,
        quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
    ) -> None:
        """Run N attackers at once (own knowledge and budget each) against one or more TargetServers.

        Per-attacker rows land in OUT/runs/*.parquet, the servers' query logs in OUT/query_logs, and
        OUT/summary.json holds attackers, queries, qps, latency_ms {p50, p99} and budget_overspend.
        """
        import json

        from raysteal.cli import directory_option
        from raysteal.distributed.simulate import run_simulation
        from raysteal.experiment.simulate_config import load_simulation

        sim = load_simulation(file, attackers=attackers)  # validated before anything launches
        out_dir = directory_option(out or Path("results") / sim.name, "--out")
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
            typer.echo(f"agreement agr@k/heldout: mean {agr['mean']:.4f} (p10 {agr['p10']:.4f}, p50 {agr['p50']:.4f}, p90 {agr['p90']:.4f})")
        typer.echo(f"summary: {Path(out_dir) / 'summary.json'}")
        typer.echo(json.dumps({k: summary[k] for k in ("attackers", "queries", "qps", "latency_ms", "budget_overspend")}))
