"""The attack × defense figures of ``raysteal report``: ``kind: matrix`` (a heatmap per metric,
one row per attack, one column per defense, every cell annotated) and ``kind: pareto`` (each
(attack, defense) cell's fidelity against the defense's accuracy cost to the target, the
non-dominated front of each attack drawn).

Rows name their defense in ``defense`` (:func:`raysteal.results.summary.defense_name`): ``none``,
``popular_mixing(n=10)``, ``gro(strength=0.1)``, ``gro(strength=0.1)+shuffle(depth=20)``; the part
trained into the target alone is ``target_defense``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raysteal.report.figures import pyplot, save_figure
from raysteal.results.summary import FLOOR_ATTACK, NO_DEFENSE, format_cell

MATRIX_METRICS = ["agr@k", "agr@k/lift"]
"""A matrix's panels when its entry names no ``metrics``: agreement, and its lift over the floor."""
PARETO_COST = "target_ndcg@k/defended"
"""A pareto figure's ``cost`` when its entry names none: the target's own NDCG@K on the defended lists."""
REFERENCE_KEYS = ["dataset", "preprocess", "target", "target_params", "k"]
"""The settings a cell's undefended reference (``defense`` ``none``) is matched on."""


def matrix_metrics(spec: dict[str, Any]) -> list[str]:
    return list(spec.get("metrics") or MATRIX_METRICS)


def defense_order(names: Any) -> list[str]:
    """``none`` first, then single defenses before combinations, each group alphabetical."""
    return sorted({str(n) for n in names}, key=lambda n: (n != NO_DEFENSE, n.count("+"), n))


def attack_order(names: Any) -> list[str]:
    """The attacks alphabetical, the popularity floor last."""
    return sorted({str(n) for n in names}, key=lambda n: (n == FLOOR_ATTACK, n))


def _facets(frame: pd.DataFrame, facet: str | None) -> list[tuple[str | None, pd.DataFrame]]:
    if not facet:
        return [(None, frame)]
    return [(value, frame[frame[facet].map(str) == value]) for value in sorted(frame[facet].map(str).unique())]


