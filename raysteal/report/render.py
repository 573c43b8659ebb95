"""Render an experiment's results: tables (mean ± std over seeds, paper values beside) as
Markdown, curves and heatmaps as PNG (matplotlib, headless)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raysteal.atomic import remove_stale_temp_files, write_atomically, write_text_atomically
from raysteal.errors import ConfigError, DataFileError
from raysteal.results.store import ResultStore
from raysteal.results.summary import summary_markdown, with_derived_metrics


def _experiments(root: Path) -> dict[str, dict[str, Any]]:
    specs = {}
    for path in sorted((root / "experiments").glob("*.json")):
        try:
            spec = json.loads(path.read_text())
            specs[spec["experiment"]] = spec
        except (ValueError, KeyError, TypeError) as err:
            raise DataFileError(f"{path}: not an experiment spec saved by raysteal run ({err!r}); move it away or restore it") from None
    return specs


def _check_columns(frame: pd.DataFrame, rspec: dict[str, Any], where: str) -> None:
    """Every column a report entry names exists in the rows (else a ``ConfigError`` naming it)."""
    kind = rspec.get("kind", "table")
    if kind == "table":
        wanted = rspec.get("metrics") or []
        if wanted and not any(m in frame.columns for m in wanted):
            raise ConfigError(f"{where}: none of the metrics {wanted} is in the results")
        return
    keys = ["metric", "x", "series", "facet"] if kind == "curve" else ["metric", "rows", "cols", "facet"]
    defaults = {"metric": "agr@k", "series": "attack", "rows": "target", "cols": "clone"}
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
        if isinstance(rspec, dict) and rspec.get("kind", "table") in ("table", "curve", "heatmap"):
            _check_columns(frame, rspec, f"experiment {experiment!r}: report.{i}")


def _label(value: Any) -> str:
    if isinstance(value, str) and value.startswith("["):
        parsed = json.loads(value)
        if not parsed:
            return "none"
        return "+".join(",".join(f"{k}={v}" for k, v in d.items() if k != "type") for d in parsed)
    return str(value)


def _curve(frame: pd.DataFrame, spec: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, metric = spec["x"], spec.get("metric", "agr@k")
    series, facet = spec.get("series", "attack"), spec.get("facet")
    frame = frame.assign(_x=frame[x].map(_x_value))
    facets = sorted(frame[facet].map(str).unique()) if facet else [None]
    fig, axes = plt.subplots(1, len(facets), figsize=(4.5 * len(facets), 3.6), squeeze=False)
    for ax, fval in zip(axes[0], facets):
        part = frame if fval is None else frame[frame[facet].map(str) == fval]
        for sval, group in part.groupby(series):
            stats = group.groupby("_x")[metric].agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=str(sval))
        ax.set_xlabel(spec.get("xlabel") or x)
        ax.set_ylabel(metric)
        ax.set_title(f"{facet}={fval}" if fval is not None else spec.get("title", ""))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(spec.get("title", ""))
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG atomically (a temp file, then ``os.replace``) and close it: a
    reader, or a report killed mid-write, sees the old figure or the whole new one."""
    import matplotlib.pyplot as plt

    try:
        write_atomically(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    finally:
        plt.close(fig)


def _x_value(value: Any) -> float:
    """Numeric x for a curve: numbers as is; defense lists by their mixed-in count n."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    parsed = json.loads(value) if isinstance(value, str) else value
    if isinstance(parsed, list):
        return float(sum(d.get("n", 0) for d in parsed))
    return float(parsed)


def _heatmap(frame: pd.DataFrame, spec: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols, metric = spec.get("rows", "target"), spec.get("cols", "clone"), spec.get("metric", "agr@k")
    facet = spec.get("facet")
    facets = sorted(frame[facet].map(str).unique()) if facet else [None]
    fig, axes = plt.subplots(1, len(facets), figsize=(4.2 * len(facets), 3.8), squeeze=False)
    for ax, fval in zip(axes[0], facets):
        part = frame if fval is None else frame[frame[facet].map(str) == fval]
        grid = part.pivot_table(index=rows, columns=cols, values=metric, aggfunc="mean")
        im = ax.imshow(grid.values, cmap="viridis", vmin=0, vmax=max(1e-9, float(np.nanmax(grid.values))))
        ax.set_xticks(range(len(grid.columns)), grid.columns)
        ax.set_yticks(range(len(grid.index)), grid.index)
        ax.set_xlabel(cols)
        ax.set_ylabel(rows)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{grid.values[i, j]:.3f}", ha="center", va="center", color="w", fontsize=9)
        ax.set_title(f"{facet}={fval}" if fval is not None else spec.get("title", ""))
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(spec.get("title", ""))
    fig.tight_layout()
    _save_figure(fig, path)


def render_report(root: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``report.md`` (and PNGs) for every experiment found in ``root``; returns the .md path."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: is a file, not a results directory (the --out of raysteal run)")
    frame = with_derived_metrics(ResultStore(root).load())
    if frame.empty:
        raise ConfigError(f"no results under {root / 'runs'}: run an experiment with --out {root} first")
    out_dir = Path(out) if out else root / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_dir)  # what a report killed mid-write left
    specs = _experiments(root)
    sections = ["# raysteal report", ""]
    if "experiment" not in frame.columns:
        raise DataFileError(f"{root / 'runs'}: the rows have no 'experiment' column (not written by raysteal run)")
    for name, part in frame.groupby("experiment", sort=True):
        spec = specs.get(name, {})
        sections += [f"## {name}", "", spec.get("description", ""), ""]
        reports = spec.get("report") or [{"kind": "table"}]
        for i, rspec in enumerate(reports):
            if not isinstance(rspec, dict):
                raise ConfigError(f"experiment {name!r}: report.{i} must be a mapping (kind, title, ...), got {rspec!r}")
            kind = rspec.get("kind", "table")
            if kind in ("table", "curve", "heatmap"):
                _check_columns(part, rspec, f"experiment {name!r}: report.{i}")
            title = rspec.get("title", "")
            if title:
                sections += [f"### {title}", ""]
            if kind == "table":
                sections += [summary_markdown(part, rspec.get("metrics"), spec.get("paper")), ""]
            elif kind in ("curve", "heatmap"):
                png = out_dir / f"{name}-{i}-{kind}.png"
                (_curve if kind == "curve" else _heatmap)(part, rspec, png)
                sections += [f"![{title or kind}]({png.name})", ""]
                sections += [summary_markdown(part, [rspec.get("metric", "agr@k")], spec.get("paper")), ""]
            else:
                raise ConfigError(f"report kind {kind!r} unknown (table, curve, heatmap)")
    return write_text_atomically(out_dir / "report.md", "\n".join(sections))
