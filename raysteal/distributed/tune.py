"""``raysteal tune``: a Ray Tune sweep over one experiment cell's hyperparameters.

The target is prepared once (a Ray task, the same as ``raysteal run``) and deployed as one
``TargetServer``; every trial is an attacker of that server with its own account (budget) and
gets the prepared :class:`~raysteal.experiment.context.RunData` through the object store once
(``tune.with_parameters``). ASHA's time axis is the clone-training epoch: after each epoch a trial
reports the clone's agreement on the attacker's known users (:class:`EpochProbe`, the same
measures as the final row, on at most ``probe_users`` users). A driver-side callback
(:class:`RowWriter`) writes every trial's final row into the same Parquet results as
``raysteal run``: the full row for a trial that finished, the last epoch's measures for one ASHA
stopped (``tune_status``). Tune's own experiment directory (``storage_path``) lets a killed sweep
resume with ``Tuner.restore``: a sequential trial (DFME, BAHSD) that was mid-training then goes on
from the answers and student epoch it saved in ``OUT/partial/<run id>`` (the trial id is part of
the run id); the best configuration is written as a runnable experiment file.

Tuning on ``agr@k/heldout`` uses the simulator's ground truth on users the attacker knows but
never queried: it measures the attack's hyperparameters, as a researcher would, not an
attacker's own model selection.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ray.tune import Callback

from raysteal.atomic import write_text_atomically
from raysteal.data.splits import HEAD_FRACTION
from raysteal.errors import ConfigError, RaystealError
from raysteal.experiment.tune_config import PROBE_METRICS, SEQUENTIAL_PROBE_METRICS, TuneExperiment, apply_sample, best_experiment, candidate_values, is_sequential
from raysteal.results.store import ResultStore, run_id

TIME_ATTR = "epoch"
"""The reported field ASHA uses as time: clone-training epochs."""


# ------------------------------------------------------------------------------------- probe
class EpochProbe:
    """Agreement of a clone in training with the target, on the attacker's known users.

    Built from the run exactly as :func:`~raysteal.experiment.execute.execute_run` builds the
    attacker's knowledge (same seed), so its numbers at the last epoch are the row's
    ``agr@k``, ``agr@k/heldout``, ``agr@k/all``, ``agr@10`` and ``agr@10/heldout`` (Zhu et al.
    Eq. 3) when the attacker knows at most ``max_users`` users (else a seeded subset of them).
    """

    def __init__(self, run: dict[str, Any], data, device: str = "cpu", max_users: int = 4096):
        from raysteal.experiment.execute import build_knowledge

        knowledge = build_knowledge(run, data)
        n = knowledge.num_users
        rng = np.random.default_rng(np.random.SeedSequence([int(run["seed"]), 7]))
        self.rows = np.arange(n) if n <= max_users else np.sort(rng.choice(n, size=max_users, replace=False))
        queried = np.zeros(n, dtype=bool)
        if knowledge.query_users is not None:
            queried[knowledge.query_users] = True
        else:
            queried[:] = True
        self.queried = queried[self.rows]
        self.k = int(run["k"])
        self.width = max(self.k, 10)
        self.truth = data.truth_lists[knowledge.target_user_ids[self.rows]]
        self.seen = knowledge.target_data.select_users(self.rows, name="probe")
        self.device = device

    def lists(self, model, chunk: int = 2048) -> np.ndarray:
        """The model's top lists for the probe users, their known items excluded."""
        import torch

        from raysteal.metrics import topk_items

        out = np.empty((len(self.rows), self.width), dtype=np.int64)
        model.eval()
        with torch.no_grad():
            for start in range(0, len(self.rows), chunk):
                stop = min(start + chunk, len(self.rows))
                scores = model.score(torch.as_tensor(self.rows[start:stop], device=self.device)).float().cpu()
                lo, hi = self.seen.indptr[start], self.seen.indptr[stop]
                exclude = (self.seen.indptr[start : stop + 1] - lo, self.seen.items[lo:hi])
                out[start:stop] = np.asarray(topk_items(scores, self.width, exclude=exclude))
        return out

    def __call__(self, model) -> dict[str, float]:
        from raysteal.metrics import agreement_at_k, mean

        lists = self.lists(model)
        agr_k = np.asarray(agreement_at_k(self.truth[:, : self.k], lists[:, : self.k]))
        agr_10 = np.asarray(agreement_at_k(self.truth[:, :10], lists[:, :10]))
        held = ~self.queried
        return {
            "agr@k": mean(agr_k[self.queried]),
            "agr@k/heldout": mean(agr_k[held]) if held.any() else math.nan,
            "agr@k/all": mean(agr_k),
            "agr@10": mean(agr_10[self.queried]),
            "agr@10/heldout": mean(agr_10[held]) if held.any() else math.nan,
        }


