"""The evidence of a Tune search, from its trials' per-epoch reports: the best configurations and
what each searched setting does.

Read from Tune's own ``result.json`` files under ``OUT/tune`` (one JSON line per reported epoch),
so a search that is still running or was interrupted can be read too. Settings are compared at a
*common epoch* — the latest epoch every trial reached — because ASHA stops most trials early and
a trial's peak grows with the epochs it was allowed. A model-based searcher (TPE) samples where it
expects good values, so these marginals are correlations, not ablations: an ablation file (each
component switched off around the best configuration) measures what a component adds.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from raysteal.errors import ConfigError
from raysteal.metrics.curves import peak_index
from raysteal.metrics.curves import smoothed as smoothed_curve
from raysteal.report.figures import pyplot, save_figure

TIME_COLUMN = "training_iteration"
CATEGORICAL_AT_MOST = 6
"""A searched setting with at most this many distinct values is compared value by value."""
SMOOTHING_EPOCHS = 5
"""Width of the centred moving average that smooths a trial's per-epoch curve: the peak of a
long noisy curve (the maximum of 120 probes) overstates where the trial is; the peak of its
moving average does much less."""


def trial_curves(tune_dir: str | os.PathLike, curves_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per (trial, reported epoch): the trial id, ``epoch``, every numeric metric it
    reported and its sampled settings as ``config/<key>`` columns. Torn last lines are skipped.

    Tune starts a restored trial's ``result.json`` afresh, so epochs a trial reported before a
    sweep was resumed are read from ``curves_dir`` (default: ``tune_curves`` beside ``tune_dir``,
    one JSON file of probe measures by epoch per trial, :class:`~raysteal.distributed.tune.EpochLog`)
    where ``result.json`` no longer has them.

    A trial's last report is its finished row (``row`` in it), scored on every user the row scores
    rather than the per-epoch probe's users; it enters the curve only at an epoch no probe measured,
    so a curve is one measure throughout (what ``tune_trials``' peak and last value are read from)."""
    rows, finished = [], []
    for path in sorted(Path(tune_dir).rglob("result.json")):
        for line in path.read_text().splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if TIME_COLUMN not in result or "trial_id" not in result:
                continue
            row = {"trial_id": result["trial_id"], "epoch": int(result[TIME_COLUMN])}
            row.update({k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            row.update({f"config/{k}": v for k, v in (result.get("config") or {}).items()})
            (finished if "row" in result else rows).append(row)
    logged = Path(curves_dir) if curves_dir is not None else Path(tune_dir).parent / "tune_curves"
    kept = []
    for path in sorted(logged.glob("*.json")) if logged.is_dir() else []:
        try:
            epochs = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        kept += [{"trial_id": path.stem, **measures, "epoch": int(epoch)} for epoch, measures in epochs.items()]
    if not rows and not kept and not finished:
        raise ConfigError(f"{tune_dir}: no Tune trial results (result.json) found")
    # result.json's probe reports first: they win where both have an epoch; a finished row last
    frame = pd.DataFrame(rows + kept + finished)
    settings = [c for c in frame.columns if c.startswith("config/")]
    if settings and kept:  # the logged epochs take their trial's settings from its result.json reports
        frame[settings] = frame.groupby("trial_id")[settings].transform(lambda column: column.ffill().bfill())
    frame = frame.drop_duplicates(["trial_id", "epoch"], keep="first")
    for trial_id, config in _taken_settings(Path(tune_dir).parent).items():  # trials taken --from elsewhere
        for key, value in config.items():
            column = f"config/{key}"
            if column not in frame.columns:
                frame[column] = None
            frame[column] = frame[column].astype(object)
            frame.loc[(frame["trial_id"] == trial_id) & frame[column].isna(), column] = value
    return frame.sort_values(["trial_id", "epoch"], ignore_index=True)


def _taken_settings(out_dir: Path) -> dict[str, dict]:
    """The sampled settings of the trials a sweep took ``--from`` elsewhere
    (``OUT/tune_imported.json``), by trial id: they ran no ``result.json`` here."""
    path = out_dir / "tune_imported.json"
    try:
        trials = json.loads(path.read_text()).get("trials", []) if path.is_file() else []
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(t["trial_id"]): dict(t.get("config") or {}) for t in trials if isinstance(t, dict) and "trial_id" in t}


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def smoothed(values: pd.Series, window: int = SMOOTHING_EPOCHS) -> pd.Series:
    """The centred moving average of a per-epoch curve over ``window`` epochs (fewer at its ends;
    :func:`raysteal.metrics.curves.smoothed`, the curve ``tune.peak_window`` chooses the best by)."""
    return smoothed_curve(values, window)


def trial_table(curves: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Per trial: peak of ``metric`` over its epochs, the epoch of the peak, epochs reported, the
    last value, the peak of the smoothed curve (:func:`smoothed`) and its epoch, and its settings;
    best peak first."""
    if metric not in curves.columns:
        raise ConfigError(f"metric {metric!r} was never reported; reported: {sorted(c for c in curves.columns if '@' in c)}")
    settings = [c for c in curves.columns if c.startswith("config/")]
    out = []
    for trial, part in curves.groupby("trial_id", sort=False):
        values = part[metric].astype(float)
        if values.notna().sum() == 0:
            continue
        # by position (the first peak, NaN skipped: what idxmax/idxmin pick), not by index label
        best = int(peak_index(values.to_numpy(), mode) or 0)
        smooth = smoothed(values).to_numpy()
        smooth_best = int(peak_index(smooth, mode) or 0)
        row = {
            "trial": trial,
            "peak": float(values.iloc[best]),
            "peak_epoch": int(part["epoch"].iloc[best]),
            "epochs": int(part["epoch"].max()),
            "last": float(values.iloc[-1]),
            "smoothed_peak": float(smooth[smooth_best]),
            "smoothed_epoch": int(part["epoch"].iloc[smooth_best]),
        }
        row.update({c[len("config/") :]: part[c].iloc[-1] for c in settings})
        out.append(row)
    table = pd.DataFrame(out)
    return table.sort_values("peak", ascending=(mode != "max"), ignore_index=True)


def curve_table(curves: pd.DataFrame, metric: str, trials: list[str], every: int = 10) -> pd.DataFrame:
    """Learning curves side by side: per trial (in the order given), its smoothed ``metric``
    (:func:`smoothed`) at epoch 1 and every ``every``-th epoch up to the last any of them reached;
    NaN past a trial's last epoch."""
    if every < 1:
        raise ConfigError(f"curve_table: every must be at least 1, got {every}")
    last = int(curves.loc[curves["trial_id"].isin(trials), "epoch"].max())
    epochs = sorted({1, *range(every, last + 1, every), last})
    rows = []
    for trial in trials:
        part = curves[curves["trial_id"] == trial]
        smooth = pd.Series(smoothed(part[metric]).to_numpy(), index=part["epoch"].to_numpy())
        rows.append({"trial": trial, **{str(e): float(smooth.get(e, np.nan)) for e in epochs}})
    return pd.DataFrame(rows)


def curve_figure(curves: pd.DataFrame, metric: str, trials: list[str], path: Path, labels: dict[str, str] | None = None) -> Path:
    """A PNG of the given trials' per-epoch ``metric``: each raw curve faint, its smoothed curve
    (:func:`smoothed`) over it, labelled by ``labels`` (default: the trial id)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for trial in trials:
        part = curves[curves["trial_id"] == trial]
        (line,) = ax.plot(part["epoch"], smoothed(part[metric]), linewidth=1.6, label=(labels or {}).get(trial, trial))
        ax.plot(part["epoch"], part[metric].astype(float), linewidth=0.6, alpha=0.35, color=line.get_color())
    ax.set_xlabel("student epoch")
    ax.set_ylabel(f"{metric} (per-epoch probe)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    save_figure(fig, path)
    return path


def common_epoch(curves: pd.DataFrame) -> int:
    """The latest epoch every trial reported (at least 1)."""
    return max(1, int(curves.groupby("trial_id")["epoch"].max().min()))


def setting_effects(curves: pd.DataFrame, metric: str, epoch: int) -> pd.DataFrame:
    """What each searched setting does at ``epoch``: per value of a categorical setting the trials'
    mean and std of ``metric``; for a numeric one Spearman's rank correlation with ``metric``."""
    at = curves[curves["epoch"] == epoch].set_index("trial_id")
    rows = []
    for column in sorted(c for c in curves.columns if c.startswith("config/")):
        name = column[len("config/") :]
        values = at[column]
        scores = at[metric].astype(float)
        distinct = values.map(_fmt).nunique()
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if distinct <= CATEGORICAL_AT_MOST or not numeric:
            for value, group in scores.groupby(values.map(_fmt)):
                rows.append(
                    {
                        "setting": name,
                        "value": value,
                        "trials": int(group.notna().sum()),
                        "mean": float(group.mean()),
                        "std": float(group.std()) if len(group) > 1 else math.nan,
                        "spearman": math.nan,
                    }
                )
        else:
            pair = pd.DataFrame({"x": values.astype(float), "y": scores}).dropna()
            rho = float(pair["x"].rank().corr(pair["y"].rank())) if len(pair) > 2 else math.nan
            rows.append(
                {
                    "setting": name,
                    "value": f"{pair['x'].min():.3g} to {pair['x'].max():.3g}",
                    "trials": len(pair),
                    "mean": float(pair["y"].mean()) if len(pair) else math.nan,
                    "std": math.nan,
                    "spearman": rho,
                }
            )
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    lines = [
        "| " + " | ".join("–" if isinstance(v, float) and math.isnan(v) else _fmt(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, *lines])


def trial_labels(trials: pd.DataFrame) -> dict[str, str]:
    """A short label per trial: its id and, for a search of at most three settings (a grid), their values."""
    settings = [c for c in trials.columns if "." in c]
    if not settings or len(settings) > 3:
        return {str(t): str(t) for t in trials["trial"]}
    return {
        str(row["trial"]): f"{row['trial']} " + ", ".join(f"{c.split('.')[-1]}={_fmt(row[c])}" for c in settings)
        for _, row in trials.iterrows()
    }


def search_evidence(
    tune_dir: str | os.PathLike, metric: str, mode: str = "max", top: int = 10, figure: Path | None = None, curves_top: int = 6
) -> str:
    """A Markdown page: the trials, the ``top`` best by their peak, the learning curves of the
    ``curves_top`` best (a table, and with ``figure`` a PNG written there and linked), and what
    each setting does at the common epoch (module docstring)."""
    curves = trial_curves(tune_dir)
    trials = trial_table(curves, metric, mode)
    epoch = common_epoch(curves)
    leaders = [str(t) for t in trials["trial"].head(curves_top)]
    curve_lines = []
    if leaders:
        every = max(1, int(curves["epoch"].max()) // 10)
        curve_lines = [
            f"## Learning curves of the {len(leaders)} best trials",
            "",
            f"`{metric}` smoothed over {SMOOTHING_EPOCHS} epochs (a centred moving average), every {every} epochs; "
            "`smoothed_peak` above is the top of this curve, less flattered by noise than `peak`.",
            "",
            _markdown(curve_table(curves, metric, leaders, every)),
            "",
        ]
        if figure is not None:
            curve_figure(curves, metric, leaders, figure, trial_labels(trials))
            curve_lines += [f"![learning curves]({figure.name})", ""]
    reached = trials["epochs"].value_counts().sort_index(ascending=False)
    lines = [
        f"# Search evidence: `{metric}` ({mode})",
        "",
        f"{len(trials)} trials; epochs reported → trials: " + ", ".join(f"{e}: {n}" for e, n in reached.items()) + ".",
        "",
        f"## The {min(top, len(trials))} best trials by their peak over all reported epochs",
        "",
        _markdown(trials.head(top)),
        "",
        *curve_lines,
        f"## What each setting does, at epoch {epoch} (the latest epoch every trial reached)",
        "",
        "Categorical settings: the trials' mean and std of the metric per value; numeric ones: Spearman's rank "
        "correlation with it. The searcher chose these values, so read them as correlations, not ablations.",
        "",
        _markdown(setting_effects(curves, metric, epoch)),
        "",
    ]
    return "\n".join(lines)


def best_value(tune_dir: str | os.PathLike, metric: str, mode: str = "max") -> float:
    """The best peak of ``metric`` over the trials (NaN when none reported it)."""
    trials = trial_table(trial_curves(tune_dir), metric, mode)
    return float(trials["peak"].iloc[0]) if len(trials) else float(np.nan)
