"""``raysteal tune``: a Ray Tune sweep over one experiment cell's hyperparameters.

The target is prepared once (a Ray task, the same as ``raysteal run``) and deployed as one
``TargetServer``; every trial is an attacker of that server with its own account (budget) and
gets the prepared :class:`~raysteal.experiment.context.RunData` through the object store once
(``tune.with_parameters``). ASHA's time axis is the clone-training epoch: after each epoch a trial
reports the clone's agreement through its target kind's probe
(:mod:`raysteal.experiment.evaluation`: the same measures as the final row, on at most
``probe_users`` users). A driver-side callback
(:class:`RowWriter`) writes every trial's final row into the same Parquet results as
``raysteal run``: the full row for a trial that finished, the last epoch's measures for one ASHA
stopped (``tune_status``). Tune's own experiment directory (``storage_path``) lets a killed sweep
resume with ``Tuner.restore``: a sequential trial (DFME, BAHSD) that was mid-training then goes on
from the answers and student epoch it saved in ``OUT/partial/<run id>`` (the trial id is part of
the run id), and a model-based searcher (Optuna) goes on from its saved study.

Agreement often peaks before a trial's last epoch, so every trial keeps its running peak
(:class:`PeakTracker`: the best value of the metric over all the epochs it reported, and that
epoch; with ``tune.peak_window`` > 1, of its centred moving average) and reports it with every result (``tune_peak``, ``tune_peak_epoch``, ...). The best trial
is the one with the best peak, ASHA-stopped trials included, and ``OUT/best.yaml`` is its
configuration with the attack's epoch counts cut to the peak epoch
(:func:`~raysteal.experiment.tune_config.epoch_overrides`): students train deterministically from
the seed, so running it ends where the trial peaked. ``OUT/tune_trials.json`` (and ``.parquet``)
lists every trial's configuration, peak value and epoch, last value and epochs run, with the rule;
``OUT/tune_curves/<trial id>.json`` keeps every epoch's probe measures of each trial
(:class:`EpochLog`), which a restored trial's ``result.json`` no longer holds.

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
from typing import TYPE_CHECKING, Any, TypeGuard

import yaml
from ray.tune import Callback

from raysteal.atomic import write_text_atomically
from raysteal.distributed.deploy import close_server, deploy_defense, ledger_budget, prepare_one_target, prepare_task, start_ray
from raysteal.distributed.runtime import check_fits, worker_device
from raysteal.distributed.tune_import import CURVES_DIR, trials_for_sweep
from raysteal.errors import ConfigError, RaystealError
from raysteal.experiment.evaluation import evaluation_for
from raysteal.experiment.execute import row_head
from raysteal.experiment.run import Run
from raysteal.experiment.tune_config import (
    RULE_FINAL,
    RULE_PEAK,
    TuneExperiment,
    apply_sample,
    best_experiment,
    candidate_values,
    epoch_overrides,
    rule_smoothed_peak,
)
from raysteal.metrics.curves import peak_index, smoothed
from raysteal.oracle.server import client_for, owner_token
from raysteal.provenance import code_commit
from raysteal.results.store import ResultStore
from raysteal.training.cpu_memory import release_freed_memory

if TYPE_CHECKING:  # annotations only: the server module is imported where a sweep runs
    from raysteal.oracle.server import TargetServerHandle

TIME_ATTR = "epoch"
"""The reported field ASHA uses as time: clone-training epochs."""

PEAK_KEY = "tune_peak"
"""The reported field holding a trial's best value of the metric so far (what a model-based
searcher optimises; the best trial is chosen by it)."""

PEAK_FILE = "tune_peaks.json"
"""A resumable trial's reported epochs, in its scratch directory (a trial resumed mid-training
does not report its earlier epochs again)."""


SUMMARY_FILE = "tune_trials"
"""``OUT/tune_trials.json`` / ``.parquet``: every trial's peak, last value and epochs."""