class SequentialEpochProbe:
    """Agreement of a student in training with a sequential teacher, on a seeded subset of the
    evaluation users (their real histories; the final row scores all of them): Yue et al.'s
    Agr@1 / Agr@10 and BAHSD's head / tail split, as in
    :func:`~raysteal.experiment.execute_sequential.execute_sequential_run`."""

    def __init__(self, run: dict[str, Any], data, device: str = "cpu", max_users: int = 1024):
        n = len(data.eval_users)
        rng = np.random.default_rng(np.random.SeedSequence([int(run["seed"]), 7]))
        self.rows = np.arange(n) if n <= max_users else np.sort(rng.choice(n, size=max_users, replace=False))
        self.sequences = data.eval_sequences[self.rows]
        self.teacher = data.teacher_lists[self.rows]
        self.is_head = data.head_mask(run["split"].get("head_fraction", HEAD_FRACTION))[self.rows]
        self.device = device

    def __call__(self, model) -> dict[str, float]:
        from raysteal.extraction.evaluate import extraction_metrics, student_lists

        lists = np.asarray(student_lists(model, self.sequences, max(10, self.teacher.shape[1]), device=self.device))
        return {k: float(v) for k, v in extraction_metrics(lists, self.teacher, head=self.is_head).items()}


# ------------------------------------------------------------------------------------- trial
@dataclass
class TrialSetup:
    """What every trial shares (put in the object store once by ``tune.with_parameters``)."""

    sweep: str
    base_run: dict[str, Any]
    server: Any  # TargetServer actor handle
    server_owner: str  # its owner token: trials open their own accounts (runner code; attack code gets only its client)
    report_epochs: bool  # per-epoch reports (the metric is a probe metric)
    costs: dict[int, dict[str, float]] = field(default_factory=dict)  # defense cost columns by k
    aux_cache: str | None = None
    probe_users: int = 4096
    out_dir: str | None = None  # the sweep's results directory: resumable trials keep their scratch under it


def trial_run(setup_base: dict[str, Any], sweep: str, config: dict[str, Any], trial_id: str) -> dict[str, Any]:
    """The run a trial executes: the base run with its sample; the trial id makes it unique."""
    run = apply_sample(setup_base, config)
    run["tune"] = {"sweep": sweep, "trial": trial_id}
    return run


def _budget(run: dict[str, Any]) -> int:
    from raysteal.distributed.experiment_runner import _ledger_budget

    return _ledger_budget(run)


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def tune_trial(config: dict[str, Any], data=None, setup: TrialSetup | None = None) -> None:
    """Tune function trainable: one attack run against the shared server, reporting the probe's
    agreement after each clone epoch (when the metric is a probe metric) and the row at the end."""
    from ray import tune

    from raysteal.distributed.runtime import worker_device
    from raysteal.experiment.context import SequentialRunData
    from raysteal.experiment.execute import execute_run
    from raysteal.experiment.execute_sequential import execute_sequential_run
    from raysteal.oracle.server import client_for

    trial_id = tune.get_context().get_trial_id()
    run = trial_run(setup.base_run, setup.sweep, config, trial_id)
    rid = run_id(run)
    device = worker_device()
    client = client_for(setup.server, rid, _budget(run), owner=setup.server_owner)
    sequential = isinstance(data, SequentialRunData)
    probe_cls = SequentialEpochProbe if sequential else EpochProbe
    users = min(setup.probe_users, 1024) if sequential else setup.probe_users  # a student scores long histories
    probe = probe_cls(run, data, device, users) if setup.report_epochs else None
    node = ray_node_id()
    last: dict[str, Any] = {TIME_ATTR: 0}
    # a trial restarted after a killed sweep (Tuner.restore) goes on from its saved answers and
    # student epoch; the trial id is part of the run id, so the directory is the trial's own
    workdir = str(ResultStore(setup.out_dir).work_dir(rid)) if sequential and setup.out_dir else None

    def on_epoch(epoch: int, stats: dict[str, Any]) -> None:
        last[TIME_ATTR] = epoch
        if probe is None:
            return
        metrics = {
            **probe(stats["model"]),
            TIME_ATTR: epoch,
            "loss": float(stats["loss"]),
            "phase": stats.get("phase", "student"),
            "queries": client.spent,
            "run_id": rid,
            "node_id": node,
        }
        tune.report(metrics)

    if sequential:
        row = execute_sequential_run(run, data, client, device=device, on_epoch=on_epoch, workdir=workdir)
        # a trial resumed after its last epoch reports no epoch; its row says how far it trained
        last[TIME_ATTR] = last[TIME_ATTR] or int(row.get("info/epochs_run") or 0)
    else:
        row = execute_run(run, data, client, device=device, aux_cache=setup.aux_cache, on_epoch=on_epoch)
    row.update(setup.costs.get(int(run["k"]), {}))
    row.update(sweep=setup.sweep, tune_trial=trial_id, tune_epochs=int(last[TIME_ATTR]), tune_config=json.dumps({k: _py(v) for k, v in config.items()}))
    tune.report({**_numeric(row), TIME_ATTR: last[TIME_ATTR], "run_id": rid, "node_id": node, "row": json.dumps(row, default=str)})


