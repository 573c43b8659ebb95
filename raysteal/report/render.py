"""Render an experiment's results: tables (mean ± std over seeds, paper values beside) as
Markdown, curves and heatmaps as PNG (matplotlib, headless)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raysteal.atomic import remove_stale_temp_files, write_text_atomically
from raysteal.errors import ConfigError, DataFileError
from raysteal.report.figures import save_figure
from raysteal.report.matrix import PARETO_COST, matrix_figure, matrix_markdown, matrix_metrics, pareto_figure, pareto_markdown
from raysteal.report.search import search_evidence
from raysteal.results.store import ResultStore
from raysteal.results.summary import (
    DEFAULT_METRICS,
    FLOOR_ATTACK,
    floor_metric,
    floor_values,
    paper_key_matches,
    parse_paper_key,
    relative_texts,
    setting_number,
    summary_markdown,
    with_derived_metrics,
)

REPORT_KINDS = ("table", "curve", "heatmap", "matrix", "pareto")


def _check_columns(frame: pd.DataFrame, rspec: dict[str, Any], where: str) -> None:
    """Every column a report entry names exists in the rows (else a ``ConfigError`` naming it)."""
    kind = rspec.get("kind", "table")
    if kind == "table":
        wanted = rspec.get("metrics") or []
        if wanted and not any(m in frame.columns for m in wanted):
            raise ConfigError(f"{where}: none of the metrics {wanted} is in the results")
        for i, metric in enumerate(rspec.get("relative_metrics") or []):
            if metric not in frame.columns:
                raise ConfigError(f"{where}.relative_metrics.{i}: column {metric!r} is not in the results")
        for column in rspec.get("relative_to") or {}:
            if column not in frame.columns and f"hp/{column}" not in frame.columns:
                raise ConfigError(f"{where}.relative_to: column {column!r} is not in the results")
        return
    if kind == "matrix":
        for i, metric in enumerate(matrix_metrics(rspec)):
            if metric not in frame.columns:
                raise ConfigError(f"{where}.metrics.{i}: column {metric!r} is not in the results")
    keys = {
        "curve": ["metric", "x", "series", "facet"],
        "heatmap": ["metric", "rows", "cols", "facet"],
        "matrix": ["facet"],
        "pareto": ["metric", "cost", "facet"],
    }[kind]
    if kind in ("matrix", "pareto"):
        for column in ("attack", "defense"):
            if column not in frame.columns:
                raise ConfigError(f"{where}: the results have no {column!r} column (a {kind} is attack x defense)")
    defaults = {"metric": "agr@k", "series": "attack", "rows": "target", "cols": "clone", "cost": PARETO_COST}
    for key in keys:
        column = rspec.get(key, defaults.get(key))
        if column is not None and column not in frame.columns:
            raise ConfigError(f"{where}.{key}: column {column!r} is not in the results")


def check_report_columns(frame: pd.DataFrame, reports: list[dict[str, Any]], experiment: str) -> None:
    """Every table and figure of an experiment's ``report:`` finds its columns in ``frame`` (its
    rows, derived metrics added), else a ``ConfigError`` naming the entry -- ``raysteal run``
    checks this as soon as the rows are in, rather than leaving it to ``raysteal report``."""
    frame = with_derived_metrics(frame)
    for i, rspec in enumerate(reports):
        if isinstance(rspec, dict) and rspec.get("kind", "table") in REPORT_KINDS:
            _check_columns(frame, rspec, f"experiment {experiment!r}: report.{i}")


def _label(value: Any) -> str:
    if isinstance(value, str) and value.startswith("["):
        parsed = json.loads(value)
        if not parsed:
            return "none"
        return "+".join(",".join(f"{k}={v}" for k, v in d.items() if k != "type") for d in parsed)
    return str(value)


def _paper_points(paper: list, rows: pd.DataFrame, x: str) -> list[tuple[float | None, float]]:
    """The paper's values for the cells of ``rows`` (one curve): ``(x, value)`` where the key names
    its x setting, ``(None, value)`` where it does not (a reference line across the axis)."""
    records = rows.to_dict("records")
    skip = (x, x.removeprefix("hp/"))
    points = []
    for key, value in paper:
        if not any(paper_key_matches(key, row, skip=skip) for row in records):
            continue
        at = [wanted for column, wanted in key.conditions if column in skip]
        try:
            points.append((setting_number(at[0]) if at else None, float(value)))
        except (TypeError, ValueError):
            continue
    return points


def _floor(rows: pd.DataFrame, floor_rows: pd.DataFrame | None, metric: str) -> float:
    """The popularity floor of ``rows``' settings (mean over them), NaN where there is none."""
    values = [v for v in floor_values(rows, floor_rows, floor_metric(metric)) if not np.isnan(v)]
    return float(np.mean(values)) if values else np.nan


