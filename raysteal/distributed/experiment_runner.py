"""``raysteal run``: an experiment grid as parallel Ray workers against ``TargetServer`` actors.

Per (dataset, target): one Ray task trains (or loads from the cache) the target and computes
the ground-truth lists; per (target, defense setting): one ``TargetServer``; per run: one Ray
task holding a query client. Rows are written as runs finish (atomically), so a killed
experiment resumes where it stopped.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raysteal.experiment.config import DatasetEntry, ExperimentConfig, SplitConfig, TargetEntry, expand_runs
from raysteal.results.store import ResultStore, run_id

if TYPE_CHECKING:  # annotations only: the servers (and Ray) are imported where an experiment runs
    from raysteal.oracle.server import TargetServerHandle


def _group_key(run: dict[str, Any]) -> tuple:
    """Runs sharing one deployed target: same dataset, split, target (later-added settings at
    their default left out, as in run ids, so the server's ledger name is stable too)."""
    from raysteal.results.store import canonical_run

    run = canonical_run(run)
    return (json.dumps(run["dataset"], sort_keys=True), json.dumps(run["split"], sort_keys=True), json.dumps(run["target"], sort_keys=True))


def _prepare_target(dataset: dict, split: dict, target: dict, max_k: int, data_dir: str | None, cache_dir: str | None, news=None):
    """Ray task body: load data, train or load the target, compute the truth lists. ``news``: a
    ``ray.util.queue.Queue`` the target's training epochs are reported on (for the progress display)."""
    from raysteal.distributed.runtime import worker_device
    from raysteal.experiment.context import RunData, prepare_dataset, target_cache_labels, target_config
    from raysteal.oracle import RankingEngine, TargetSpec
    from raysteal.training import get_or_train_target, load_trained_target

    ds_entry, split_cfg, target_entry = DatasetEntry(**dataset), SplitConfig(**split), TargetEntry(**target)
    ctx = prepare_dataset(ds_entry, split_cfg, data_dir)
    device = worker_device()
    if target_entry.checkpoint is not None:
        model, meta = load_trained_target(target_entry.checkpoint, ctx.target)
    else:
        model_cfg, train_cfg = target_config(target_entry)
        dataset_label, preprocess_label = target_cache_labels(ds_entry, split_cfg)
        model, meta = get_or_train_target(
            ctx.target,
            model_cfg,
            train_cfg,
            seed=split_cfg.target_seed,
            dataset=dataset_label,
            preprocess=preprocess_label,
            cache_dir=cache_dir,
            device=device,
            progress=False,
            on_epoch=_reporter(news, f"{ds_entry.label}/{target_entry.model}"),
            watermark=target_entry.watermark,
        )
    meta = {**meta, "metrics": _with_guard(model, ctx.loo, meta.get("metrics", {}), split_cfg.target_seed, device)}
    model = model.cpu().eval()
    train = ctx.loo.train
    spec = TargetSpec.from_training_log(model, train, name=f"{ds_entry.name}/{target_entry.model}")
    if getattr(model, "sequential", False):
        return spec, _sequential_run_data(ds_entry, target_entry, ctx, model, meta, max_k, device)
    engine = RankingEngine(model, train.indptr, train.items, device=device)
    truth = engine.topk(np.arange(train.num_users), min(max_k, train.num_items))
    data = RunData(
        dataset=ds_entry.name,
        target_name=target_entry.model,
        train=train,
        test_items=ctx.loo.test,
        auxiliary=ctx.auxiliary,
        truth_lists=truth,
        target_metrics=meta.get("metrics", {}),
        target_device=device,
    )
    return spec, data


def _with_guard(model, loo, metrics: dict, seed: int, device: str) -> dict:
    """The target's metrics plus the popularity guard (:mod:`raysteal.training.guard`): ``guard``
    (the target beside the popularity recommender on the same users and protocol, and the lift),
    ``test_ranks`` (each user's full-ranking test rank, ``-1``: none) and ``valid_items`` (what
    the rows' accuracy columns exclude besides the training items)."""
    from raysteal.training.guard import guard_figures

    model.to(device)
    figures, ranks = guard_figures(model, loo, seed=seed, device=device)
    return {**metrics, "guard": figures, "test_ranks": ranks, "valid_items": np.asarray(loo.valid, dtype=np.int64)}


def guard_target(data, what: str, warn_at: float | None, required: float | None, say) -> str | None:
    """Report a prepared target beside popularity (``say``: one line), warn when its lift is under
    ``warn_at``, and return the one-line refusal when it is under ``required`` (else ``None``).
    ``what`` names the target and the dataset."""
    import warnings

    from raysteal.training import guard

    figures = getattr(data, "target_metrics", {}).get("guard")
    if not figures:
        return None
    say(guard.describe(figures, what))
    if required is not None and guard.below(figures, required):
        return guard.refusal_text(figures, what, required)
    if warn_at is not None and guard.below(figures, warn_at):
        warnings.warn(guard.warning_text(figures, what, warn_at), RuntimeWarning, stacklevel=2)
    return None


def _target_what(run: dict) -> str:
    """``MODEL [params] on DATASET`` for the guard's lines."""
    target = run["target"]
    params = f" {json.dumps(target['params'], sort_keys=True)}" if target.get("params") else ""
    return f"{target['model']}{params} on {run['dataset']['name']}"


def _reporter(news, target: str):
    """``on_epoch`` for a target's training: each epoch's log onto the ``news`` queue (never fails
    the training: a full or gone queue only loses the message)."""
    if news is None:
        return None

    def tell(log: dict) -> None:
        try:
            news.put_nowait({"target": target, **log})
        except Exception:  # noqa: BLE001 - progress display only
            pass

    return tell


def _export(store) -> None:
    """``OUT/results.parquet``; a damaged row file is a warning here (the runs are done, their
    rows kept), and ``raysteal report`` names it."""
    import warnings

    from raysteal.errors import DataFileError

    try:
        store.export()
    except DataFileError as err:
        warnings.warn(f"results.parquet not written: {err}", RuntimeWarning, stacklevel=3)


def _sequential_run_data(ds_entry, target_entry, ctx, model, meta: dict, max_k: int, device: str):
    """Evaluation inputs of a sequential target: each user's history before the test item."""
    from raysteal.errors import ConfigError
    from raysteal.experiment.context import SequentialRunData
    from raysteal.oracle import RankingEngine

    max_len = int(model.config.max_len)
    if model.num_items < 10:  # before any run: Yue et al.'s metrics rank 10 items
        raise ConfigError(
            f"{ds_entry.label}: a sequential target's rows report Agr@10 and NDCG@10, which need at least 10 items; "
            f"this catalogue has {model.num_items}"
        )
    users = ctx.loo.evaluable_users
    # the last max_len items before each user's held-out test item (train + valid)
    sequences = ctx.target.padded_sequences(max_len + 1, users)[:, :-1]
    engine = RankingEngine(model, device=device)
    teacher = engine.topk(sequences, min(max_k, model.num_items))
    return SequentialRunData(
        dataset=ds_entry.name,
        target_name=target_entry.model,
        train=ctx.loo.train,
        auxiliary=ctx.auxiliary,
        eval_users=users,
        eval_sequences=sequences,
        test_items=ctx.loo.test[users],
        teacher_lists=np.asarray(teacher),
        user_lengths=ctx.target.user_lengths,
        item_popularity=ctx.loo.train.item_counts,
        max_len=max_len,
        target_metrics=meta.get("metrics", {}),
        target_device=device,
    )


def _target_columns(data) -> dict[str, float]:
    """The popularity guard's columns of every row of this target (``target_lift``, the target's
    and popularity's test HR/NDCG@10 on the same users; :func:`raysteal.training.guard.row_columns`)."""
    from raysteal.training.guard import row_columns

    figures = getattr(data, "target_metrics", {}).get("guard")
    return row_columns(figures) if figures else {}


def _defense_cost(spec, data, k: int) -> dict[str, float]:
    """The columns every row of this target and ``k`` shares: the popularity guard's
    (:func:`_target_columns`) and the target's own Recall/NDCG@k over all its users, with and
    without the defense (Fig. 8)."""
    from raysteal.experiment.context import SequentialRunData
    from raysteal.oracle import RankingEngine, build_defenses
    from raysteal.oracle.cost import defense_cost

    if isinstance(data, SequentialRunData):
        return _target_columns(data)  # sequential rows carry the teacher's own accuracy besides (teacher_ndcg@10)

    users = np.flatnonzero(data.test_items >= 0)
    engine = RankingEngine(spec.model, data.train.indptr, data.train.items)
    chain = build_defenses(spec.defenses, spec.item_popularity)
    cost = defense_cost(engine, chain, users, data.test_items[users], k=k)
    return {
        **_target_columns(data),
        "target_recall@k/all_users": cost[f"recall@{k}"],
        "target_recall@k/defended": cost[f"recall@{k}/defended"],
        "target_ndcg@k/defended": cost[f"ndcg@{k}/defended"],
    }


def _execute(run: dict, data, client, aux_cache: str | None, workdir: str | None = None):
    """Ray task body: one run (``workdir``: its scratch directory, for runs that can resume)."""
    import torch

    from raysteal.distributed.runtime import worker_device
    from raysteal.experiment.context import SequentialRunData
    from raysteal.experiment.execute import execute_run
    from raysteal.experiment.execute_sequential import execute_sequential_run

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if isinstance(data, SequentialRunData):
        return execute_sequential_run(run, data, client, device=worker_device(), workdir=workdir)
    return execute_run(run, data, client, device=worker_device(), aux_cache=aux_cache)


def _ledger_budget(run: dict) -> int:
    """The attacker's account: the experiment's budget, else the attack's own query budget, else unlimited."""
    if run["budget"] is not None:
        return int(run["budget"])
    own = run["attack"].get("budget_queries")
    return -1 if own is None else int(own)


def _attempt_account(rid: str, ledger: dict[str, Any]) -> str:
    """The server account of the next attempt at run ``rid``: ``rid``, then ``rid@1``, ``rid@2``, ...

    An attempt that died (a crashed worker, a killed experiment) spent queries but wrote no row;
    the ledger journal keeps what it spent, so reusing its account would hand the retry a smaller
    budget and silently change the experiment. Each attempt gets the whole budget on a new account
    and the query log keeps every attempt's queries under its own name. A DFME / BAHSD attempt
    that finds the answers an earlier one saved in the run's scratch directory trains on them and
    spends nothing on its account (the row's ``queries`` are the earlier attempt's)."""
    earlier = sum(1 for name in ledger if name == rid or name.startswith(rid + "@"))
    return rid if earlier == 0 else f"{rid}@{earlier}"


def _crashed(err: Exception) -> bool:
    """A system failure worth one retry (the attack code did not raise: its process was lost)."""
    import ray.exceptions as rex

    return isinstance(err, (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError, rex.LocalRayletDiedError))


def concurrency_limit(max_concurrent: int | None = None) -> int:
    """How many runs may execute at once: ``max_concurrent``, else the cluster's CPUs now.

    Ray's own scheduling is not enough here: a task blocked in ``ray.get`` hands its CPU back
    (Ray docs, "Yielding Resources While Blocked"), and a run blocks on every query it sends its
    ``TargetServer``, so Ray alone starts every run of the grid at once -- all of them holding
    their data in memory and time-slicing the same cores."""
    if max_concurrent is not None:
        if max_concurrent < 1:
            from raysteal.errors import ConfigError

            raise ConfigError(f"max_concurrent must be >= 1, got {max_concurrent}")
        return int(max_concurrent)
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _failure_text(err: Exception) -> str:
    """What a failed task says: a raysteal error raised inside it as its own one-line message (not
    Ray's wrapped traceback), anything else as its repr."""
    from raysteal.errors import RaystealError

    cause = getattr(err, "cause", None)
    if isinstance(cause, RaystealError):
        return f"{type(cause).__name__}: {cause}"
    return repr(err)


def _news_queue():
    """A small queue actor (no CPU reserved) that target preparations report their epochs on."""
    from ray.util.queue import Queue

    return Queue(maxsize=10_000, actor_options={"num_cpus": 0})


def _show_news(news, say) -> None:
    """Pass what the target trainings reported since the last look to ``say`` (one line each)."""
    from raysteal.distributed.progress import target_epoch_message

    if news is None:
        return
    try:
        items = news.get_nowait_batch(news.qsize())
    except Exception:  # noqa: BLE001 - progress display only
        return
    for item in items:
        say(target_epoch_message(item))


def prepare_one_target(prepare, args: tuple, show: bool):
    """``ray.get`` of one target preparation (``prepare``: the remote ``_prepare_target``, ``args``
    its arguments before ``news``), printing the target's training epochs to stderr when ``show``
    (``raysteal tune`` and ``raysteal simulate``, which prepare one target before anything else)."""
    import sys

    import ray

    news = _news_queue() if show else None
    ref = prepare.remote(*args, news)
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=None if news is None else 2.0)
            _show_news(news, lambda line: print(line, file=sys.stderr, flush=True))
            if ready:
                return ray.get(ref)
    finally:
        if news is not None:
            news.shutdown()


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
    """Run every unfinished run of ``config``, at most :func:`concurrency_limit` at once (the
    rest queue in grid order); returns the result store."""
    import ray

    from raysteal.distributed.progress import RunProgress
    from raysteal.distributed.runtime import gpu_share, init_ray
    from raysteal.oracle.server import client_for, owner_token, start_target_server, stop_target_server

    if max_concurrent is not None:
        concurrency_limit(max_concurrent)  # a bad limit fails before any work (None needs Ray up)
    store = ResultStore(out_dir)
    runs = expand_runs(config)
    done = store.finished()
    store.clear_finished_work(done)
    # one entry per run id: two identical grid entries would otherwise run at once into one row
    pending = list({run_id(r): r for r in runs if not store.is_finished(r, done)}.values())
    _warn_stray_work(store, {run_id(r) for r in runs})
    if not pending:
        _export(store)
        return store
    init_ray(address, num_cpus=num_cpus)
    share = gpu_share()
    # Any: Ray's stubs type a task by arity and refuse its full call (a defaulted parameter)
    prepare: Any = ray.remote(_prepare_target).options(num_cpus=1, num_gpus=share)
    # no Ray-level retry: a retried attempt must open a fresh account (``_attempt_account``).
    # SPREAD: runs are CPU-heavy; Ray's default packs short tasks onto the driver's node while
    # it has a free CPU, leaving a cluster's other nodes idle
    execute: Any = ray.remote(_execute).options(num_cpus=1, num_gpus=share, max_retries=0, scheduling_strategy="SPREAD")

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in pending:
        groups[_group_key(run)].append(run)
    news = _news_queue() if progress else None  # target-training epochs, for the progress display
    prepared = {
        key: prepare.remote(rs[0]["dataset"], rs[0]["split"], rs[0]["target"], max(max(r["k"] for r in rs), 10), data_dir, cache_dir, news)
        for key, rs in groups.items()
    }
    servers: dict[tuple, tuple[str, TargetServerHandle]] = {}
    in_flight: dict[Any, tuple[dict, dict, TargetServerHandle, dict, Any, int]] = {}
    queued: deque[tuple[dict, Any, Any, tuple]] = deque()  # (run, data_ref, client, in_flight entry) waiting for a slot
    waiting = {ref: key for key, ref in prepared.items()}
    failures: list[tuple[dict, str]] = []
    state_root = Path(out_dir) / "ledgers"
    aux_cache = str(Path(cache_dir) if cache_dir else Path(out_dir) / "cache")
    # the popularity guard (raysteal.training.guard): warn under one lift, refuse to attack under another
    warn_at, required = config.target_lift_warning, config.require_target_lift

    def say(line: str) -> None:
        """A target beside popularity: one lasting line on stderr (above the bar on a terminal)."""
        if progress:
            import sys

            print(line, file=sys.stderr, flush=True)

    def submit(run: dict, cost: dict, server: TargetServerHandle, ledger: dict, data_ref, attempt: int = 0) -> None:
        """One attempt at ``run`` on its own account (``ledger``: the server's accounts so far)."""
        account = _attempt_account(run_id(run), ledger)
        ledger[account] = {"budget": _ledger_budget(run), "spent": 0}
        client = client_for(server, account, _ledger_budget(run))
        queued.append((run, data_ref, client, (run, cost, server, ledger, data_ref, attempt)))

    def start_queued() -> None:
        """Start queued runs while fewer than the limit are executing."""
        while queued and len(in_flight) < concurrency_limit(max_concurrent):
            run, data_ref, client, entry = queued.popleft()
            in_flight[execute.remote(run, data_ref, client, aux_cache, str(store.work_dir(run_id(run))))] = entry

    def deploy(key: tuple, spec, data) -> None:
        """Start one server per defense setting of this target and submit its runs."""
        data_ref = ray.put(data)
        by_defense: dict[str, list[dict]] = defaultdict(list)
        for run in groups[key]:
            by_defense[json.dumps(run["defenses"], sort_keys=True)].append(run)
        for defense_key, druns in by_defense.items():
            spec.defenses = json.loads(defense_key)
            costs = {k: _defense_cost(spec, data, k) for k in sorted({r["k"] for r in druns})}
            name = run_id({"group": list(key), "defenses": defense_key})[:12]
            server = start_target_server(spec, state_dir=state_root / name, num_gpus=share, num_cpus=0)
            servers[(key, defense_key)] = (name, server)
            ledger_ref: ray.ObjectRef[dict[str, Any]] = server.ledger.remote(owner_token(server))
            ledger = ray.get(ledger_ref)  # accounts of earlier invocations (a resumed experiment)
            for run in druns:
                submit(run, costs[run["k"]], server, ledger, data_ref)

    try:
        with RunProgress(total=len(pending), enabled=progress) as bar:
            while waiting or in_flight:
                ready, _ = ray.wait(list(waiting) + list(in_flight), num_returns=1, timeout=None if news is None else 2.0)
                _show_news(news, bar.note)
                if not ready:
                    continue
                ref = ready[0]
                if ref in waiting:  # a target is ready: deploy it (runs of other targets keep going)
                    key = waiting.pop(ref)
                    try:
                        spec, data = ray.get(ref)
                    except Exception as err:
                        for run in groups[key]:
                            failures.append((run, f"target preparation failed: {_failure_text(err)}"))
                            bar.advance(f"FAILED target {run['target']['model']}: {err}")
                        continue
                    refusal = guard_target(data, _target_what(groups[key][0]), warn_at, required, say)
                    if refusal is not None:  # not deployed: none of its runs is attempted
                        for run in groups[key]:
                            failures.append((run, refusal))
                            bar.advance(f"REFUSED {run['attack'].get('attack')}: {refusal}")
                        continue
                    deploy(key, spec, data)
                    start_queued()
                    continue
                run, cost, server, ledger, data_ref, attempt = in_flight.pop(ref)
                try:
                    row = {**ray.get(ref), **cost}
                    store.write_row(run_id(run), row)
                    bar.advance(f"{row['dataset']}/{row['target']}/{row['attack']} seed {row['seed']}: agr@k={row['agr@k']:.4f}")
                except Exception as err:  # a failed run writes no row: a re-run retries it
                    if _crashed(err) and attempt == 0:  # its process was lost: once more, on a fresh account
                        submit(run, cost, server, ledger, data_ref, attempt + 1)
                    else:
                        failures.append((run, _failure_text(err)))
                        bar.advance(f"FAILED {run['attack'].get('attack')}: {err}")
                start_queued()
    finally:
        if news is not None:
            news.shutdown()  # the queue actor goes with the loop, also when it fails
    for name, server in servers.values():
        store.write_query_log(name, ray.get(server.query_log.remote(owner_token(server))))
        stop_target_server(server)
    _export(store)  # the finished rows in one file, failures or not
    if failures:
        from raysteal.errors import RaystealError

        raise RaystealError(failures_message(failures, pending))
    return store


def failures_message(failures: list[tuple[dict, str]], runs: list[dict]) -> str:
    """One line per failed run (the first ten), in the order ``runs`` lists them, not the order they failed in."""
    order = {run_id(run): place for place, run in enumerate(runs)}
    ordered = sorted(failures, key=lambda failure: order.get(run_id(failure[0]), len(order)))
    lines = "\n".join(
        f"  {r['dataset']['name']}/{r['target']['model']}/{r['attack'].get('attack')} seed {r['seed']}: {e}" for r, e in ordered[:10]
    )
    return (
        f"{len(failures)} run(s) failed (finished runs are saved; re-run to retry, after fixing the input where the error is one):\n{lines}"
    )