def ray_node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


# ------------------------------------------------------------------------------ driver side
class RowWriter(Callback):
    """Tune callback (driver side): each finished trial's row into the ResultStore.

    A trial that ran to the end reported its full row; one that ASHA stopped gets a row from its
    last epoch report (``tune_status = "stopped_early"``, measures not taken are absent).
    """

    def __init__(self, out_dir: str, sweep: str, base_run: dict[str, Any]):
        self.out_dir = str(out_dir)
        self.sweep = sweep
        self.base_run = base_run

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = dict(trial.last_result or {})
        if "row" in result:
            row = json.loads(result["row"])
            row["tune_status"] = "completed"
        else:
            row = self.partial_row(trial.trial_id, dict(trial.config), result)
        ResultStore(self.out_dir).write_row(row["run_id"], row)

    def partial_row(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """The row of a trial stopped before its end: what its last epoch report measured."""
        import raysteal
        from raysteal.attacks import make_attack_config
        from raysteal.experiment.config import is_sequential_target

        run = trial_run(self.base_run, self.sweep, config, trial_id)
        sequential = is_sequential_target(run["target"]["model"])
        if sequential:
            from raysteal.extraction import make_extraction_config

            cfg = make_extraction_config(run["attack"])
        else:
            cfg = make_attack_config(run["attack"])
        measured = SEQUENTIAL_PROBE_METRICS if sequential else PROBE_METRICS
        row: dict[str, Any] = {
            "run_id": str(result.get("run_id") or run_id(run)),
            "experiment": run["experiment"],
            "dataset": run["dataset"]["name"],
            "preprocess": run["dataset"]["preprocess"],
            "target": run["target"]["model"],
            "target_params": run["target"]["params"],
            "attack": cfg.attack,
            "clone": str(cfg.student.get("model")) if sequential else cfg.clone,
            "seed": int(run["seed"]),
            "k": int(run["k"]),
            "defense": run["defenses"],
            "budget": _budget(run),
            **{key: run["split"][key] for key in ("attacker_fraction", "auxiliary_size", "item_overlap", "query_fraction")},
            "hyperparameters": cfg.model_dump(mode="json"),
            **{m: float(result[m]) for m in measured + ("queries",) if m in result},
            "node_id": str(result.get("node_id", "")),
            "code_version": raysteal.__version__,
            "sweep": self.sweep,
            "tune_trial": trial_id,
            "tune_epochs": int(result.get(TIME_ATTR, 0)),
            "tune_config": json.dumps({k: _py(v) for k, v in config.items()}),
            "tune_status": "stopped_early",
        }
        for key, value in cfg.model_dump(mode="json").items():
            if isinstance(value, (int, float, str, bool)) and key not in ("attack", "clone", "k"):
                row[f"hp/{key}"] = value
        return row


def tune_param_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The validated search space as Ray Tune sampling objects."""
    from ray import tune

    makers = {
        "uniform": tune.uniform,
        "quniform": tune.quniform,
        "loguniform": tune.loguniform,
        "qloguniform": tune.qloguniform,
        "randint": lambda lo, hi: tune.randint(int(lo), int(hi)),
        "qrandint": lambda lo, hi, q: tune.qrandint(int(lo), int(hi), int(q)),
        "lograndint": lambda lo, hi: tune.lograndint(int(lo), int(hi)),
        "randn": tune.randn,
        "choice": tune.choice,
        "grid": tune.grid_search,
    }
    out = {}
    for key, spec in space.items():
        (name, args), = spec.items()
        out[key] = makers[name](args) if name in ("choice", "grid") else makers[name](*args)
    return out


def planned_epochs(tune_exp: TuneExperiment) -> int:
    """The most clone-training epochs a trial can run (``epochs + finetune_epochs``, the largest
    values the search space can draw)."""
    if is_sequential(tune_exp):
        from raysteal.extraction import make_extraction_config

        cfg = make_extraction_config(tune_exp.base_run()["attack"])
    else:
        from raysteal.attacks import make_attack_config

        cfg = make_attack_config(tune_exp.base_run()["attack"])

    def most(name: str) -> int:
        spec = tune_exp.search_space.get(f"attack.{name}")
        if spec is None:
            return int(getattr(cfg, name))
        (dist, args), = spec.items()
        return int(max(candidate_values(dist, args)))

    return most("epochs") + (most("finetune_epochs") if hasattr(cfg, "finetune_epochs") else 0)


def _scheduler(tune_exp: TuneExperiment):
    settings = tune_exp.tune
    if settings.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    asha = settings.scheduler
    return ASHAScheduler(
        time_attr=TIME_ATTR,
        # default: one past the longest attack, so a trial that trains to its end is never cut at its last epoch
        max_t=asha.max_t or max(planned_epochs(tune_exp) + 1, asha.grace_period),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
        brackets=asha.brackets,
    )


def _searcher(settings):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if settings.searcher is None:
        # a SearchGenerator takes its own concurrency limit (Tune ignores max_concurrent_trials for it)
        return BasicVariantGenerator(random_state=settings.seed, max_concurrent=settings.max_concurrent or 0)
    if settings.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=settings.seed)
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(random_state_seed=settings.seed)


def _possible_ks(tune_exp: TuneExperiment, base_k: int) -> list[int] | None:
    """Every K a trial may use (None when K is searched over a range too wide to list)."""
    spec = tune_exp.search_space.get("k")
    if spec is None:
        return [base_k]
    (name, args), = spec.items()
    if name in ("choice", "grid"):
        return sorted({int(v) for v in args})
    if name in ("randint", "qrandint", "lograndint") and args[1] - args[0] <= 64:
        step = int(args[2]) if name == "qrandint" else 1
        return list(range(int(args[0]), int(args[1]) + (1 if name == "qrandint" else 0), step))
    return None


def _max_k(tune_exp: TuneExperiment, base_k: int) -> int:
    ks = _possible_ks(tune_exp, base_k)
    if ks is not None:
        return max(max(ks), 10)
    (name, args), = tune_exp.search_space["k"].items()
    return max(int(max(candidate_values(name, args))), 10)


@dataclass
class TuneOutcome:
    """What a sweep produced."""

    best_config: dict[str, Any]
    best_metric: float
    best_run_id: str
    best_file: Path
    trials: int
    completed: int
    stopped_early: int
    errored: int
    experiment_path: str
    resumed: bool


def _storage_root(out_dir: Path, storage: str | None) -> str:
    if storage:
        return storage.rstrip("/") if "://" in storage else str(Path(storage).resolve())
    return str((out_dir / "tune").resolve())


def _check_same_sweep(out_dir: Path, tune_exp: TuneExperiment) -> None:
    """A results directory holds one sweep: refuse to resume a different file into it."""
    spec_file = out_dir / "tune_spec.json"
    text = tune_exp.to_json()
    if spec_file.is_file() and spec_file.read_text() != text:
        raise ConfigError(f"{out_dir} holds a sweep of a different tune file (see {spec_file}); use another --out")
    write_text_atomically(spec_file, text)


def run_tune(
    tune_exp: TuneExperiment,
    out_dir: str | Path,
    address: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    num_cpus: int | None = None,
    storage: str | None = None,
    verbose: int = 1,
) -> TuneOutcome:
    """Run (or resume) the sweep; rows land in ``OUT/runs``, the best configuration in
    ``OUT/best.yaml``. ``storage`` (default ``OUT/tune``) may be a shared path or a URI
    (``s3://...``, ``gs://...``) every node can reach."""
    from raysteal.distributed.experiment_runner import _defense_cost, _prepare_target, prepare_one_target
    from raysteal.distributed.runtime import check_fits, gpu_share, init_ray
    from raysteal.oracle.server import owner_token, start_target_server, stop_target_server

    out = Path(out_dir).resolve()
    _check_same_sweep(out, tune_exp)
    ResultStore(out).clear_finished_work()  # a kill between a trial's row and its scratch removal
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save the sweep's state often: a kill loses little
    init_ray(address, num_cpus=num_cpus)
    import ray
    from ray import tune

    settings = tune_exp.tune
    base = tune_exp.base_run()
    share = gpu_share()
    check_fits(settings.resources.cpu, share if settings.resources.gpu is None else settings.resources.gpu, "tune.resources: a trial")
    prepare = ray.remote(_prepare_target).options(num_cpus=1, num_gpus=share)
    spec, data = prepare_one_target(prepare, (base["dataset"], base["split"], base["target"], _max_k(tune_exp, int(base["k"])), data_dir, cache_dir),
                                    show=verbose > 0)
    spec.defenses = list(base["defenses"])
    costs = {k: _defense_cost(spec, data, k) for k in (_possible_ks(tune_exp, int(base["k"])) or [])}
    session = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    server_name = f"tune-{tune_exp.name}-{session}"
    server = start_target_server(spec, state_dir=out / "ledgers" / server_name, num_gpus=share, num_cpus=0)
    setup = TrialSetup(
        sweep=tune_exp.name,
        base_run=base,
        server=server,
        server_owner=owner_token(server),
        report_epochs=settings.metric in (SEQUENTIAL_PROBE_METRICS if is_sequential(tune_exp) else PROBE_METRICS),
        costs=costs,
        aux_cache=str(Path(cache_dir) if cache_dir else out / "cache"),
        out_dir=str(out),
    )
    gpu = share if settings.resources.gpu is None else settings.resources.gpu
    trainable = tune.with_resources(tune.with_parameters(tune_trial, data=data, setup=setup), {"cpu": settings.resources.cpu, "gpu": gpu})
    storage_root = _storage_root(out, storage)
    path = f"{storage_root}/{tune_exp.name}"
    resumed = tune.Tuner.can_restore(path)
    try:
        if resumed:
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, restart_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=tune_param_space(tune_exp.search_space),
                tune_config=tune.TuneConfig(
                    metric=settings.metric,
                    mode=settings.mode,
                    scheduler=_scheduler(tune_exp),
                    search_alg=_searcher(settings),
                    num_samples=settings.num_samples,
                    max_concurrent_trials=settings.max_concurrent if settings.searcher else None,
                    reuse_actors=True,  # a trial's worker (torch, raysteal imported) serves the next trial
                ),
                run_config=tune.RunConfig(
                    name=tune_exp.name,
                    storage_path=storage_root,
                    callbacks=[RowWriter(str(out), tune_exp.name, base)],
                    verbose=verbose,
                ),
            )
        grid = tuner.fit()
    finally:
        try:
            ResultStore(out).write_query_log(server_name, ray.get(server.query_log.remote(owner_token(server))))
        finally:
            stop_target_server(server)
    return _finish(tune_exp, grid, out, path, resumed)


def _finish(tune_exp: TuneExperiment, grid, out: Path, path: str, resumed: bool) -> TuneOutcome:
    """Pick the best finished trial and write ``best.yaml``."""
    settings = tune_exp.tune
    sign = 1.0 if settings.mode == "max" else -1.0
    total, errored = len(grid), grid.num_errors
    finished = [r for r in grid if r.error is None and "row" in (r.metrics or {})]
    stopped = grid.num_terminated - len(finished)
    if errored:
        first = next(r.error for r in grid if r.error is not None)
        raise RaystealError(f"{errored} of {total} trial(s) of {tune_exp.name!r} failed (run the same command again to retry them); first error: {first!r}")
    if grid.num_terminated < total:
        raise RaystealError(f"sweep {tune_exp.name!r} did not finish ({grid.num_terminated} of {total} trials done); run the same command again to resume it")
    scored = [r for r in finished if isinstance(r.metrics.get(settings.metric), (int, float)) and not math.isnan(r.metrics[settings.metric])]
    if not scored:
        raise RaystealError(f"no finished trial of {tune_exp.name!r} reported {settings.metric!r}")
    best = max(scored, key=lambda r: sign * r.metrics[settings.metric])
    sample = {k: _py(v) for k, v in best.config.items()}
    value = float(best.metrics[settings.metric])
    raw = best_experiment(tune_exp, sample, note=f"{settings.metric} = {value:.4f} ({settings.mode}) over {total} trials, trial {best.metrics.get('trial_id', '')}.")
    best_file = write_text_atomically(out / "best.yaml", yaml.safe_dump(raw, sort_keys=False))
    return TuneOutcome(
        best_config=sample,
        best_metric=value,
        best_run_id=str(best.metrics.get("run_id", "")),
        best_file=best_file,
        trials=total,
        completed=len(finished),
        stopped_early=stopped,
        errored=errored,
        experiment_path=path,
        resumed=resumed,
    )