def _curve(
    frame: pd.DataFrame, spec: dict[str, Any], path: Path, paper: dict[str, float] | None = None, floor_rows: pd.DataFrame | None = None
) -> None:
    """Mean ± std over seeds per series; the popularity series dashed grey as the floor (or, where the
    panel has none, a dashed line at the floor of ``floor_rows``); the paper's values (``paper``) as
    hollow stars at their x, dotted lines where a key names no x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    x, metric = spec["x"], spec.get("metric", "agr@k")
    series, facet = spec.get("series", "attack"), spec.get("facet")
    parsed = [(parse_paper_key(k), v) for k, v in (paper or {}).items()]
    frame = frame.assign(_x=frame[x].map(_x_value))
    facets = sorted(frame[facet].map(str).unique()) if facet else [None]
    fig, axes = plt.subplots(1, len(facets), figsize=(4.5 * len(facets), 3.6), squeeze=False)
    extra_handles: dict[str, Any] = {}
    for ax, fval in zip(axes[0], facets):
        part = frame if fval is None else frame[frame[facet].map(str) == fval]
        has_floor_series = series == "attack" and FLOOR_ATTACK in set(part[series].map(str))
        for sval, group in part.groupby(series):
            stats = group.groupby("_x")[metric].agg(["mean", "std"]).sort_index()
            style = {"label": str(sval)}
            if has_floor_series and str(sval) == FLOOR_ATTACK:
                style = {"label": f"{sval} (floor)", "color": "0.45", "linestyle": "--"}
            bars = ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, **style)
            color = bars.lines[0].get_color()
            for px, value in _paper_points(parsed, group, x):
                if px is None:
                    ax.axhline(value, color=color, linestyle=":", linewidth=1)
                else:
                    ax.scatter([px], [value], marker="*", s=150, facecolors="none", edgecolors=color, linewidths=1.4, zorder=5)
                extra_handles["paper"] = Line2D(
                    [], [], marker="*", markersize=11, markerfacecolor="none", markeredgecolor="k", linestyle="none", label="paper"
                )
        if not has_floor_series:
            floor = _floor(part, part[part["attack"] == FLOOR_ATTACK] if floor_rows is None else floor_rows, metric)
            if not np.isnan(floor):
                ax.axhline(floor, color="0.45", linestyle="--", linewidth=1.2)
                extra_handles["floor"] = Line2D([], [], color="0.45", linestyle="--", label=f"popularity floor ({floor_metric(metric)})")
        ax.set_xlabel(spec.get("xlabel") or x)
        ax.set_ylabel(metric)
        ax.set_title(f"{facet}={fval}" if fval is not None else "")  # the figure's title is its suptitle
        ax.grid(alpha=0.3)
    handles, _ = axes[0][-1].get_legend_handles_labels()
    axes[0][-1].legend(handles=handles + list(extra_handles.values()), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(spec.get("title", ""))
    fig.tight_layout()
    save_figure(fig, path)


_x_value = setting_number
"""Numeric x for a curve: numbers as is; defense lists by their mixed-in count n."""


def _heatmap(
    frame: pd.DataFrame, spec: dict[str, Any], path: Path, paper: dict[str, float] | None = None, floor_rows: pd.DataFrame | None = None
) -> None:
    """Mean per (rows, cols) cell, the paper's value under ours where it gives one, and each row's
    popularity floor (``floor_rows``, else the frame's own popularity rows) in its label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols, metric = spec.get("rows", "target"), spec.get("cols", "clone"), spec.get("metric", "agr@k")
    facet = spec.get("facet")
    parsed = [(parse_paper_key(k), v) for k, v in (paper or {}).items()]
    floor_source = frame[frame["attack"] == FLOOR_ATTACK] if floor_rows is None and "attack" in frame.columns else floor_rows
    facets = sorted(frame[facet].map(str).unique()) if facet else [None]
    fig, axes = plt.subplots(1, len(facets), figsize=(4.2 * len(facets), 3.8), squeeze=False)
    for ax, fval in zip(axes[0], facets):
        part = frame if fval is None else frame[frame[facet].map(str) == fval]
        grid = part.pivot_table(index=rows, columns=cols, values=metric, aggfunc="mean")
        im = ax.imshow(grid.values, cmap="viridis", vmin=0, vmax=max(1e-9, float(np.nanmax(grid.values))))
        ax.set_xticks(range(len(grid.columns)), grid.columns)
        floors = [_floor(part[part[rows] == r], floor_source, metric) for r in grid.index]
        ax.set_yticks(range(len(grid.index)), [str(r) if np.isnan(f) else f"{r}\n(floor {f:.3f})" for r, f in zip(grid.index, floors)])
        ax.set_xlabel(cols)
        ax.set_ylabel(rows)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                cell = part[(part[rows] == grid.index[i]) & (part[cols] == grid.columns[j])].to_dict("records")
                published = [v for key, v in parsed if any(paper_key_matches(key, row) for row in cell)]
                text = f"{grid.values[i, j]:.3f}" + (f"\n(paper {published[0]:.3f})" if published else "")
                ax.text(j, i, text, ha="center", va="center", color="w", fontsize=9 if not published else 8)
        ax.set_title(f"{facet}={fval}" if fval is not None else "")  # the figure's title is its suptitle
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(spec.get("title", ""))
    fig.tight_layout()
    save_figure(fig, path)


def render_report(root: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``report.md`` (and PNGs) for every experiment found in ``root``; returns the .md path.
    ``root/results.parquet`` is rewritten from the same rows first, so a report and the results
    file beside it always hold the same runs (an interrupted ``raysteal run`` leaves the file as its
    last finished invocation wrote it)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: is a file, not a results directory (the --out of raysteal run)")
    store = ResultStore(root)
    frame = with_derived_metrics(store.load())
    if frame.empty:
        raise ConfigError(f"no results under {root / 'runs'}: run an experiment with --out {root} first")
    store.export()
    out_dir = Path(out) if out else root / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_dir)  # what a report killed mid-write left
    specs = store.load_experiments()
    sections = ["# raysteal report", ""]
    if "experiment" not in frame.columns:
        raise DataFileError(f"{root / 'runs'}: the rows have no 'experiment' column (not written by raysteal run)")
    for key, part in frame.groupby("experiment", sort=True):
        name = str(key)  # the column holds the experiment names raysteal run wrote
        spec = specs.get(name, {})
        sections += [f"## {name}", "", spec.get("description", ""), ""]
        sections += experiment_sections(name, part, spec, out_dir, reference_rows=frame)
    sections += search_section(root, out_dir)
    return write_text_atomically(out_dir / "report.md", "\n".join(sections))


def search_section(root: Path, out_dir: Path) -> list[str]:
    """For a ``raysteal tune`` directory: ``search.md`` (:mod:`raysteal.report.search`) written
    beside the report, and a line linking it; nothing for other results directories."""
    spec_path = root / "tune_spec.json"
    if not (root / "tune").is_dir() or not spec_path.is_file():
        return []

    tune = json.loads(spec_path.read_text()).get("tune") or {}
    page = search_evidence(root / "tune", str(tune.get("metric")), str(tune.get("mode", "max")), figure=out_dir / "curves.png")
    write_text_atomically(out_dir / "search.md", page)
    return [
        "## The search",
        "",
        f"Every trial, the best configurations, their learning curves and what each setting does: [search.md](search.md) (metric `{tune.get('metric')}`).",
        "",
    ]


def paper_metric(reports: list[Any]) -> str:
    """The measure an experiment's ``paper:`` values are: the first metric of its first table
    (``agr@k`` where it has none); tables and figures of other measures are shown without them."""
    for rspec in reports:
        if isinstance(rspec, dict) and rspec.get("kind", "table") == "table":
            return (rspec.get("metrics") or DEFAULT_METRICS)[0]
    return "agr@k"


def experiment_sections(
    name: str,
    part: pd.DataFrame,
    spec: dict[str, Any],
    out_dir: Path,
    *,
    png_name: str | None = None,
    paper_beside: bool = False,
    floor_rows: pd.DataFrame | None = None,
    extra: dict[str, list[str]] | None = None,
    reference_rows: pd.DataFrame | None = None,
) -> list[str]:
    """The Markdown lines of one experiment's ``report:`` entries (``spec``: its saved or loaded
    spec; ``part``: its rows, derived metrics added), writing each figure as
    ``out_dir/<png_name or name>-<i>-<kind>.png``. ``paper_beside``, ``floor_rows`` and ``extra``
    (per cell of ``part``): see :func:`raysteal.results.summary.summary_markdown`; ``floor_rows``
    also gives the figures their floor where the experiment has no popularity rows of its own;
    ``reference_rows`` (default ``part``): where a table's ``relative_to`` reference is looked up
    (every row of the results directory, so one experiment's variants compare with another's)."""
    sections: list[str] = []
    reports: list[Any] = spec.get("report") or [{"kind": "table"}]  # as written: each entry is checked below
    measure = paper_metric(reports)
    for i, rspec in enumerate(reports):
        if not isinstance(rspec, dict):
            raise ConfigError(f"experiment {name!r}: report.{i} must be a mapping (kind, title, ...), got {rspec!r}")
        kind = rspec.get("kind", "table")
        if kind in REPORT_KINDS:
            _check_columns(part, rspec, f"experiment {name!r}: report.{i}")
        title = rspec.get("title", "")
        if title:
            sections += [f"### {title}", ""]
        if kind == "table":
            metrics = rspec.get("metrics")
            paper = spec.get("paper") if (metrics or DEFAULT_METRICS)[0] == measure else None
            columns = dict(extra or {})
            if rspec.get("relative_to"):
                compared = rspec.get("relative_metrics") or (metrics or DEFAULT_METRICS)[:1]
                rows = part if reference_rows is None else reference_rows
                columns.update(relative_texts(part, rows, rspec["relative_to"], compared, metrics))
            sections += [
                summary_markdown(part, metrics, paper, paper_beside=paper_beside, floor_rows=floor_rows, extra=columns or None),
                "",
            ]
        elif kind in ("curve", "heatmap"):
            metric = rspec.get("metric", "agr@k")
            paper = spec.get("paper") if metric == measure else None  # e.g. not on Fig. 8's target recall
            png = out_dir / f"{png_name or name}-{i}-{kind}.png"
            (_curve if kind == "curve" else _heatmap)(part, rspec, png, paper=paper, floor_rows=floor_rows)
            sections += [f"![{title or kind}]({png.name})", ""]
            sections += [summary_markdown(part, [metric], paper, paper_beside=paper_beside, floor_rows=floor_rows, extra=extra), ""]
        elif kind == "matrix":
            png = out_dir / f"{png_name or name}-{i}-{kind}.png"
            matrix_figure(part, rspec, png)
            sections += [f"![{title or kind}]({png.name})", "", matrix_markdown(part, rspec), ""]
        elif kind == "pareto":
            png = out_dir / f"{png_name or name}-{i}-{kind}.png"
            pareto_figure(part, rspec, png)
            sections += [f"![{title or kind}]({png.name})", "", pareto_markdown(part, rspec), ""]
        else:
            raise ConfigError(f"report kind {kind!r} unknown ({', '.join(REPORT_KINDS)})")
    return sections
