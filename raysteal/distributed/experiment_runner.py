"""``raysteal run``: an experiment grid as parallel Ray workers against ``TargetServer`` actors.

Per (dataset, target): one Ray task trains (or loads from the cache) the target and computes
the ground-truth lists; per (target, defense setting): one ``TargetServer``; per run: one Ray
task holding a query client. Rows are written as runs finish (atomically), so a killed
experiment resumes where it stopped. The deploy steps themselves (target preparation, servers,
accounts, attempts, query logs) are :mod:`raysteal.distributed.deploy`'s, shared with
``raysteal tune`` and ``raysteal simulate``; this module schedules them over a grid.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysteal.distributed.deploy import (
    close_server,
    concurrency_limit,
    crashed,
    deploy_defense,
    execute_one,
    failure_text,
    guard_target,
    news_queue,
    open_attempt,
    prepare_task,
    server_ledger,
    show_news,
    start_ray,
    target_what,
)
from raysteal.distributed.progress import RunProgress
from raysteal.errors import RaystealError
from raysteal.experiment.config import ExperimentConfig
from raysteal.experiment.run import Run, expand_runs
from raysteal.results.store import ResultStore, canonical_run, run_id

if TYPE_CHECKING:  # annotations only: the servers (and Ray) are imported where an experiment runs
    from ray import ObjectRef

    from raysteal.oracle.server import TargetServerHandle


def _group_key(run: Run) -> tuple:
    """Runs sharing one deployed target: same dataset, split, target (later-added settings at
    their default left out, as in run ids, so the server's ledger name is stable too)."""
    spec = canonical_run(run.spec)
    return (
        json.dumps(spec["dataset"], sort_keys=True),
        json.dumps(spec["split"], sort_keys=True),
        json.dumps(spec["target"], sort_keys=True),
    )


def _warn_stray_work(store: ResultStore, expected: set[str]) -> None:
    """Name the scratch directories no run of this invocation will resume (kept: they may belong to
    other seeds or targets of the file, to another experiment sharing the output directory, or to
    runs whose settings changed -- and hold the only copy of answers a budget paid for)."""
    stray = store.stray_work(expected)
    if stray:
        import warnings

        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        warnings.warn(
            f"{store.partial_dir}: {len(stray)} scratch director{'y' if len(stray) == 1 else 'ies'} of runs not among "
            f"this invocation's ({shown}), left in place; remove the ones no later run will resume",
            RuntimeWarning,
            stacklevel=3,
        )


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    address: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    max_concurrent: int | None = None,
) -> ResultStore:
    """Run every unfinished run of ``config``, at most :func:`~raysteal.distributed.deploy.concurrency_limit`
    at once (the rest queue in grid order); returns the result store."""
    if max_concurrent is not None:
        concurrency_limit(max_concurrent)  # a bad limit fails before any work (None needs Ray up)
    store = ResultStore(out_dir)
    runs = expand_runs(config)
    done = store.finished()
    store.clear_finished_work(done)
    # one entry per run id: two identical grid entries would otherwise run at once into one row
    pending = list({r.id: r for r in runs if not store.is_finished(r.ids, done)}.values())
    _warn_stray_work(store, {r.id for r in runs})
    if not pending:
        store.export_or_warn()
        return store
    share = start_ray(address, num_cpus)
    prepare = prepare_task(share)
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in pending:
        groups[_group_key(run)].append(run)
    sitting = _Sitting(config, store, groups, share, out_dir, cache_dir, progress, max_concurrent)
    news = news_queue() if progress else None  # target-training epochs, for the progress display
    for key, rs in groups.items():
        first = rs[0].spec
        ref = prepare.remote(first["dataset"], first["split"], first["target"], max(max(r.k for r in rs), 10), data_dir, cache_dir, news)
        sitting.waiting[ref] = key
    try:
        with RunProgress(total=len(pending), enabled=progress) as bar:
            sitting.loop(news, bar)
    finally:
        if news is not None:
            news.shutdown()  # the queue actor goes with the loop, also when it fails
    for name, server in sitting.servers.values():
        close_server(store, name, server)
    store.export_or_warn()  # the finished rows in one file, failures or not
    if sitting.failures:
        raise RaystealError(failures_message(sitting.failures, pending))
    return store