# -------------------------------------------------------------------------------------- peak
class PeakTracker:
    """A trial's metric over the epochs it reported, and its peak.

    ``update(epoch, value, phase, phase_epoch)`` after each epoch; :meth:`fields` are reported
    with every result: ``tune_peak`` (best value so far; ``mode`` max or min; NaN values never
    peak; the earliest epoch wins a tie), ``tune_peak_epoch`` (its epoch, counted across phases,
    Tune's time axis), ``tune_peak_phase`` / ``tune_peak_phase_epoch`` (where in the attack, see
    :func:`~raysteal.experiment.tune_config.epoch_overrides`), ``tune_last`` (the latest epoch's
    value) and ``tune_epochs_reported``. With ``window`` > 1 (``tune.peak_window``) the peak is that of
    the curve's centred moving average over ``window`` epochs (its value and its epoch), so one
    lucky probe does not make a trial the best. With ``path`` the epochs are kept in that JSON file, so
    a trial resumed mid-training knows the epochs it reported before; an epoch reported again
    (training restarted from there) replaces it and every later one."""

    def __init__(self, mode: str = "max", path: str | os.PathLike | None = None, window: int = 1):
        self.mode = mode
        self.window = int(window)
        self.sign = 1.0 if mode == "max" else -1.0
        self.path = Path(path) if path is not None else None
        self.epochs: dict[int, tuple[float, str, int]] = {}
        if self.path is not None and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
                self.epochs = {int(e): (float(v), str(ph), int(pe)) for e, (v, ph, pe) in saved.items()}
            except (ValueError, TypeError):  # unreadable: the epochs reported from now on still count
                self.epochs = {}

    def update(self, epoch: int, value: Any, phase: str, phase_epoch: int) -> None:
        epoch = int(epoch)
        value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        self.epochs = {e: v for e, v in self.epochs.items() if e < epoch}
        self.epochs[epoch] = (value, str(phase), int(phase_epoch))
        if self.path is not None:
            write_text_atomically(self.path, json.dumps({str(e): list(v) for e, v in self.epochs.items()}))

    def peak(self) -> tuple[int, tuple[float, str, int]] | None:
        """The peak epoch and its (value, phase, phase epoch): the raw value, or with ``window`` > 1
        the value of the centred moving average (:func:`raysteal.metrics.curves.smoothed`)."""
        ordered = sorted(self.epochs.items())
        curve = [v[0] for _, v in ordered]
        if self.window > 1:
            curve = smoothed(curve, self.window).tolist()
        at = peak_index(curve, self.mode)
        if at is None:
            return None
        epoch, (_, phase, phase_epoch) = ordered[at]
        return epoch, (float(curve[at]), phase, phase_epoch)

    def fields(self) -> dict[str, Any]:
        best = self.peak()
        last = self.epochs[max(self.epochs)][0] if self.epochs else math.nan
        if best is None:
            return {
                PEAK_KEY: math.nan,
                "tune_peak_epoch": 0,
                "tune_peak_phase": "",
                "tune_peak_phase_epoch": 0,
                "tune_last": last,
                "tune_epochs_reported": len(self.epochs),
            }
        epoch, (value, phase, phase_epoch) = best
        return {
            PEAK_KEY: value,
            "tune_peak_epoch": epoch,
            "tune_peak_phase": phase,
            "tune_peak_phase_epoch": phase_epoch,
            "tune_last": last,
            "tune_epochs_reported": len(self.epochs),
        }


