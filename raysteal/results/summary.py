"""Mean ± std over seeds per cell, beside the paper's value (what ``raysteal run`` prints)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from raysteal.data.splits import HEAD_FRACTION

CELL_COLUMNS = ["experiment", "dataset", "target", "attack", "setting", "variant", "clone", "k", "defense", "budget", "attacker_fraction", "auxiliary_size", "item_overlap"]
AXES_WHEN_VARIED = {"head_fraction": HEAD_FRACTION}
"""Settings that are a cell column only where they vary (a grid axis), with the value rows from
before the setting existed were computed at."""
DEFAULT_METRICS = ["agr@k", "agr@k/heldout", "agr@10"]
VARIANT_COLUMNS = ["preprocess", "target_params"]


def cell_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that identify a cell: the fixed ones present in ``frame``, plus every attack
    hyperparameter (``hp/...``) that varies within it (a grid axis)."""
    fixed = [c for c in CELL_COLUMNS if c in frame.columns]
    by = [c for c in ("attack", "clone") if c in frame.columns]
    hp = [c for c in frame.columns if c.startswith("hp/")]
    varying = [c for c in hp if by and (frame.groupby(by, dropna=False)[c].nunique(dropna=False) > 1).any()]
    # the same dataset or target name with other preprocessing / parameters is another cell
    names = [c for c in ("dataset", "target") if c in frame.columns]
    variants = [c for c in VARIANT_COLUMNS if c in frame.columns and names
                and (frame[c].map(str).groupby([frame[n] for n in names], dropna=False).nunique() > 1).any()]
    axes = [c for c in AXES_WHEN_VARIED if c in frame.columns and frame[c].nunique(dropna=False) > 1]
    return fixed + variants + axes + sorted(varying)


GAINS = {"gain_over_teacher/ndcg@10": ("student_ndcg@10", "teacher_ndcg@10"), "gain_over_teacher/hr@10": ("student_hr@10", "teacher_hr@10")}
"""Derived per-run columns: the student's own next-item accuracy relative to its teacher's
(BAHSD's "gain over the teacher"; 0.0498 would be its claimed +4.98%)."""


def with_derived_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus the :data:`GAINS` columns its rows can give (``student / teacher - 1``;
    NaN where the teacher scores 0 or a part is missing); computed, never stored. Rows from
    before a setting of :data:`AXES_WHEN_VARIED` existed get the value they were computed at."""
    out = frame
    for name, default in AXES_WHEN_VARIED.items():
        if name in frame.columns and frame[name].isna().any():
            out = frame.copy() if out is frame else out
            out[name] = out[name].fillna(default)
    for name, (student, teacher) in GAINS.items():
        if name in frame.columns or student not in frame.columns or teacher not in frame.columns:
            continue
        if out is frame:
            out = frame.copy()
        base = pd.to_numeric(frame[teacher], errors="coerce")
        out[name] = pd.to_numeric(frame[student], errors="coerce") / base.where(base > 0) - 1.0
    return out


def summarize(frame: pd.DataFrame, metrics: list[str] | None = None, paper: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per cell: ``metric`` mean and std over seeds, run count, and the paper's value."""
    if frame.empty:
        return frame
    frame = with_derived_metrics(frame)
    metrics = [m for m in (metrics or DEFAULT_METRICS) if m in frame.columns]
    keys = cell_columns(frame)
    grouped = frame.groupby(keys, dropna=False, sort=True)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{m} {stat}" for m, stat in out.columns]
    out["seeds"] = grouped.size()
    out["queries"] = grouped["queries"].mean() if "queries" in frame.columns else np.nan
    out = out.reset_index()
    if paper:
        out["paper"] = [paper.get(f"{r.dataset}/{r.target}/{r.attack}", np.nan) for r in out.itertuples()]
    return out


def format_cell(mean: float, std: float) -> str:
    """``mean ± std``; the mean alone where there is no spread to give (one seed)."""
    if np.isnan(mean):
        return "–"
    return f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def summary_markdown(frame: pd.DataFrame, metrics: list[str] | None = None, paper: dict[str, float] | None = None) -> str:
    """The summary as a Markdown table (mean ± std over seeds)."""
    table = summarize(frame, metrics, paper)
    if table.empty:
        return "_no results_"
    metrics = [m for m in (metrics or DEFAULT_METRICS) if f"{m} mean" in table.columns]
    # map(str), not astype(str): pandas 3 keeps NaN missing under astype(str), and nunique() drops it,
    # so a hyperparameter one run set and another left unset would look constant
    varying = [c for c in cell_columns(table) if table[c].map(str).nunique() > 1 or c in ("dataset", "target", "attack")]
    queries = [] if "queries" in metrics else ["queries"]  # asked for as a metric: shown once, there
    header = varying + metrics + (["paper"] if "paper" in table.columns else []) + ["seeds"] + queries
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [_plain(r[c]) for c in varying]
        cells += [format_cell(r[f"{m} mean"], r[f"{m} std"]) for m in metrics]
        if "paper" in table.columns:
            cells.append("–" if np.isnan(r["paper"]) else f"{r['paper']:.4f}")
        cells.append(str(int(r["seeds"])))
        if queries:
            cells.append("–" if np.isnan(r["queries"]) else f"{r['queries']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plain(value) -> str:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if parsed == []:
            return "none"
        if isinstance(parsed, list):
            return "+".join(",".join(f"{k}={v}" for k, v in d.items()) if isinstance(d, dict) else str(d) for d in parsed)
        return value
    if isinstance(value, float):
        return "–" if np.isnan(value) else f"{value:g}"
    return str(value)
