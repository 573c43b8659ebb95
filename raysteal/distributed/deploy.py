"""The deploy steps ``raysteal run``, ``raysteal tune`` and ``raysteal simulate`` share.

Ray (:func:`start_ray`, through :mod:`raysteal.distributed.runtime`); the target, prepared once
per (dataset, split, target) in a Ray task (:func:`prepare_target`, :func:`prepare_task`,
:func:`prepare_one_target`) and checked beside popularity (:func:`guard_target`); one
``TargetServer`` per defense chain with the cost columns its rows share (:func:`deploy_defense`);
accounts (:func:`ledger_budget`, :func:`open_attempt`, :func:`open_accounts`); attempts and
retries (:func:`execute_one`, :func:`crashed`, :func:`failure_text`, :func:`concurrency_limit`);
and each server's query log (:func:`query_log`, :func:`close_server`). The drivers
(``experiment_runner.py``, ``tune.py``, ``simulate.py``) schedule these steps their own way.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raysteal.distributed.progress import target_epoch_message
from raysteal.distributed.runtime import gpu_share, init_ray, worker_device
from raysteal.errors import ConfigError, RaystealError
from raysteal.experiment.config import DatasetEntry, SplitConfig, TargetEntry
from raysteal.experiment.context import RunData, SequentialRunData, prepare_dataset, target_cache_labels, target_config

if TYPE_CHECKING:  # annotations only: the servers (and Ray) are imported where a driver runs
    from raysteal.experiment.run import Run
    from raysteal.oracle.client import QueryClient
    from raysteal.oracle.protocol import BlackBoxClient
    from raysteal.oracle.server import TargetServerHandle
    from raysteal.oracle.target import TargetSpec
    from raysteal.results.store import ResultStore


# ------------------------------------------------------------------------------------ Ray
def start_ray(address: str | None, num_cpus: int | None) -> float:
    """Start or join Ray (:func:`~raysteal.distributed.runtime.init_ray`); returns the GPU share
    each target preparation, server and run asks for (0 without GPUs)."""
    init_ray(address, num_cpus=num_cpus)
    return gpu_share()


# ---------------------------------------------------------------------------------- target
def prepare_task(share: float) -> Any:
    """:func:`prepare_target` as a Ray task of one CPU and ``share`` of a GPU.

    Any: Ray's stubs type a task by arity and refuse its full call (a defaulted parameter)."""
    import ray

    return ray.remote(prepare_target).options(num_cpus=1, num_gpus=share)


def prepare_target(dataset: dict, split: dict, target: dict, max_k: int, data_dir: str | None, cache_dir: str | None, news=None):
    """Ray task body: load data, train or load the target, compute the truth lists. ``news``: a
    ``ray.util.queue.Queue`` the target's training epochs are reported on (for the progress display)."""
    # loads torch: imported where it is used, so this module loads without it
    from raysteal.oracle import RankingEngine, TargetSpec

    # loads torch: imported where it is used, so this module loads without it
    from raysteal.training import get_or_train_target, load_trained_target

    ds_entry, split_cfg, target_entry = DatasetEntry(**dataset), SplitConfig(**split), TargetEntry(**target)
    ctx = prepare_dataset(ds_entry, split_cfg, data_dir)
    device = worker_device()
    whole = split_cfg.target_training == "whole"
    if target_entry.checkpoint is not None:
        model, meta = load_trained_target(target_entry.checkpoint, ctx.target)
        guarded = model
    else:
        model_cfg, train_cfg = target_config(target_entry)
        dataset_label, preprocess_label = target_cache_labels(ds_entry, split_cfg)
        train_one = functools.partial(
            get_or_train_target,
            ctx.target,
            model_cfg,
            seed=split_cfg.target_seed,
            dataset=dataset_label,
            preprocess=preprocess_label,
            cache_dir=cache_dir,
            device=device,
            progress=False,
            on_epoch=_reporter(news, f"{ds_entry.label}/{target_entry.model}"),
            watermark=target_entry.watermark,
            gro=target_entry.gro,
        )
        model, meta = train_one(train_cfg)
        guarded = model
        if whole:  # Zhu et al.'s target: the whole half, for the epochs its leave-one-out twin's early stopping chose
            model, meta = train_one(whole_training(train_cfg, meta["metrics"]["train"]), split="whole")
    # the guard measures the leave-one-out twin where the target trained on every interaction
    # (its test items are in training), and a whole target's rows hold no held-out accuracy
    metrics = with_guard(guarded, ctx.loo, meta.get("metrics", {}), split_cfg.target_seed, device)
    if whole:  # its valid / test figures are fit on training items: kept under another name
        leaky = ("test_ranks", "valid_items", "valid", "test")
        metrics = {
            **{key: value for key, value in metrics.items() if key not in leaky},
            "fit": {"valid": metrics.get("valid"), "test": metrics.get("test")},
        }
    meta = {**meta, "metrics": metrics}
    model = model.cpu().eval()
    train = ctx.target if whole else ctx.loo.train
    spec = TargetSpec.from_training_log(model, train, name=f"{ds_entry.name}/{target_entry.model}")
    if getattr(model, "sequential", False):
        return spec, sequential_run_data(ds_entry, target_entry, ctx, model, meta, max_k, device)
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