class _Sitting:
    """One invocation's work in flight: targets being prepared (``waiting``), one server per
    (target, defense setting) (``servers``), runs waiting for a slot (``queued``) and executing
    (``in_flight``), and the runs that failed (``failures``)."""

    def __init__(
        self,
        config: ExperimentConfig,
        store: ResultStore,
        groups: dict[tuple, list[Run]],
        share: float,
        out_dir: str | Path,
        cache_dir: str | None,
        progress: bool,
        max_concurrent: int | None,
    ):
        import ray

        self.store, self.groups, self.share, self.progress, self.max_concurrent = store, groups, share, progress, max_concurrent
        # no Ray-level retry: a retried attempt must open a fresh account (``deploy.attempt_account``).
        # SPREAD: runs are CPU-heavy; Ray's default packs short tasks onto the driver's node while
        # it has a free CPU, leaving a cluster's other nodes idle
        self.execute: Any = ray.remote(execute_one).options(num_cpus=1, num_gpus=share, max_retries=0, scheduling_strategy="SPREAD")
        self.waiting: dict[Any, tuple] = {}
        self.servers: dict[tuple, tuple[str, TargetServerHandle]] = {}
        self.in_flight: dict[Any, tuple[Run, dict, TargetServerHandle, dict, Any, int]] = {}
        self.queued: deque[tuple[Run, Any, Any, tuple]] = deque()  # (run, data_ref, client, in_flight entry) waiting for a slot
        self.failures: list[tuple[Run, str]] = []
        self.state_root = Path(out_dir) / "ledgers"
        self.aux_cache = str(Path(cache_dir) if cache_dir else Path(out_dir) / "cache")
        # the popularity guard (raysteal.training.guard): warn under one lift, refuse to attack under another
        self.warn_at, self.required = config.target_lift_warning, config.require_target_lift

    def loop(self, news, bar: RunProgress) -> None:
        """Deploy each target as it is ready (runs of other targets keep going) and collect each run as it ends."""
        import ray

        while self.waiting or self.in_flight:
            ready, _ = ray.wait(list(self.waiting) + list(self.in_flight), num_returns=1, timeout=None if news is None else 2.0)
            show_news(news, bar.note)
            if not ready:
                continue
            ref = ready[0]
            if ref in self.waiting:
                if not self.target_ready(ref, bar):
                    continue
            else:
                self.run_done(ref, bar)
            self.start_queued()

    def say(self, line: str) -> None:
        """A target beside popularity: one lasting line on stderr (above the bar on a terminal)."""
        if self.progress:
            print(line, file=sys.stderr, flush=True)

    def target_ready(self, ref: Any, bar: RunProgress) -> bool:
        """Deploy a prepared target; False (its runs failed, none attempted) when its preparation
        failed or the popularity guard refused it."""
        import ray

        key = self.waiting.pop(ref)
        try:
            spec, data = ray.get(ref)
        except Exception as err:
            for run in self.groups[key]:
                self.failures.append((run, f"target preparation failed: {failure_text(err)}"))
                bar.advance(f"FAILED target {run.target.model}: {err}")
            return False
        refusal = guard_target(data, target_what(self.groups[key][0]), self.warn_at, self.required, self.say)
        if refusal is not None:  # not deployed: none of its runs is attempted
            for run in self.groups[key]:
                self.failures.append((run, refusal))
                bar.advance(f"REFUSED {run.attack_name}: {refusal}")
            return False
        self.deploy(key, spec, data)
        return True

    def deploy(self, key: tuple, spec, data) -> None:
        """Start one server per defense setting of this target and submit its runs."""
        import ray

        data_ref = ray.put(data)
        by_defense: dict[str, list[Run]] = defaultdict(list)
        for run in self.groups[key]:
            by_defense[json.dumps(run.defense_settings, sort_keys=True)].append(run)
        for defense_key, druns in by_defense.items():
            name = run_id({"group": list(key), "defenses": defense_key})[:12]
            ks = sorted({r.k for r in druns})
            server, costs = deploy_defense(spec, data, json.loads(defense_key), ks, self.state_root / name, self.share)
            self.servers[(key, defense_key)] = (name, server)
            ledger = server_ledger(server)  # accounts of earlier invocations (a resumed experiment)
            for run in druns:
                self.submit(run, costs[run.k], server, ledger, data_ref)

    def submit(self, run: Run, cost: dict, server: TargetServerHandle, ledger: dict, data_ref, attempt: int = 0) -> None:
        """One attempt at ``run`` on its own account (``ledger``: the server's accounts so far)."""
        client = open_attempt(server, run, ledger)
        self.queued.append((run, data_ref, client, (run, cost, server, ledger, data_ref, attempt)))

    def start_queued(self) -> None:
        """Start queued runs while fewer than the limit are executing."""
        while self.queued and len(self.in_flight) < concurrency_limit(self.max_concurrent):
            run, data_ref, client, entry = self.queued.popleft()
            workdir = str(self.store.work_dir(run.id))
            self.in_flight[self.execute.remote(run, data_ref, client, self.aux_cache, workdir)] = entry

    def run_done(self, ref: ObjectRef[Any], bar: RunProgress) -> None:
        """Write a finished run's row; retry a run whose process was lost once, on a fresh account."""
        import ray

        run, cost, server, ledger, data_ref, attempt = self.in_flight.pop(ref)
        try:
            row = {**ray.get(ref), **cost}
            self.store.write_row(run.id, row)
            bar.advance(f"{row['dataset']}/{row['target']}/{row['attack']} seed {row['seed']}: agr@k={row['agr@k']:.4f}")
        except Exception as err:  # a failed run writes no row: a re-run retries it
            if crashed(err) and attempt == 0:  # its process was lost: once more, on a fresh account
                self.submit(run, cost, server, ledger, data_ref, attempt + 1)
            else:
                self.failures.append((run, failure_text(err)))
                bar.advance(f"FAILED {run.attack_name}: {err}")


def failures_message(failures: list[tuple[Run, str]], runs: list[Run]) -> str:
    """One line per failed run (the first ten), in the order ``runs`` lists them, not the order they failed in."""
    order = {run.id: place for place, run in enumerate(runs)}
    ordered = sorted(failures, key=lambda failure: order.get(failure[0].id, len(order)))
    lines = "\n".join(f"  {r.dataset.name}/{r.target.model}/{r.attack_name} seed {r.seed}: {e}" for r, e in ordered[:10])
    return (
        f"{len(failures)} run(s) failed (finished runs are saved; re-run to retry, after fixing the input where the error is one):\n{lines}"
    )
