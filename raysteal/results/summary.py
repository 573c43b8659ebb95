"""Mean ± std over seeds per cell, beside the paper's value (what ``raysteal run`` prints)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from raysteal.data.splits import HEAD_FRACTION
from raysteal.errors import ConfigError

CELL_COLUMNS = [
    "experiment",
    "dataset",
    "target",
    "attack",
    "setting",
    "variant",
    "clone",
    "k",
    "defense",
    "budget",
    "attacker_fraction",
    "auxiliary_size",
    "item_overlap",
]
AXES_WHEN_VARIED = {"head_fraction": HEAD_FRACTION, "query_fraction": 0.8, "target_training": "leave_one_out", "attacker_unit": "users"}
"""Settings that are a cell column only where they vary (a grid axis), with the value rows from
before the setting existed were computed at."""
DEFAULT_METRICS = ["agr@k", "agr@k/heldout", "agr@10", "agr@k/lift"]
VARIANT_COLUMNS = ["preprocess", "target_params"]
NO_DEFENSE = "none"
"""The ``defense`` of a row whose target is served and trained without any defense."""


def _setting_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def defense_part(setting: Mapping[str, Any]) -> str:
    """One defense setting as ``type(key=value,...)``: its other keys sorted, unset (None) ones left out
    (``{"type": "popular_mixing", "n": 10}`` -> ``popular_mixing(n=10)``)."""
    args = ",".join(f"{key}={_setting_text(value)}" for key, value in sorted(setting.items()) if key != "type" and value is not None)
    return f"{setting['type']}({args})"


def defense_name(settings: Iterable[Mapping[str, Any]]) -> str:
    """The readable name results rows carry in ``defense``: each setting's :func:`defense_part`,
    joined by ``+`` in order (the target's own defenses first, then the serving chain);
    :data:`NO_DEFENSE` for none."""
    parts = [defense_part(s) for s in settings]
    return "+".join(parts) if parts else NO_DEFENSE


_DEFENSE_NAME = re.compile(r"^[a-z][a-z0-9_]*\([^()]*\)(\+[a-z][a-z0-9_]*\([^()]*\))*$")


def _named_defense_parts(value: str) -> list[dict[str, Any]] | None:
    """A :func:`defense_name` read back into settings (values as numbers where they are), or ``None``
    when ``value`` is not one."""
    if value == NO_DEFENSE:
        return []
    if not _DEFENSE_NAME.match(value):
        return None
    parts = []
    for part in value.split("+"):
        kind, _, args = part[:-1].partition("(")
        setting: dict[str, Any] = {"type": kind}
        for arg in filter(None, args.split(",")):
            key, _, text = arg.partition("=")
            try:
                setting[key] = json.loads(text)
            except ValueError:
                setting[key] = text
        parts.append(setting)
    return parts


def _defense_as_name(value: Any) -> Any:
    """A ``defense`` cell of a row written before rows named their defense (the serving chain as
    JSON, ``[]`` for none) as its :func:`defense_name`; anything else as it is."""
    if isinstance(value, str) and value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, list) and all(isinstance(d, dict) and "type" in d for d in parsed):
            return defense_name(parsed)
    return value


def cell_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that identify a cell: the fixed ones present in ``frame``, plus every attack
    hyperparameter (``hp/...``) that varies within it (a grid axis)."""
    fixed = [c for c in CELL_COLUMNS if c in frame.columns]
    by = [c for c in ("attack", "clone") if c in frame.columns]
    hp = [c for c in frame.columns if c.startswith("hp/")]
    varying = [c for c in hp if by and (frame.groupby(by, dropna=False)[c].nunique(dropna=False) > 1).any()]
    # the same dataset or target name with other preprocessing / parameters is another cell
    names = [c for c in ("dataset", "target") if c in frame.columns]
    variants = [
        c
        for c in VARIANT_COLUMNS
        if c in frame.columns and names and (frame[c].map(str).groupby([frame[n] for n in names], dropna=False).nunique() > 1).any()
    ]
    axes = [c for c in AXES_WHEN_VARIED if c in frame.columns and frame[c].nunique(dropna=False) > 1]
    return fixed + variants + axes + sorted(varying)


GAINS = {"gain_over_teacher/ndcg@10": ("student_ndcg@10", "teacher_ndcg@10"), "gain_over_teacher/hr@10": ("student_hr@10", "teacher_hr@10")}
"""Derived per-run columns: the student's own next-item accuracy relative to its teacher's
(BAHSD's "gain over the teacher"; 0.0498 would be its claimed +4.98%)."""
LIFTS = {"agr@k/lift": ("agr@k", "popularity_agr@k")}
"""Derived per-run columns: agreement normalised by the popularity floor of the same users,
``(agr - floor) / (1 - floor)`` — 0 at the popularity recommender's agreement, 1 at a perfect copy
(negative below popularity) — so that cells whose targets have different floors compare."""


def _gain(student: pd.Series, teacher: pd.Series) -> pd.Series:
    return student / teacher.where(teacher > 0) - 1.0


def _lift(agr: pd.Series, floor: pd.Series) -> pd.Series:
    return (agr - floor) / (1.0 - floor).where(floor < 1)


def _derivations():
    """``(column, (value, base), formula)`` of every derived column: :data:`GAINS`, then :data:`LIFTS`."""
    return [(name, cols, _gain) for name, cols in GAINS.items()] + [(name, cols, _lift) for name, cols in LIFTS.items()]


def with_derived_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus the :data:`GAINS` columns its rows can give (``student / teacher - 1``;
    NaN where the teacher scores 0 or a part is missing) and the :data:`LIFTS` columns
    (``(agr - floor) / (1 - floor)``; NaN where the floor is 1 or missing); computed, never stored. Rows from
    before a setting of :data:`AXES_WHEN_VARIED` existed get the value they were computed at."""
    out = frame
    if "defense" in frame.columns:  # rows written before ``defense`` named it held the serving chain as JSON
        named = frame["defense"].map(_defense_as_name)
        if not named.equals(frame["defense"]):
            out = frame.copy()
            out["defense"] = named
    if "target_defense" in frame.columns and frame["target_defense"].isna().any():
        out = frame.copy() if out is frame else out
        out["target_defense"] = out["target_defense"].fillna(NO_DEFENSE)  # rows from before the column: no target defense
    for name, default in AXES_WHEN_VARIED.items():
        if name in frame.columns and frame[name].isna().any():
            out = frame.copy() if out is frame else out
            out[name] = out[name].fillna(default)
    for name, (value, base), formula in _derivations():
        if name in frame.columns or value not in frame.columns or base not in frame.columns:
            continue
        if out is frame:
            out = frame.copy()
        out[name] = formula(pd.to_numeric(frame[value], errors="coerce"), pd.to_numeric(frame[base], errors="coerce"))
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
    for metric in filter(is_p_value, metrics):  # a mean of p-values says little: its median and largest
        out[f"{metric} median"] = grouped[metric].median()
        out[f"{metric} max"] = grouped[metric].max()
    out["seeds"] = grouped.size()
    out["queries"] = grouped["queries"].mean() if "queries" in frame.columns else np.nan
    if paper:  # matched on each cell's rows: a key may name a setting that is not a cell column
        parsed = [(parse_paper_key(key), value) for key, value in paper.items()]
        values = [_paper_match(parsed, row) for row in frame.to_dict("records")]
        # the same grouping as ``out``'s, so its cells come in the same order
        out["paper"] = frame.assign(_paper=values).groupby(keys, dropna=False, sort=True)["_paper"].first().to_numpy(dtype=float)
    return out.reset_index()


class PaperKey(NamedTuple):
    """A key of an experiment's ``paper:`` mapping, parsed: ``dataset/target/attack``, optionally
    ``[column=value, ...]`` naming one setting of a grid (``ml-1m/bpr/ptq[rank_loss=hinge,item_loss=bpr]``,
    ``ml-1m/lmf/ptaq[auxiliary_size=1.0]``). A column is a row column or an attack hyperparameter
    (``rank_loss`` is ``hp/rank_loss``); values compare as numbers where both sides are numbers (a
    defense setting counts as the items it mixes in), else as text."""

    dataset: str
    target: str
    attack: str
    conditions: tuple[tuple[str, str], ...] = ()


_PAPER_KEY = re.compile(r"^(?P<base>[^\[\]]+?)(?:\[(?P<conditions>[^\[\]]*)\])?$")


def parse_paper_key(key: str) -> PaperKey:
    """``key`` as a :class:`PaperKey`; a malformed one is a ``ConfigError`` naming it."""
    match = _PAPER_KEY.match(str(key).strip())
    parts = match["base"].split("/") if match else []
    if match is None or len(parts) != 3 or not all(p.strip() for p in parts):
        raise ConfigError(f"paper key {key!r}: expected 'dataset/target/attack', optionally followed by '[column=value, ...]'")
    conditions = []
    for item in (match["conditions"] or "").split(","):
        if not item.strip() and match["conditions"] is not None and match["conditions"].strip():
            raise ConfigError(f"paper key {key!r}: an empty condition between commas")
        if not item.strip():
            continue
        column, sep, value = item.partition("=")
        if not sep or not column.strip() or not value.strip():
            raise ConfigError(f"paper key {key!r}: condition {item.strip()!r} is not column=value")
        conditions.append((column.strip(), value.strip()))
    dataset, target, attack = (p.strip() for p in parts)
    return PaperKey(dataset, target, attack, tuple(conditions))


def setting_number(value: Any) -> float:
    """A setting as a number: numbers as is; a defense list (or its JSON, or its :func:`defense_name`)
    as the items it mixes in (``n``); anything else ``float()`` of its JSON (a ``ValueError`` /
    ``TypeError`` when not a number)."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    named = _named_defense_parts(value) if isinstance(value, str) else None
    parsed = named if named is not None else json.loads(value) if isinstance(value, str) else value
    if isinstance(parsed, list):
        return float(sum(d.get("n", 0) for d in parsed))
    return float(parsed)


def _condition_holds(row: Mapping[Hashable, Any], column: str, wanted: str) -> bool:
    for name in (column, f"hp/{column}"):
        if name in row:
            value = row[name]
            break
    else:
        return False
    try:
        return math.isclose(setting_number(value), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return _plain(value).lower() == wanted.lower()


def paper_key_matches(key: PaperKey, row: Mapping[Hashable, Any], skip: tuple[str, ...] = ()) -> bool:
    """Whether ``row`` (a results row or a summary cell) is the cell ``key`` gives a value for;
    conditions on the columns in ``skip`` are not looked at."""
    if (str(row.get("dataset")), str(row.get("target")), str(row.get("attack"))) != (key.dataset, key.target, key.attack):
        return False
    return all(_condition_holds(row, column, wanted) for column, wanted in key.conditions if column not in skip)


def _paper_match(keys: list[tuple[PaperKey, float]], row: Mapping[Hashable, Any]) -> float:
    """The value of the most specific key matching ``row`` (NaN when none does)."""
    best, found = -1, np.nan
    for key, value in keys:
        if len(key.conditions) > best and paper_key_matches(key, row):
            best, found = len(key.conditions), float(value)
    return found


def paper_value(paper: Mapping[str, float], row: Mapping[Hashable, Any]) -> float:
    """The published value for ``row``'s cell (the most specific matching key), NaN when none."""
    return _paper_match([(parse_paper_key(k), v) for k, v in (paper or {}).items()], row)


def unmatched_paper_keys(paper: Mapping[str, float], frame: pd.DataFrame) -> list[str]:
    """The keys of ``paper`` no row of ``frame`` matches (cells the paper gives that were not run)."""
    rows = frame.to_dict("records") if not frame.empty else []
    return [key for key in (paper or {}) if not any(paper_key_matches(parse_paper_key(key), row) for row in rows)]


FLOOR_ATTACK = "popularity"
FLOOR_KEYS = [
    "dataset",
    "preprocess",
    "target",
    "target_params",
    "target_defense",
    "k",
    "attacker_fraction",
    "auxiliary_size",
    "item_overlap",
    "head_fraction",
    "query_fraction",
    "target_training",
    "attacker_unit",
]
"""The settings the popularity floor of a cell is matched on (it makes no query, so budget and the
serving defense do not change it: it is scored against the target's true lists, which a defense
trained into the target -- ``target_defense`` -- does change)."""
FLOOR_METRICS = {"target_recall@k/defended": "clone_recall@k", "target_recall@k/all_users": "clone_recall@k"}
"""Where a metric measures the target itself, the floor is the popularity list's own measure."""


def floor_metric(metric: str) -> str:
    return FLOOR_METRICS.get(metric, metric)


def floor_values(cells: pd.DataFrame, floor_rows: pd.DataFrame | None, metric: str) -> list[float]:
    """Per cell of ``cells`` (summary cells or rows): the mean ``metric`` of the popularity rows of
    ``floor_rows`` in the same setting (:data:`FLOOR_KEYS`); NaN where none is."""
    return matched_means(cells, floor_rows, metric, FLOOR_KEYS)


def matched_means(cells: pd.DataFrame, rows: pd.DataFrame | None, metric: str, keys: list[str]) -> list[float]:
    """Per cell of ``cells``: the mean ``metric`` of the ``rows`` that agree with it on each of
    ``keys`` both frames have (all of ``rows`` where they share none); NaN where no row does."""
    if rows is None or rows.empty or metric not in rows.columns or cells.empty:
        return [np.nan] * len(cells)
    values = pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float)
    keys = [c for c in keys if c in cells.columns and c in rows.columns]
    if not keys:
        return [float(np.nanmean(values)) if np.isfinite(values).any() else np.nan] * len(cells)
    right = pd.DataFrame({c: rows[c].map(_plain).to_numpy() for c in keys}).assign(_value=values)
    means = right.groupby(keys, sort=False)["_value"].mean()
    left = pd.DataFrame({c: cells[c].map(_plain).to_numpy() for c in keys})
    wanted = pd.MultiIndex.from_frame(left) if len(keys) > 1 else pd.Index(left[keys[0]])
    return [float(v) for v in means.reindex(wanted).to_numpy()]


QUERY_TOLERANCE = 0.01
"""Relative difference in queries spent beyond which a cell and its reference are not an equal-query comparison."""
REFERENCE_KEYS = [*FLOOR_KEYS, "budget", "defense"]
"""The settings a cell is matched to its reference configuration on (``relative_to`` of a report
table): the floor's, and the query budget and serving defense, which change what an attack copies."""


def relative_texts(
    frame: pd.DataFrame,
    reference_rows: pd.DataFrame,
    reference: Mapping[str, str],
    metrics: list[str],
    table_metrics: list[str] | None = None,
) -> dict[str, list[str]]:
    """Columns comparing each cell of ``frame``'s summary (:func:`summarize` with ``table_metrics``,
    in its order) with one reference configuration: per metric, ``mean / reference mean − 1`` in
    percent, the reference being the rows of ``reference_rows`` whose ``reference`` column (or
    ``hp/`` column) holds the given value in the cell's setting (:data:`REFERENCE_KEYS`); "reference"
    on the reference's own cells, "–" where a setting has none. ``{"<metric> vs <value>": texts}``,
    and ``queries vs <value>`` where some cell spent more than :data:`QUERY_TOLERANCE` more or fewer
    queries than its reference (so an unequal budget is visible in the table, "=" on the others)."""
    ((column, wanted),) = reference.items()
    table = summarize(frame, list(dict.fromkeys([*(table_metrics or DEFAULT_METRICS), *metrics])))
    if table.empty:
        return {}
    records = reference_rows.to_dict("records") if not reference_rows.empty else []
    chosen = reference_rows[[_condition_holds(row, column, wanted) for row in records]] if records else reference_rows
    if chosen.empty:  # not run (yet): a partial results directory still renders
        return {f"{metric} vs {wanted} (no rows)": ["–"] * len(table) for metric in metrics}
    cells = table.to_dict("records")
    own = [_condition_holds(row, column, wanted) for row in cells]
    floor = [row.get("attack") == FLOOR_ATTACK for row in cells]  # the floor is read as the floor, not as a variant
    out: dict[str, list[str]] = {}
    for metric in metrics:
        if metric not in chosen.columns:
            raise ConfigError(f"relative_metrics: column {metric!r} is not in the results")
        means = table[f"{metric} mean"].to_numpy(dtype=float) if f"{metric} mean" in table.columns else np.full(len(table), np.nan)
        refs = matched_means(table, chosen, metric, REFERENCE_KEYS)
        out[f"{metric} vs {wanted}"] = [
            "reference"
            if is_ref
            else "–"
            if is_floor or not (np.isfinite(mean) and np.isfinite(ref) and ref != 0)
            else f"{100.0 * (mean / ref - 1.0):+.1f}%"
            for mean, ref, is_ref, is_floor in zip(means, refs, own, floor)
        ]
    if "queries" in table.columns and "queries" in chosen.columns:
        spent = table["queries"].to_numpy(dtype=float)
        refs = matched_means(table, chosen, "queries", REFERENCE_KEYS)
        shown = [
            not (is_ref or is_floor) and np.isfinite(q) and np.isfinite(r) and r > 0
            for q, r, is_ref, is_floor in zip(spent, refs, own, floor)
        ]
        differ = [ok and abs(q / r - 1.0) > QUERY_TOLERANCE for q, r, ok in zip(spent, refs, shown)]
        if any(differ):  # an equal-budget comparison where some cell did not spend what its reference spent: say so
            out[f"queries vs {wanted}"] = [
                f"{100.0 * (q / r - 1.0):+.1f}%" if d else "=" if ok else "–" for q, r, ok, d in zip(spent, refs, shown, differ)
            ]
    return out


def is_p_value(metric: str) -> bool:
    """Whether column ``metric`` holds a test's p-value (``watermark_p_value``, ...): summarised by
    its median and its largest value over seeds, not by mean ± std (:func:`format_p_value`)."""
    return metric.endswith("p_value")


def format_p_value(median: float, largest: float) -> str:
    """A p-value cell: the median over seeds in scientific notation, the largest (the weakest
    evidence of any seed) beside it where it differs; "–" where no seed has one."""
    if np.isnan(median):
        return "–"
    return f"{median:.1e}" if largest == median else f"{median:.1e} (max {largest:.1e})"


def format_cell(mean: float, std: float) -> str:
    """``mean ± std``; the mean alone where there is no spread to give (one seed)."""
    if np.isnan(mean):
        return "–"
    return f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def summary_markdown(
    frame: pd.DataFrame,
    metrics: list[str] | None = None,
    paper: dict[str, float] | None = None,
    *,
    paper_beside: bool = False,
    floor_rows: pd.DataFrame | None = None,
    extra: dict[str, list[str]] | None = None,
) -> str:
    """The summary as a Markdown table (mean ± std over seeds). ``paper_beside``: the paper's value
    and ``Δ`` (ours − paper) right after the first metric (the one the paper reports), the other
    metrics (e.g. the held-out measure) after them. ``floor_rows``: popularity rows to give each
    cell its floor (the first metric's, see :func:`floor_values`). ``extra``: more columns, one
    text per cell in the table's order (see :func:`summarize`)."""
    table = summarize(frame, metrics, paper)
    if table.empty:
        return "_no results_"
    metrics = [m for m in (metrics or DEFAULT_METRICS) if f"{m} mean" in table.columns]
    # map(str), not astype(str): pandas 3 keeps NaN missing under astype(str), and nunique() drops it,
    # so a hyperparameter one run set and another left unset would look constant
    varying = [c for c in cell_columns(table) if table[c].map(str).nunique() > 1 or c in ("dataset", "target", "attack")]
    queries = [] if "queries" in metrics else ["queries"]  # asked for as a metric: shown once, there
    has_paper = "paper" in table.columns
    beside = paper_beside and has_paper and bool(metrics)
    floors = floor_values(table, floor_rows, floor_metric(metrics[0])) if floor_rows is not None and metrics else None
    named = [f"{m} (median)" if is_p_value(m) else m for m in metrics]
    header = varying + ([named[0], "paper", "Δ"] + named[1:] if beside else named + (["paper"] if has_paper else []))
    header += ([f"floor ({floor_metric(metrics[0])})"] if floors is not None else []) + ["seeds"] + queries + list(extra or {})
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (_, r) in enumerate(table.iterrows()):
        cells = [_plain(r[c]) for c in varying]
        values = [
            format_p_value(r[f"{m} median"], r[f"{m} max"]) if is_p_value(m) else format_cell(r[f"{m} mean"], r[f"{m} std"])
            for m in metrics
        ]
        shown_paper = "–" if not has_paper or np.isnan(r["paper"]) else f"{r['paper']:.4f}"
        if beside:
            delta = r[f"{metrics[0]} mean"] - r["paper"]
            cells += [values[0], shown_paper, "–" if np.isnan(delta) else f"{delta:+.4f}"] + values[1:]
        else:
            cells += values + ([shown_paper] if has_paper else [])
        if floors is not None:
            cells.append("–" if np.isnan(floors[i]) else f"{floors[i]:.4f}")
        cells.append(str(int(r["seeds"])))
        if queries:
            cells.append("–" if np.isnan(r["queries"]) else f"{r['queries']:.0f}")
        cells += [texts[i] for texts in (extra or {}).values()]
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
