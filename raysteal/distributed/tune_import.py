"""Trials of the same sweep run elsewhere (``raysteal tune --from DIR``).

A sweep too long for one machine's sitting can go on in another checkout from what the first
published: DIR's ``tune_trials.parquet`` (or ``.json``), the per-trial summary ``raysteal tune``
writes when a sweep ends, or else the sweep's rows (``runs/``, or the ``results.parquet`` that
``raysteal report`` exports), which an interrupted sweep has too: one row per trial that finished
or that the scheduler stopped, never one for a trial cut off by the interruption. A trial is taken
only when it belongs to this very
sweep: its run id is recomputed from this tune file's base run, the sweep name, the trial's
sampled configuration and its trial id, and must equal the id it recorded. Taken trials count
towards ``num_samples`` (only the rest run), enter the choice of the best trial like any other,
and a model-based searcher (Optuna) is told their results before it suggests anything.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

from raysteal.atomic import copy_atomically, write_text_atomically
from raysteal.errors import ConfigError, DataFileError
from raysteal.experiment.tune_config import TuneExperiment
from raysteal.results.reproduction import check_sources

CURVES_DIR = "tune_curves"
"""``OUT/tune_curves/<trial id>.json``: every epoch's probe measures of a trial
(:class:`~raysteal.distributed.tune.EpochLog`)."""

IMPORTS_FILE = "tune_imported.json"
"""``OUT/tune_imported.json``: the trials a sweep took ``--from`` elsewhere (so a resumed sweep
counts them without reading the source again)."""

SUMMARY_STEM = "tune_trials"


def _trials_file(source: Path) -> Path | None:
    for name in (f"{SUMMARY_STEM}.parquet", f"{SUMMARY_STEM}.json"):
        if (source / name).is_file():
            return source / name
    return None


def _trials_from_rows(source: Path, sweep: str, metric: str) -> list[dict[str, Any]]:
    """The trials of ``sweep`` that ``source``'s rows record (a finished or scheduler-stopped trial
    has one row; rows of other sweeps and of ``raysteal run`` are skipped)."""
    from raysteal.results.store import ResultStore  # loads pandas: only where a sweep takes trials from elsewhere

    store = ResultStore(source)
    if store.runs_dir.is_dir():
        frame = store.load()
    elif store.results_file.is_file():
        import pandas as pd  # loads pandas: as above

        frame = pd.read_parquet(store.results_file)
    else:
        raise ConfigError(f"--from {source}: no {SUMMARY_STEM}.parquet or .json there, and no rows (runs/ or results.parquet) of a sweep")
    if frame.empty or "tune_trial" not in frame.columns or "sweep" not in frame.columns:
        return []
    trials = []
    for row in frame[frame["sweep"] == sweep].to_dict("records"):
        completed = row.get("tune_status") == "completed"
        trials.append(
            {
                "trial_id": row["tune_trial"],
                "status": "completed" if completed else "stopped_early",
                "run_id": row["run_id"],
                "config": row.get("tune_config") or "{}",
                "peak_value": row.get("tune_peak"),
                "peak_epoch": row.get("tune_peak_epoch"),
                "peak_phase": row.get("tune_peak_phase") if isinstance(row.get("tune_peak_phase"), str) else "",
                "peak_phase_epoch": row.get("tune_peak_phase_epoch"),
                "last_value": row.get("tune_last"),
                "final_value": row.get(metric) if completed else None,
                "epochs_run": row.get("tune_epochs"),
            }
        )
    return trials


def _whole(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 0


def read_trials(source: str | Path, sweep: str = "", metric: str = "") -> list[dict[str, Any]]:
    """Every trial that ``source`` (a sweep's ``OUT`` or its published folder) records: its trial
    summary, else the rows of sweep ``sweep`` (``metric``: the value a finished row scored); the
    configuration as a dict."""
    path = _trials_file(Path(source))
    if path is None:
        trials = _trials_from_rows(Path(source), sweep, metric)
        return [{**t, "config": json.loads(t["config"]) if isinstance(t["config"], str) else dict(t["config"])} for t in trials]
    try:
        if path.suffix == ".json":
            trials = json.loads(path.read_text())["trials"]
        else:
            import pandas as pd  # loads pandas: only where a sweep takes trials from elsewhere

            trials = pd.read_parquet(path).to_dict("records")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataFileError(f"{path}: not a trial summary of raysteal tune ({err})") from None
    out = []
    for trial in trials:
        config = trial.get("config")
        out.append({**trial, "config": json.loads(config) if isinstance(config, str) else dict(config or {})})
    return out


def _number(value: Any) -> float | None:
    """A finite number (NumPy's included, as pandas reads them), else ``None``."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) else None


def _summary_of(trial: dict[str, Any], source: Path) -> dict[str, Any]:
    """``trial`` in the shape :func:`~raysteal.distributed.tune.trial_summary` gives, marked as
    taken from ``source``."""
    return {
        "trial_id": str(trial["trial_id"]),
        "status": str(trial.get("status") or "completed"),
        "run_id": str(trial["run_id"]),
        "config": trial["config"],
        "peak_value": _number(trial.get("peak_value")),
        "peak_epoch": _whole(trial.get("peak_epoch")),
        "peak_phase": str(trial.get("peak_phase") or ""),
        "peak_phase_epoch": _whole(trial.get("peak_phase_epoch")),
        "last_value": _number(trial.get("last_value")),
        "final_value": _number(trial.get("final_value")),
        "epochs_run": _whole(trial.get("epochs_run")),
        "epochs_reported": _whole(trial.get("epochs_reported")),
        "imported_from": str(source),
    }


def earlier_trials(tune_exp: TuneExperiment, sources: list[Path]) -> list[dict[str, Any]]:
    """The scored trials of this sweep that ``sources`` hold (each once; the first source wins),
    as trial summaries. A source none of whose trials belongs to this sweep is a ``ConfigError``:
    it is another sweep's (another base, name or code version)."""
    from raysteal.distributed.tune import trial_run  # loads Ray: only where a sweep runs

    if any(spec and next(iter(spec)) == "grid" for spec in tune_exp.search_space.values()):
        raise ConfigError("--from: a sweep with grid keys runs every point num_samples times; it cannot take trials from elsewhere")
    base = tune_exp.base_run()
    taken: dict[str, dict[str, Any]] = {}
    for source in sources:
        trials = read_trials(source, tune_exp.name, tune_exp.tune.metric)
        mine = [t for t in trials if trial_run(base, tune_exp.name, t["config"], str(t["trial_id"])).id == str(t.get("run_id"))]
        if trials and not mine:
            raise ConfigError(
                f"--from {source}: none of its {len(trials)} trials belongs to sweep {tune_exp.name!r} of this file "
                "(their run ids differ from this file's: another base experiment, sweep name or version)"
            )
        for trial in mine:
            summary = _summary_of(trial, Path(source))
            if summary["peak_value"] is not None:
                taken.setdefault(summary["trial_id"], summary)
    return list(taken.values())


def trials_for_sweep(out: Path, tune_exp: TuneExperiment, sources: list[Path], started: bool) -> list[dict[str, Any]]:
    """The trials this sweep counts as run elsewhere: read from ``sources`` when the sweep starts
    (and recorded in ``OUT/tune_imported.json``), read back from that record when it resumes.
    ``--from`` on a sweep that started without it is a ``ConfigError`` (its searcher never saw them)."""
    record = out / IMPORTS_FILE
    if record.is_file():
        saved = json.loads(record.read_text())
        if sources and sorted(str(Path(s).resolve()) for s in sources) != saved["sources"]:
            raise ConfigError(
                f"--from: {out}'s sweep took its trials from {', '.join(saved['sources'])}; give those, or none, to resume it"
            )
        return saved["trials"]
    if not sources:
        return []
    if started:
        raise ConfigError(f"--from: the sweep in {out} started without it; resume it without --from, or start one in a fresh --out")
    check_sources(sources)
    trials = earlier_trials(tune_exp, sources)
    copy_curves(trials, out)
    copy_rows(trials, out)
    payload = {"sources": sorted(str(Path(s).resolve()) for s in sources), "trials": trials}
    write_text_atomically(record, json.dumps(payload, indent=2, default=str))
    return trials


def copy_curves(trials: list[dict[str, Any]], out: Path) -> list[str]:
    """Copy each taken trial's per-epoch curve (``<its source>/tune_curves/<trial id>.json``, where
    the source published one) into ``OUT/tune_curves``, so the search report draws it beside the
    trials run here; a curve already there is kept. Returns the trial ids whose curve was copied."""
    copied = []
    for trial in trials:
        name = f"{trial['trial_id']}.json"
        source, target = Path(trial["imported_from"]) / CURVES_DIR / name, out / CURVES_DIR / name
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(target, source.read_text())
            copied.append(str(trial["trial_id"]))
    return copied


def copy_rows(trials: list[dict[str, Any]], out: Path) -> list[str]:
    """Copy each taken trial's row (``<its source>/runs/<run id>.parquet``, or its row of the
    source's published ``results.parquet``) into ``OUT/runs``, so that ``raysteal report OUT``
    exports every trial of the sweep, those taken included, as one ``results.parquet`` to publish;
    a row already there is kept, and a trial whose source kept no row (a trial summary alone) has
    none. Returns the run ids whose row was copied."""
    from raysteal.results.store import ResultStore, published_rows  # loads pandas: only where a sweep takes trials

    store = ResultStore(out)
    done = store.finished()
    published: dict[Path, dict[str, Any]] = {}
    copied = []
    for trial in trials:
        rid, source = str(trial["run_id"]), ResultStore(Path(trial["imported_from"]))
        if rid in done:
            continue
        if (source.runs_dir / f"{rid}.parquet").is_file():
            copy_atomically(source.runs_dir / f"{rid}.parquet", store.runs_dir / f"{rid}.parquet")
        elif not source.runs_dir.is_dir() and source.results_file.is_file():
            rows = published.setdefault(source.root, published_rows(source.results_file))
            if rid not in rows:
                continue
            store.import_row(rid, rows[rid])
        else:
            continue
        copied.append(rid)
    return copied