def whole_training(train_cfg: dict[str, Any], twin: dict[str, Any]) -> dict[str, Any]:
    """The train config of a target trained on every interaction (``split.target_training:
    whole``): its leave-one-out twin's best epoch (``twin``: that training's summary, its epochs
    already scaled to the log, so not scaled again), no early stopping (its validation items are
    training items, so no refit either) and one validation, at the end."""
    from raysteal.training.config import for_chosen_epochs  # loads torch (the package): imported where it is used

    epochs = int(twin.get("best_epoch") or twin.get("epochs_run") or train_cfg.get("epochs", 1))
    # its validation items are training items already: nothing to refit on
    return {**train_cfg, **for_chosen_epochs(epochs), "eval_every": epochs, "refit": False}


def with_guard(model, loo, metrics: dict, seed: int, device: str) -> dict:
    """The target's metrics plus the popularity guard (:mod:`raysteal.training.guard`): ``guard``
    (the target beside the popularity recommender on the same users and protocol, and the lift),
    ``test_ranks`` (each user's full-ranking test rank, ``-1``: none) and ``valid_items`` (what
    the rows' accuracy columns exclude besides the training items)."""
    # loads torch: imported where it is used, so this module loads without it
    from raysteal.training.guard import guard_figures

    model.to(device)
    figures, ranks = guard_figures(model, loo, seed=seed, device=device)
    return {**metrics, "guard": figures, "test_ranks": ranks, "valid_items": np.asarray(loo.valid, dtype=np.int64)}


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


def sequential_run_data(ds_entry, target_entry, ctx, model, meta: dict, max_k: int, device: str):
    """Evaluation inputs of a sequential target: each user's history before the test item."""
    # loads torch: imported where it is used, so this module loads without it
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


def prepare_one_target(prepare, args: tuple, show: bool):
    """``ray.get`` of one target preparation (``prepare``: the remote ``prepare_target``, ``args``
    its arguments before ``news``), printing the target's training epochs to stderr when ``show``
    (``raysteal tune`` and ``raysteal simulate``, which prepare one target before anything else)."""
    import sys

    import ray

    news = news_queue() if show else None
    ref = prepare.remote(*args, news)
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=None if news is None else 2.0)
            show_news(news, lambda line: print(line, file=sys.stderr, flush=True))
            if ready:
                return ray.get(ref)
    finally:
        if news is not None:
            news.shutdown()


def news_queue():
    """A small queue actor (no CPU reserved) that target preparations report their epochs on."""
    from ray.util.queue import Queue

    return Queue(maxsize=10_000, actor_options={"num_cpus": 0})


def show_news(news, say) -> None:
    """Pass what the target trainings reported since the last look to ``say`` (one line each)."""
    if news is None:
        return
    try:
        items = news.get_nowait_batch(news.qsize())
    except Exception:  # noqa: BLE001 - progress display only
        return
    for item in items:
        say(target_epoch_message(item))


def guard_target(data, what: str, warn_at: float | None, required: float | None, say) -> str | None:
    """Report a prepared target beside popularity (``say``: one line), warn when its lift is under
    ``warn_at``, and return the one-line refusal when it is under ``required`` (else ``None``).
    ``what`` names the target and the dataset."""
    import warnings

    # loads torch: imported where it is used, so this module loads without it
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


def target_what(run: Run) -> str:
    """``MODEL [params] on DATASET`` for the guard's lines."""
    params = f" {json.dumps(run.target.params, sort_keys=True)}" if run.target.params else ""
    return f"{run.target.model}{params} on {run.dataset.name}"


# ---------------------------------------------------------------------------------- servers
def deploy_defense(
    spec: TargetSpec, data, defenses: list, ks, state_dir: Path, share: float
) -> tuple[TargetServerHandle, dict[int, dict[str, float]]]:
    """One ``TargetServer`` of the prepared target behind the defense chain ``defenses`` (its
    ledger journaled in ``state_dir``), and the columns each ``k`` in ``ks`` its rows share
    (the target kind's ``Evaluation.cost_columns``)."""
    # loads torch and pandas: imported where it is used, so this module loads without it
    from raysteal.experiment.evaluation import evaluation_of

    # loads torch and Ray: imported where it is used, so this module loads without it
    from raysteal.oracle.server import start_target_server

    spec.defenses = list(defenses)
    evaluation = evaluation_of(data)
    costs = {k: evaluation.cost_columns(spec, data, k) for k in ks}
    return start_target_server(spec, state_dir=state_dir, num_gpus=share, num_cpus=0), costs


def server_ledger(server: TargetServerHandle) -> dict[str, Any]:
    """The server's accounts so far (those of earlier invocations, when an experiment resumes)."""
    import ray

    # loads torch and Ray: imported where it is used, so this module loads without it
    from raysteal.oracle.server import owner_token

    ledger_ref: ray.ObjectRef[dict[str, Any]] = server.ledger.remote(owner_token(server))
    return ray.get(ledger_ref)