class EpochLog:
    """A trial's numeric probe measures by epoch, kept in one JSON file under ``OUT/tune_curves``.

    Tune starts a restored trial's ``result.json`` afresh, so after a killed sweep resumes, the
    epochs a trial reported before are gone from it; this file keeps them (the search report's
    learning curves read both, :func:`raysteal.report.search.trial_curves`). Like
    :class:`PeakTracker`, an epoch reported again replaces it and every later one. Written
    atomically each epoch."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.epochs: dict[int, dict[str, float]] = {}
        if self.path.is_file():
            try:
                self.epochs = {int(e): {str(k): float(v) for k, v in m.items()} for e, m in json.loads(self.path.read_text()).items()}
            except (ValueError, TypeError, AttributeError):  # unreadable: the epochs from now on are still kept
                self.epochs = {}

    def record(self, epoch: int, measures: dict[str, Any]) -> None:
        epoch = int(epoch)
        self.epochs = {e: m for e, m in self.epochs.items() if e < epoch}
        self.epochs[epoch] = {k: float(v) for k, v in measures.items() if _is_number(v)}
        write_text_atomically(self.path, json.dumps({str(e): m for e, m in sorted(self.epochs.items())}))


# ------------------------------------------------------------------------------------- probe
# ------------------------------------------------------------------------------------- trial
@dataclass
class TrialSetup:
    """What every trial shares (put in the object store once by ``tune.with_parameters``)."""

    sweep: str
    base_run: Run
    server: TargetServerHandle
    server_owner: str  # its owner token: trials open their own accounts (runner code; attack code gets only its client)
    report_epochs: bool  # per-epoch reports (the metric is a probe metric)
    costs: dict[int, dict[str, float]] = field(default_factory=dict)  # defense cost columns by k
    aux_cache: str | None = None
    probe_users: int = 4096
    out_dir: str | None = None  # the sweep's results directory: resumable trials keep their scratch under it
    metric: str | None = None  # the searched metric: each trial tracks its peak (PeakTracker)
    mode: str = "max"
    peak_window: int = 1  # tune.peak_window: the peak of the metric's centred moving average


def trial_run(setup_base: Run, sweep: str, config: dict[str, Any], trial_id: str) -> Run:
    """The run a trial executes: the base run with its sample; the trial id makes it unique."""
    return apply_sample(setup_base, config).replace(tune={"sweep": sweep, "trial": trial_id})


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def tune_trial(config: dict[str, Any], data=None, setup: TrialSetup | None = None) -> None:
    """Tune function trainable: one attack run against the shared server, reporting the probe's
    agreement after each clone epoch (when the metric is a probe metric) and the row at the end.
    However it ends (ASHA's stop included), the worker's freed heap goes back to the kernel: Tune
    reuses the worker for the next trial, and CPU training keeps freed memory
    (:mod:`raysteal.training.cpu_memory`), so trial after trial a worker held its largest peak yet
    (11 GB each, two at a time, ended a BAHSD search on a 23 GB machine)."""
    try:
        _trial(config, data, setup)
    finally:
        release_freed_memory()


def _trial(config: dict[str, Any], data, setup: TrialSetup | None) -> None:
    """:func:`tune_trial`'s work."""
    from ray import tune

    if data is None or setup is None:  # both given by tune.with_parameters
        raise TypeError("tune_trial needs data= and setup= (tune.with_parameters(tune_trial, data=..., setup=...))")
    trial_id = tune.get_context().get_trial_id()
    run = trial_run(setup.base_run, setup.sweep, config, trial_id)
    rid = run.id
    device = worker_device()
    client = client_for(setup.server, rid, ledger_budget(run), owner=setup.server_owner)
    evaluation = evaluation_for(run)
    cap = evaluation.probe_user_cap
    users = setup.probe_users if cap is None else min(setup.probe_users, cap)
    probe = evaluation.probe(run, data, device, users) if setup.report_epochs else None
    node = ray_node_id()
    last: dict[str, Any] = {TIME_ATTR: 0, "phase": "student", "phase_epoch": 0}
    # a trial restarted after a killed sweep (Tuner.restore) goes on from its saved answers and
    # student epoch; the trial id is part of the run id, so the directory is the trial's own
    workdir = str(ResultStore(setup.out_dir).work_dir(rid)) if evaluation.keeps_work and setup.out_dir else None
    # the epochs it reported before are kept beside them (a resumed trial does not report them again)
    peaks = PeakTracker(setup.mode, Path(workdir) / PEAK_FILE if workdir and probe is not None else None, setup.peak_window)
    curve = EpochLog(Path(setup.out_dir) / CURVES_DIR / f"{trial_id}.json") if setup.out_dir and probe is not None else None

    def on_epoch(epoch: int, stats: dict[str, Any]) -> None:
        phase = str(stats.get("phase", "student"))
        phase_epoch = int(stats.get("phase_epoch", epoch))
        last.update({TIME_ATTR: epoch, "phase": phase, "phase_epoch": phase_epoch})
        if probe is None:
            return
        measured = probe(stats)
        if curve is not None:
            curve.record(epoch, measured)
        if setup.metric is not None:
            peaks.update(epoch, measured.get(setup.metric), phase, phase_epoch)
        metrics = {
            **measured,
            **peaks.fields(),
            TIME_ATTR: epoch,
            "loss": float(stats["loss"]),
            "phase": phase,
            "phase_epoch": phase_epoch,
            "queries": client.spent,
            "run_id": rid,
            "node_id": node,
        }
        tune.report(metrics)

    row = evaluation.execute(run, data, client, device=device, on_epoch=on_epoch, workdir=workdir, aux_cache=setup.aux_cache)
    # a trial resumed after its last epoch reports no epoch; its row says how far it trained
    last[TIME_ATTR] = last[TIME_ATTR] or int(row.get("info/epochs_run") or 0)
    row.update(setup.costs.get(run.k, {}))
    if probe is None and setup.metric is not None:  # a metric of the final row only: its one value is the peak
        peaks.update(int(last[TIME_ATTR]), row.get(setup.metric), last["phase"], int(last["phase_epoch"]) or int(last[TIME_ATTR]))
    peak = peaks.fields()
    row.update(
        sweep=setup.sweep,
        tune_trial=trial_id,
        tune_epochs=int(last[TIME_ATTR]),
        tune_config=json.dumps({k: _py(v) for k, v in config.items()}),
        **{key: peak[key] for key in ROW_PEAK_FIELDS if key in peak},
    )
    tune.report({**_numeric(row), **peak, TIME_ATTR: last[TIME_ATTR], "run_id": rid, "node_id": node, "row": json.dumps(row, default=str)})


ROW_PEAK_FIELDS = (PEAK_KEY, "tune_peak_epoch", "tune_last", "tune_peak_phase", "tune_peak_phase_epoch")
"""Peak columns every tune row carries (the trial's peak of the metric, its epoch, its last value,
the training phase and the epoch within it: what ``best.yaml`` cuts the epochs to; so a sweep's
rows alone, as ``raysteal report`` exports them, say what each trial reached)."""


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

    def __init__(self, out_dir: str, sweep: str, base_run: Run):
        self.out_dir = str(out_dir)
        self.sweep = sweep
        self.base_run = base_run

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled by ``Tuner.restore`` (the callbacks are the sweep's first sitting's): a sweep
        started by code that kept the base run in its JSON form gets it back as a :class:`Run`."""
        for name, value in state.items():
            setattr(self, name, Run.from_spec(value) if name == "base_run" and isinstance(value, dict) else value)

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

        run = trial_run(self.base_run, self.sweep, config, trial_id)
        evaluation, cfg = evaluation_for(run), run.attack
        row: dict[str, Any] = {
            **row_head(run, run.attack_name, evaluation.clone_name(run)),
            "run_id": str(result.get("run_id") or run.id),
            "budget": ledger_budget(run),
            **{key: getattr(run.split, key) for key in ("attacker_fraction", "auxiliary_size", "item_overlap", "query_fraction")},
            "hyperparameters": cfg.model_dump(mode="json"),
            **{m: float(result[m]) for m in evaluation.probe_metrics + ("queries",) if m in result},
            "node_id": str(result.get("node_id", "")),
            "code_version": raysteal.__version__,
            "code_commit": code_commit(),
            "sweep": self.sweep,
            "tune_trial": trial_id,
            "tune_epochs": int(result.get(TIME_ATTR, 0)),
            "tune_config": json.dumps({k: _py(v) for k, v in config.items()}),
            "tune_status": "stopped_early",
            **{key: result[key] for key in ROW_PEAK_FIELDS if key in result},
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
        ((name, args),) = spec.items()
        out[key] = makers[name](args) if name in ("choice", "grid") else makers[name](*args)
    return out


def planned_epochs(tune_exp: TuneExperiment) -> int:
    """The most clone-training epochs a trial can run (``epochs + finetune_epochs``, the largest
    values the search space can draw)."""
    cfg = tune_exp.base_run().attack

    def most(name: str) -> int:
        spec = tune_exp.search_space.get(f"attack.{name}")
        if spec is None:
            return int(getattr(cfg, name))
        ((dist, args),) = spec.items()
        return int(max(candidate_values(dist, args)))

    return most("epochs") + (most("finetune_epochs") if hasattr(cfg, "finetune_epochs") else 0)


def _scheduler(tune_exp: TuneExperiment):
    settings = tune_exp.tune
    if settings.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    asha = settings.scheduler
    return ASHAScheduler(
        # ASHA compares the metric itself at its rungs; the searcher learns from the trial's peak
        metric=settings.metric,
        mode=settings.mode,
        time_attr=TIME_ATTR,
        # default: one past the longest attack, so a trial that trains to its end is never cut at its last epoch
        max_t=asha.max_t or max(planned_epochs(tune_exp) + 1, asha.grace_period),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
        brackets=asha.brackets,
    )


def _searcher(settings, imported: list[dict[str, Any]] | None = None):
    """The search algorithm: random/grid sampling, or a model-based searcher that learns from each
    trial's peak (``tune_peak``, the value the best trial is chosen by), at most
    ``max_concurrent`` trials at a time (a model-based searcher suggests from what finished).

    Trials taken from elsewhere (``imported``, :mod:`raysteal.distributed.tune_import`) are told to
    Optuna as finished trials (their configurations and peaks) before it suggests anything; and
    the seed moves on by their number, so the new draws do not repeat the first sweep's."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    imported = imported or []
    seed = settings.seed if settings.seed is None or not imported else settings.seed + 7919 * len(imported)
    if settings.searcher is None:
        # a SearchGenerator takes its own concurrency limit (Tune ignores max_concurrent_trials for it)
        return BasicVariantGenerator(random_state=seed, max_concurrent=settings.max_concurrent or 0)
    if settings.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        known = (
            {"points_to_evaluate": [dict(t["config"]) for t in imported], "evaluated_rewards": [float(t["peak_value"]) for t in imported]}
            if imported
            else {}
        )
        searcher = OptunaSearch(metric=PEAK_KEY, mode=settings.mode, seed=seed, **known)  # TPESampler(seed=seed)
    else:
        from ray.tune.search.hyperopt import HyperOptSearch

        searcher = HyperOptSearch(metric=PEAK_KEY, mode=settings.mode, random_state_seed=seed)
    if settings.max_concurrent:
        from ray.tune.search import ConcurrencyLimiter

        searcher = ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent)
    return searcher