def _grid(part: pd.DataFrame, metric: str, attacks: list[str], defenses: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, std and run count of ``metric`` per (attack, defense) as ``float [attacks, defenses]``
    arrays, every pair present (NaN / 0 where no row is)."""
    values = pd.to_numeric(part[metric], errors="coerce")
    grouped = values.groupby([part["attack"].map(str), part["defense"].map(str)])
    stats = grouped.agg(["mean", "std", "count"])
    mean, std, count = (stats[s].unstack().reindex(index=attacks, columns=defenses).to_numpy(dtype=float) for s in ("mean", "std", "count"))
    return mean, std, np.nan_to_num(count)


def _wrap(name: str) -> str:
    return name.replace("+", "+\n")


def matrix_figure(frame: pd.DataFrame, spec: dict[str, Any], path: Path) -> None:
    """One heatmap per metric (and per facet value), stacked: attacks down, defenses across
    (``none`` first), each cell its mean over seeds (± std where there are several), grey "no row"
    where the grid has no finished run (a run a rate limit refused, say)."""
    plt = pyplot()
    metrics, facets = matrix_metrics(spec), _facets(frame, spec.get("facet"))
    attacks, defenses = attack_order(frame["attack"]), defense_order(frame["defense"])
    width, height = max(4.0, 0.95 * len(defenses) + 2.2), 0.5 * len(attacks) + 2.4
    panels = [(fval, part, metric) for fval, part in facets for metric in metrics]  # stacked: the defenses need the width
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, height * len(panels)), squeeze=False)
    for ax, (fval, part, metric) in zip(axes[:, 0], panels):
        mean, std, count = _grid(part, metric, attacks, defenses)
        cmap = plt.get_cmap("viridis").with_extremes(bad="0.88")
        finite = mean[np.isfinite(mean)]
        low = min(0.0, float(finite.min())) if finite.size else 0.0
        high = max(low + 1e-9, float(finite.max())) if finite.size else 1.0
        im = ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, vmin=low, vmax=high, aspect="auto")
        for i in range(len(attacks)):
            for j in range(len(defenses)):
                value = float(mean[i, j])
                if not np.isfinite(value):
                    ax.text(j, i, "no row", ha="center", va="center", color="0.35", fontsize=7)
                    continue
                spread = float(std[i, j])
                text = f"{value:.3f}" + (f"\n±{spread:.3f}" if count[i, j] > 1 and np.isfinite(spread) else "")
                shade = "k" if (value - low) / (high - low) > 0.6 else "w"
                ax.text(j, i, text, ha="center", va="center", color=shade, fontsize=8)
        ax.set_xticks(range(len(defenses)), [_wrap(d) for d in defenses], rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(attacks)), [f"{a} (floor)" if a == FLOOR_ATTACK else a for a in attacks], fontsize=9)
        ax.set_xlabel("defense")
        ax.set_ylabel("attack")
        ax.set_title(metric if fval is None else f"{metric}, {spec.get('facet')}={fval}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(spec.get("title") or "")
    fig.tight_layout()
    save_figure(fig, path)


def matrix_markdown(frame: pd.DataFrame, spec: dict[str, Any]) -> str:
    """The figure's numbers: per metric (and facet value), attacks down and defenses across, each
    cell ``mean ± std`` over seeds, ``–`` where no run finished."""
    attacks, defenses = attack_order(frame["attack"]), defense_order(frame["defense"])
    blocks = []
    for fval, part in _facets(frame, spec.get("facet")):
        for metric in matrix_metrics(spec):
            mean, std, _ = _grid(part, metric, attacks, defenses)
            title = f"`{metric}`" + ("" if fval is None else f", {spec.get('facet')}={fval}")
            lines = [title, "", "| attack | " + " | ".join(defenses) + " |", "|" + "---|" * (len(defenses) + 1)]
            for i, attack in enumerate(attacks):
                cells = [format_cell(float(mean[i, j]), float(std[i, j])) for j in range(len(defenses))]
                lines.append(f"| {attack} | " + " | ".join(cells) + " |")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _measured_under_serving(cost: str) -> bool:
    """Whether the cost column is measured on the defended lists (``.../defended``): else a serving
    defense leaves it as it is, and only defenses trained into the target move it."""
    return cost.endswith("/defended")


def pareto_points(frame: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """One point per (facet, setting, attack, defense) but the popularity floor: ``fidelity`` (the
    mean of ``metric``), ``cost`` (``1 - mean(cost) / mean(cost of the same target's defense
    none rows)``: the share of the target's accuracy the defense costs), ``front`` (on the attack's
    non-dominated front: no other defense is both cheaper and lets it copy less) and ``placed``
    (False where the cost cannot be read: no undefended reference, or a serving defense when the
    cost column is not measured under it)."""
    metric, cost = spec.get("metric") or "agr@k", spec.get("cost") or PARETO_COST
    facet = spec.get("facet")
    data = frame.assign(
        _fidelity=pd.to_numeric(frame[metric], errors="coerce"),
        _cost=pd.to_numeric(frame[cost], errors="coerce"),
        _target_defense=frame["target_defense"].fillna(NO_DEFENSE).map(str) if "target_defense" in frame.columns else NO_DEFENSE,
        _defense=frame["defense"].map(str),
    )
    keys = [c for c in REFERENCE_KEYS if c in data.columns]
    keyed = data.assign(**{c: data[c].map(str) for c in keys})  # JSON and NaN settings compare as text
    reference = keyed[keyed["_defense"] == NO_DEFENSE].groupby(keys, dropna=False)["_cost"].mean() if keys else None
    by = ([facet] if facet and facet not in keys else []) + keys + ["attack", "_defense"]
    cells = (
        keyed[keyed["attack"].map(str) != FLOOR_ATTACK]
        .groupby(by, dropna=False, sort=True)
        .agg(
            fidelity=("_fidelity", "mean"),
            cost_value=("_cost", "mean"),
            target_defense=("_target_defense", "first"),
            seeds=("_fidelity", "size"),
        )
        .reset_index()
        .rename(columns={"_defense": "defense"})
    )
    if reference is not None and not cells.empty:
        wanted = pd.MultiIndex.from_frame(cells[keys]) if len(keys) > 1 else pd.Index(cells[keys[0]])
        base = reference.reindex(wanted).to_numpy(dtype=float)
    else:
        base = np.full(len(cells), float(data.loc[data["_defense"] == NO_DEFENSE, "_cost"].mean()))
    with np.errstate(divide="ignore", invalid="ignore"):
        cells["cost"] = np.where(base > 0, 1.0 - cells["cost_value"].to_numpy(dtype=float) / base, np.nan)
    serving = cells["defense"] != cells["target_defense"]
    cells["placed"] = np.isfinite(cells["cost"]) & np.isfinite(cells["fidelity"]) & (_measured_under_serving(cost) | ~serving)
    cells["front"] = False
    groups = ([facet] if facet else []) + keys + ["attack"]
    for _, group in cells[cells["placed"]].groupby(groups, dropna=False):
        best = np.inf
        for index in group.sort_values(
            ["cost", "fidelity"]
        ).index:  # cheapest first: on the front if it lets the attack copy less than every cheaper one
            if cells.at[index, "fidelity"] < best:
                cells.at[index, "front"] = True
                best = cells.at[index, "fidelity"]
    return cells


def _short(name: str) -> str:
    """A defense's label beside its point: the name, its settings dropped where it is long."""
    return name if len(name) <= 22 else "+".join(p.split("(", 1)[0] for p in name.split("+"))


def _labels(points: pd.DataFrame) -> dict[tuple[float, float], list[str]]:
    """Each defense named once, beside its highest point (the cost is the target's, the same for
    every attack); defenses whose labels would fall on one spot share one label."""
    spots: dict[tuple[float, float], list[str]] = {}
    for defense in defense_order(points["defense"]):
        top = points[points["defense"] == defense].sort_values("fidelity").iloc[-1]
        near = next((xy for xy in spots if abs(xy[0] - top["cost"]) < 0.004 and abs(xy[1] - top["fidelity"]) < 0.008), None)
        spots.setdefault(near or (float(top["cost"]), float(top["fidelity"])), []).append(_short(defense))
    return spots


def pareto_figure(frame: pd.DataFrame, spec: dict[str, Any], path: Path) -> None:
    """Fidelity (y) against the defense's accuracy cost to the target (x) per (attack, defense),
    one colour per attack, its non-dominated front a dashed step line; the popularity floor of the
    undefended target a grey dotted line; defenses that cannot be placed are listed under the axes."""
    plt = pyplot()
    metric, cost = spec.get("metric") or "agr@k", spec.get("cost") or PARETO_COST
    facet = spec.get("facet")
    points = pareto_points(frame, spec)
    facets = _facets(frame, facet)
    fig, axes = plt.subplots(1, len(facets), figsize=(7.0 * len(facets), 5.0), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    attacks = attack_order(points["attack"]) if not points.empty else []
    for ax, (fval, part) in zip(axes[0], facets):
        mine = points if fval is None else points[points[facet].map(str) == fval]
        for n, attack in enumerate(attacks):
            cells = mine[(mine["attack"] == attack) & mine["placed"]]
            if cells.empty:
                continue
            color = colors[n % len(colors)]
            ax.scatter(cells["cost"], cells["fidelity"], color=color, label=attack, zorder=3)
            front = cells[cells["front"]].sort_values("cost")
            ax.step(front["cost"], front["fidelity"], where="post", color=color, linestyle="--", linewidth=1.1, alpha=0.8)
        for (x, y), names in _labels(mine[mine["placed"]]).items():
            ax.annotate(" = ".join(names), (x, y), fontsize=6.5, xytext=(3, 3), textcoords="offset points")
        undefended = (part["attack"].map(str) == FLOOR_ATTACK) & (part["defense"].map(str) == NO_DEFENSE)
        floor = pd.to_numeric(part.loc[undefended, metric], errors="coerce").mean()
        if np.isfinite(floor):
            ax.axhline(floor, color="0.45", linestyle=":", linewidth=1.2, label=f"popularity floor, undefended target ({floor:.3f})")
        left_out = sorted(set(mine.loc[~mine["placed"], "defense"]))
        if left_out:
            reason = (
                f"not placed ({cost} is not measured under a serving defense): " if not _measured_under_serving(cost) else "not placed: "
            )
            ax.text(0.0, -0.2, reason + ", ".join(left_out), transform=ax.transAxes, fontsize=7, va="top", wrap=True)
        ax.axvline(0.0, color="0.8", linewidth=0.8)
        ax.set_xlabel(f"accuracy cost to the target: 1 − {cost} / undefended")
        ax.set_ylabel(f"attack fidelity ({metric})")
        ax.set_title("" if fval is None else f"{facet}={fval}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(spec.get("title") or "")
    fig.tight_layout()
    save_figure(fig, path)


def pareto_markdown(frame: pd.DataFrame, spec: dict[str, Any]) -> str:
    """The figure's points as a table: attack, defense, the cost and the fidelity, on the front or not."""
    metric, cost = spec.get("metric") or "agr@k", spec.get("cost") or PARETO_COST
    points = pareto_points(frame, spec)
    if points.empty:
        return "_no points_"
    facet = spec.get("facet")
    head = ([facet] if facet else []) + ["attack", "defense", f"cost (1 − {cost} / undefended)", metric, "on the front", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {d: i for i, d in enumerate(defense_order(points["defense"]))}
    points = points.assign(_order=points["defense"].map(order)).sort_values(([facet] if facet else []) + ["attack", "_order"])
    for _, p in points.iterrows():
        shown_cost = f"{p['cost']:+.4f}" if p["placed"] else "not measured"
        front = "yes" if p["front"] else ("–" if not p["placed"] else "")
        lines.append(
            "| "
            + " | ".join(
                ([str(p[facet])] if facet else [])
                + [str(p["attack"]), str(p["defense"]), shown_cost, f"{p['fidelity']:.4f}", front, str(int(p["seeds"]))]
            )
            + " |"
        )
    return "\n".join(lines)