def query_log(server: TargetServerHandle):
    """Every request the server saw (its query log, a table)."""
    import ray

    # loads torch and Ray: imported where it is used, so this module loads without it
    from raysteal.oracle.server import owner_token

    return ray.get(server.query_log.remote(owner_token(server)))


def close_server(store: ResultStore, name: str, server: TargetServerHandle) -> None:
    """Write the server's query log as ``OUT/query_logs/<name>``, then stop it (also when the write fails)."""
    # loads torch and Ray: imported where it is used, so this module loads without it
    from raysteal.oracle.server import stop_target_server

    try:
        store.write_query_log(name, query_log(server))
    finally:
        stop_target_server(server)


# ---------------------------------------------------------------------------------- accounts
def ledger_budget(run: Run) -> int:
    """The attacker's account: the experiment's budget, else the attack's own query budget as the
    experiment wrote it, else unlimited."""
    if run.budget is not None:
        return run.budget
    own = run.spec["attack"].get("budget_queries")
    return -1 if own is None else int(own)


def attempt_account(rid: str, ledger: dict[str, Any]) -> str:
    """The server account of the next attempt at run ``rid``: ``rid``, then ``rid@1``, ``rid@2``, ...

    An attempt that died (a crashed worker, a killed experiment) spent queries but wrote no row;
    the ledger journal keeps what it spent, so reusing its account would hand the retry a smaller
    budget and silently change the experiment. Each attempt gets the whole budget on a new account
    and the query log keeps every attempt's queries under its own name. A DFME / BAHSD attempt
    that finds the answers an earlier one saved in the run's scratch directory trains on them and
    spends nothing on its account (the row's ``queries`` are the earlier attempt's)."""
    earlier = sum(1 for name in ledger if name == rid or name.startswith(rid + "@"))
    return rid if earlier == 0 else f"{rid}@{earlier}"


def open_attempt(server: TargetServerHandle, run: Run, ledger: dict[str, Any]) -> QueryClient:
    """Open the account of the next attempt at ``run`` (:func:`attempt_account`) with its whole
    budget, note it in ``ledger`` (the server's accounts so far) and return its client."""
    # loads torch and Ray: imported where it is used, so this module loads without it
    from raysteal.oracle.server import client_for

    account = attempt_account(run.id, ledger)
    ledger[account] = {"budget": ledger_budget(run), "spent": 0}
    return client_for(server, account, ledger_budget(run))


def open_accounts(servers: list[TargetServerHandle], accounts: list[str], budgets: list[int]) -> list[QueryClient]:
    """Open ``accounts[i]`` with ``budgets[i]`` queries on ``servers[i]``, all at once; their clients."""
    import ray

    # loads torch: imported where it is used, so this module loads without it
    from raysteal.oracle.client import QueryClient

    # loads torch and Ray: imported where it is used, so this module loads without it
    from raysteal.oracle.server import owner_token

    keys = ray.get([s.register_attacker.remote(a, b, owner_token(s)) for s, a, b in zip(servers, accounts, budgets)])
    return [QueryClient(a, info, key, actor=s) for s, a, (info, key) in zip(servers, accounts, keys)]


# ---------------------------------------------------------------------------------- attempts
def execute_one(run: Run, data, client: BlackBoxClient, aux_cache: str | None, workdir: str | None = None):
    """Ray task body: one run (``workdir``: its scratch directory, for runs that can resume)."""
    import torch

    # loads torch and pandas: imported where it is used, so this module loads without it
    from raysteal.experiment.evaluation import evaluation_for

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return evaluation_for(run).execute(run, data, client, device=worker_device(), workdir=workdir, aux_cache=aux_cache)


def crashed(err: Exception) -> bool:
    """A system failure worth one retry (the attack code did not raise: its process was lost)."""
    import ray.exceptions as rex

    return isinstance(err, (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError, rex.LocalRayletDiedError))


def failure_text(err: Exception) -> str:
    """What a failed task says: a raysteal error raised inside it as its own one-line message (not
    Ray's wrapped traceback), anything else as its repr."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, RaystealError):
        return f"{type(cause).__name__}: {cause}"
    return repr(err)


def concurrency_limit(max_concurrent: int | None = None) -> int:
    """How many runs may execute at once: ``max_concurrent``, else the cluster's CPUs now.

    Ray's own scheduling is not enough here: a task blocked in ``ray.get`` hands its CPU back
    (Ray docs, "Yielding Resources While Blocked"), and a run blocks on every query it sends its
    ``TargetServer``, so Ray alone starts every run of the grid at once -- all of them holding
    their data in memory and time-slicing the same cores."""
    if max_concurrent is not None:
        if max_concurrent < 1:
            raise ConfigError(f"max_concurrent must be >= 1, got {max_concurrent}")
        return int(max_concurrent)
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