def _possible_ks(tune_exp: TuneExperiment, base_k: int) -> list[int] | None:
    """Every K a trial may use (None when K is searched over a range too wide to list)."""
    spec = tune_exp.search_space.get("k")
    if spec is None:
        return [base_k]
    ((name, args),) = spec.items()
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
    ((name, args),) = tune_exp.search_space["k"].items()
    return max(int(max(candidate_values(name, args))), 10)


@dataclass
class TuneOutcome:
    """What a sweep produced."""

    best_config: dict[str, Any]
    best_metric: float  # the best trial's peak (RULE_PEAK) or final value (RULE_FINAL)
    best_run_id: str
    best_file: Path
    trials: int
    completed: int
    stopped_early: int
    errored: int
    experiment_path: str
    resumed: bool
    rule: str = RULE_PEAK
    best_trial: str = ""
    best_epoch: int = 0  # the epoch the best trial peaked at (best.yaml trains to it)
    best_last: float = math.nan  # the best trial's value at its last reported epoch
    best_epochs_run: int = 0
    best_status: str = ""  # completed / stopped_early
    best_overrides: dict[str, Any] = field(default_factory=dict)  # epoch counts written into best.yaml
    summary_file: Path | None = None
    imported: int = 0  # trials taken --from elsewhere (counted in ``trials``)


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
    sources: list[Path] | None = None,
) -> TuneOutcome:
    """Run (or resume) the sweep; rows land in ``OUT/runs``, the best configuration in
    ``OUT/best.yaml``. ``storage`` (default ``OUT/tune``) may be a shared path or a URI
    (``s3://...``, ``gs://...``) every node can reach. ``sources``: directories holding trials of
    this very sweep run elsewhere (``--from``; :mod:`raysteal.distributed.tune_import`), counted
    towards ``num_samples`` and told to the searcher."""
    from ray import tune

    out = Path(out_dir).resolve()
    _check_same_sweep(out, tune_exp)
    storage_root = _storage_root(out, storage)
    path = f"{storage_root}/{tune_exp.name}"
    resumed = tune.Tuner.can_restore(path)
    imported = trials_for_sweep(out, tune_exp, list(sources or []), started=resumed)  # before any work: a bad --from is refused
    remaining = tune_exp.tune.num_samples - len(imported)
    if remaining <= 0 and not resumed:  # every trial was run elsewhere
        return _finish(tune_exp, _NoTrials(), out, path, resumed, imported)
    ResultStore(out).clear_finished_work()  # a kill between a trial's row and its scratch removal
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save the sweep's state often: a kill loses little
    share = start_ray(address, num_cpus)

    settings = tune_exp.tune
    base = tune_exp.base_run()
    check_fits(settings.resources.cpu, share if settings.resources.gpu is None else settings.resources.gpu, "tune.resources: a trial")
    spec, data = prepare_one_target(
        prepare_task(share),
        (base.spec["dataset"], base.spec["split"], base.spec["target"], _max_k(tune_exp, base.k), data_dir, cache_dir),
        show=verbose > 0,
    )
    session = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    server_name = f"tune-{tune_exp.name}-{session}"
    ks = _possible_ks(tune_exp, base.k) or []
    server, costs = deploy_defense(spec, data, base.defense_settings, ks, out / "ledgers" / server_name, share)
    setup = TrialSetup(
        sweep=tune_exp.name,
        base_run=base,
        server=server,
        server_owner=owner_token(server),
        report_epochs=settings.metric in evaluation_for(base).probe_metrics,
        costs=costs,
        aux_cache=str(Path(cache_dir) if cache_dir else out / "cache"),
        out_dir=str(out),
        metric=settings.metric,
        mode=settings.mode,
        peak_window=settings.peak_window,
    )
    gpu = share if settings.resources.gpu is None else settings.resources.gpu
    trainable = tune.with_resources(tune.with_parameters(tune_trial, data=data, setup=setup), {"cpu": settings.resources.cpu, "gpu": gpu})
    try:
        if resumed:
            # an errored trial resumes under its own id (its scratch state takes it on from its last
            # epoch): a restarted one gets a new id, which a model-based searcher never suggested
            # and refuses (Optuna: KeyError on its first result, ending the sweep)
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=tune_param_space(tune_exp.search_space),
                tune_config=tune.TuneConfig(
                    # no sweep-wide metric: ASHA is given settings.metric, a searcher the trial's peak
                    scheduler=_scheduler(tune_exp),
                    search_alg=_searcher(settings, imported),  # its own concurrency limit (max_concurrent)
                    num_samples=remaining,  # the trials taken from elsewhere count towards num_samples
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
        close_server(ResultStore(out), server_name, server)
    return _finish(tune_exp, grid, out, path, resumed, imported)


class _NoTrials(list):
    """The result grid of a sweep with nothing left to run here."""

    num_terminated = 0
    num_errors = 0


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_summary(trial_id: str, config: dict[str, Any], metrics: dict[str, Any], metric: str, status: str) -> dict[str, Any]:
    """One trial of the sweep: its configuration, the peak of ``metric`` and its epoch, the last
    reported value and the epochs run (from the trial's last result)."""
    final = json.loads(metrics["row"]).get(metric) if "row" in metrics else None
    if PEAK_KEY not in metrics:  # reported by code older than peak tracking: only its last value is known
        value = metrics.get(metric)
        metrics = {**metrics, PEAK_KEY: value, "tune_peak_epoch": metrics.get(TIME_ATTR), "tune_last": value}
    peak = metrics.get(PEAK_KEY)
    return {
        "trial_id": trial_id,
        "status": status,
        "run_id": str(metrics.get("run_id", "")),
        "config": {k: _py(v) for k, v in config.items()},
        "peak_value": float(peak) if _is_number(peak) else None,
        "peak_epoch": int(metrics.get("tune_peak_epoch") or 0),
        "peak_phase": str(metrics.get("tune_peak_phase", "")),
        "peak_phase_epoch": int(metrics.get("tune_peak_phase_epoch") or 0),
        "last_value": float(metrics["tune_last"]) if _is_number(metrics.get("tune_last")) else None,
        "final_value": float(final) if _is_number(final) else None,  # the finished row's value (all scored users)
        "epochs_run": int(metrics.get(TIME_ATTR) or 0),
        "epochs_reported": int(metrics.get("tune_epochs_reported") or 0),
        "imported_from": "",  # run here (a trial taken --from elsewhere names its source)
    }


def write_trial_summary(out: Path, summary: dict[str, Any]) -> Path:
    """``OUT/tune_trials.json`` (the rule, the best trial and every trial) and
    ``OUT/tune_trials.parquet`` (one row per trial, the configuration as JSON)."""
    import pandas as pd

    path = write_text_atomically(out / f"{SUMMARY_FILE}.json", json.dumps(summary, indent=2, default=str))
    frame = pd.DataFrame(
        [
            {**t, "config": json.dumps(t["config"], sort_keys=True), "metric": summary["metric"], "rule": summary["rule"]}
            for t in summary["trials"]
        ]
    )
    tmp = out / f".{SUMMARY_FILE}.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out / f"{SUMMARY_FILE}.parquet")
    return path


def planned_trials(tune_exp: TuneExperiment) -> int:
    """Trials the sweep runs in all: ``num_samples`` times the points of its ``grid`` keys."""
    points = 1
    for spec in tune_exp.search_space.values():
        ((name, args),) = spec.items()
        if name == "grid":
            points *= len(args)
    return tune_exp.tune.num_samples * points


def _check_grid(tune_exp: TuneExperiment, grid, imported: int = 0) -> None:
    """A sweep is summarised only when every planned trial started and ended and none failed (else:
    run it again). Interrupted (Ctrl-C), Tune hands back the trials it had started, the one in
    flight counted as ended: the count of started trials tells, and trials without any report.
    ``imported``: trials taken from elsewhere, which count as started and ended."""
    total, errored = len(grid), grid.num_errors
    planned = planned_trials(tune_exp)
    if total + imported < planned:
        raise RaystealError(
            f"sweep {tune_exp.name!r} did not finish ({total + imported} of {planned} trials started); run the same command again to resume it"
        )
    if errored:
        first = next(r.error for r in grid if r.error is not None)
        raise RaystealError(
            f"{errored} of {total} trial(s) of {tune_exp.name!r} failed (run the same command again to retry them); first error: {first!r}"
        )
    if grid.num_terminated < total:
        raise RaystealError(
            f"sweep {tune_exp.name!r} did not finish ({grid.num_terminated} of {total} trials done); run the same command again to resume it"
        )
    # a searcher that plans every trial up front (random, grid) hands back, interrupted, the ones
    # still waiting as ended: a trial that never reported an epoch never ran
    silent = sum(1 for r in grid if TIME_ATTR not in (r.metrics or {}))
    if silent:
        raise RaystealError(
            f"sweep {tune_exp.name!r} did not finish ({total - silent} of {total} trials ran, {silent} never started); "
            "run the same command again to resume it"
        )


def _best_trial(tune_exp: TuneExperiment, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The trial with the best peak (ties: a completed trial, then the earlier peak)."""
    settings = tune_exp.tune
    sign = 1.0 if settings.mode == "max" else -1.0
    scored = [t for t in trials if t["peak_value"] is not None]
    if not scored:
        raise RaystealError(f"no trial of {tune_exp.name!r} reported {settings.metric!r}")
    return max(scored, key=lambda t: (sign * t["peak_value"], t["status"] == "completed", -t["peak_epoch"]))


def _peak_overrides(tune_exp: TuneExperiment, best: dict[str, Any], rule: str) -> tuple[dict[str, Any], str]:
    """The attack's epoch counts that end the best trial's configuration at its peak epoch, and
    the rule as it then reads (the epochs are left as searched when no count ends that phase)."""
    try:
        run = apply_sample(tune_exp.base_run(), dict(best["config"]))
        return epoch_overrides(run.spec["attack"], best["peak_phase"], best["peak_phase_epoch"]), rule
    except ConfigError as err:  # say so: this best.yaml trains past the peak
        return {}, f"{rule.split(';')[0]}; epochs left as searched ({err})"


def _write_best(tune_exp: TuneExperiment, best: dict[str, Any], overrides: dict[str, Any], rule: str, total: int, out: Path) -> Path:
    """``OUT/best.yaml``: the best trial's configuration (epochs at its peak), with a header that
    says how it was chosen."""
    settings = tune_exp.tune
    sample = dict(best["config"])
    where = f"epoch {best['peak_epoch']} of {best['epochs_run']}" + (
        f" ({best['status'].replace('_', ' ')})" if best["status"] != "completed" else ""
    )
    last = f"{best['last_value']:.4f}" if best["last_value"] is not None else "n/a"
    window = settings.peak_window
    measure = settings.metric if window == 1 else f"{settings.metric} ({window}-epoch centred average)"
    note = (
        f"{measure} = {best['peak_value']:.4f} ({settings.mode}) at {where}, trial {best['trial_id']}, "
        f"over {total} trials; its last epoch gave {last}. Rule: {rule}."
    )
    raw = best_experiment(tune_exp, sample, note=note, attack_overrides=overrides)
    header = [
        f"Best configuration of the tune sweep {tune_exp.name!r} (raysteal tune).",
        f"Rule: {rule}.",
        f"Trial {best['trial_id']}: {measure} peaked at {best['peak_value']:.4f} ({settings.mode}) at {where}; last reported value {last}.",
    ]
    if overrides:
        seed = int(sample.get("seed", tune_exp.base_run().seed))
        header.append(
            "Epochs set to the peak epoch: "
            + ", ".join(f"attack.{k}: {v}" for k, v in overrides.items())
            + f"; the run of seed {seed} (the trial's) trains to that epoch, deterministically from the seed."
        )
        header.append(f"The peak was measured by the per-epoch probe ({evaluation_for(tune_exp.base_run()).probe_scope}).")
    header.append(f"Every trial: {SUMMARY_FILE}.json / {SUMMARY_FILE}.parquet beside this file.")
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(raw, sort_keys=False)
    return write_text_atomically(out / "best.yaml", text)


def _finish(
    tune_exp: TuneExperiment, grid, out: Path, path: str, resumed: bool, imported: list[dict[str, Any]] | None = None
) -> TuneOutcome:
    """Pick the best trial by its peak over all reported epochs (ASHA-stopped trials included, and
    ``imported`` ones, run elsewhere), write ``best.yaml`` with the attack's epochs set to that peak
    epoch, and the trial summary."""
    imported = imported or []
    _check_grid(tune_exp, grid, len(imported))
    settings = tune_exp.tune
    total = len(grid) + len(imported)
    finished = [r for r in grid if r.error is None and "row" in (r.metrics or {})]
    per_epoch = settings.metric in evaluation_for(tune_exp.base_run()).probe_metrics
    rule = (RULE_PEAK if settings.peak_window == 1 else rule_smoothed_peak(settings.peak_window)) if per_epoch else RULE_FINAL
    trials = [dict(t) for t in imported]
    for r in grid:
        metrics = dict(r.metrics or {})
        trial_id = str(metrics.get("trial_id") or Path(str(r.path)).name)
        status = "completed" if "row" in metrics else "stopped_early"
        trials.append(trial_summary(trial_id, dict(r.config or {}), metrics, settings.metric, status))
    best = _best_trial(tune_exp, trials)
    overrides, rule = _peak_overrides(tune_exp, best, rule) if per_epoch else ({}, rule)
    best_file = _write_best(tune_exp, best, overrides, rule, total, out)
    summary = {
        "sweep": tune_exp.name,
        "metric": settings.metric,
        "mode": settings.mode,
        "rule": rule,
        "searcher": settings.searcher or "random",
        "best": {**best, "attack_overrides": overrides, "best_file": str(best_file)},
        "imported": len(imported),
        "trials": trials,
    }
    return TuneOutcome(
        best_config=dict(best["config"]),
        best_metric=float(best["peak_value"]),
        best_run_id=best["run_id"],
        best_file=best_file,
        trials=total,
        completed=len(finished) + sum(t["status"] == "completed" for t in imported),
        stopped_early=grid.num_terminated - len(finished) + sum(t["status"] != "completed" for t in imported),
        errored=grid.num_errors,
        experiment_path=path,
        resumed=resumed,
        rule=rule,
        best_trial=best["trial_id"],
        best_epoch=best["peak_epoch"],
        best_last=math.nan if best["last_value"] is None else best["last_value"],
        best_epochs_run=best["epochs_run"],
        best_status=best["status"],
        best_overrides=overrides,
        summary_file=write_trial_summary(out, summary),
        imported=len(imported),
    )
