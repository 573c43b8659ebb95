"""One page for a paper's reproduction (``raysteal reproduce``): ``DIR/report.md`` and its PNGs.

Every experiment file of the paper's folder gets a section: where its runs came from (run here,
or imported from another results directory with ``--from``) and its wall time, then each table
of its ``report:`` with the paper's value beside ours (``agr@k``, the paper's protocol), the
difference, our held-out measure and the popularity floor, and each figure as a PNG with the
paper's values overlaid where its ``paper:`` mapping gives them and the floor drawn.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd

from raysteal import __version__
from raysteal.atomic import copy_atomically, remove_stale_temp_files, write_text_atomically
from raysteal.experiment.run import expand_runs
from raysteal.report.render import experiment_sections, render_report
from raysteal.results.reproduction import SITTINGS_FILE, PlanEntry, imported_runs, imported_sittings, sittings, sittings_wall
from raysteal.results.store import ResultStore
from raysteal.results.summary import FLOOR_ATTACK, floor_values, summarize, unmatched_paper_keys, with_derived_metrics

READING = (
    "How to read the tables: the first metric column is ours under the paper's protocol (for "
    "`agr@k`: Agr@K on the users whose lists were queried, Eq. 3); **paper** is the value the paper "
    "prints for that cell and **Δ** ours − paper; the next columns are our other measures, "
    "`agr@k/heldout` being the agreement on known users whose lists were never queried (what was "
    "stolen rather than fitted); **floor** is the popularity clone's value in the same setting "
    "(a clone that recommends the most popular items, making no query). A table with "
    "`query_fraction` and `target_training` columns holds each cell under two protocols: ours "
    "(0.8 of the known users queried, the target trained on the leave-one-out training part; read "
    "its `agr@k/heldout`) and the paper's (every known user queried, the target trained on the whole "
    "target half: its `agr@k` is the paper's column). Values are mean ± std over "
    "seeds. In the figures, hollow stars are the paper's values (dotted lines where a value holds "
    "for no particular x) and the dashed grey line is the popularity floor."
)


def duration(seconds: float | None) -> str:
    """``h:mm:ss`` (``–`` for none)."""
    if seconds is None or (isinstance(seconds, float) and np.isnan(seconds)):
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def file_rows(entry: PlanEntry) -> tuple[pd.DataFrame, int]:
    """The rows of ``entry``'s file in its directory that belong to its grid (at any seed up to
    the most there are), derived metrics added; and the number of other rows (runs of earlier
    settings of the file, left out)."""
    frame = ResultStore(entry.out_dir).load()
    if frame.empty:
        return frame, 0
    if "experiment" in frame.columns:
        frame = frame[frame["experiment"] == entry.config.experiment]
    if "run_id" in frame.columns and not frame.empty:
        seeds = max(entry.config.seeds, int(pd.to_numeric(frame["seed"], errors="coerce").max()) + 1)
        ids = {i for run in expand_runs(entry.config, seeds=seeds) for i in run.ids}
        inside = frame["run_id"].isin(ids)
        return with_derived_metrics(frame[inside].reset_index(drop=True)), int((~inside).sum())
    return with_derived_metrics(frame.reset_index(drop=True)), 0


def finished_of_grid(entry: PlanEntry) -> int:
    """How many runs of ``entry``'s grid (at its seed count) have a row."""
    store = ResultStore(entry.out_dir)
    done = store.finished()
    return len({run.id for run in expand_runs(entry.config) if store.is_finished(run.ids, done)})


def _origin_texts(part: pd.DataFrame, imported: dict[str, str]) -> list[str] | None:
    """Per table cell (in :func:`summarize`'s order): ``here``, ``imported`` or ``i of n imported``."""
    if not imported or "run_id" not in part.columns:
        return None
    marked = part.assign(_imported=part["run_id"].isin(set(imported)).astype(float))
    table = summarize(marked, ["_imported"])
    texts = []
    for share, seeds in zip(table["_imported mean"], table["seeds"]):
        if share <= 0:
            texts.append("here")
        elif share >= 1:
            texts.append("imported")
        else:
            texts.append(f"{round(share * seeds)} of {int(seeds)} imported")
    return texts


def shown_path(path: str) -> str:
    """``path`` as a page shows it: relative to the working directory when inside it (a checkout's
    ``docs/results/...``), so no page names one machine's folders; else as recorded."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path


def _runs_line(entry: PlanEntry, frame: pd.DataFrame, imported: dict[str, str], stale: int) -> str:
    """Where the file's runs came from and how long they took."""
    marks = frame["run_id"].isin(set(imported)) if "run_id" in frame.columns and imported else pd.Series(False, index=frame.index)
    here, there = int((~marks).sum()), int(marks.sum())
    held = sittings(entry.out_dir)
    wall = sittings_wall(held)
    seeds = f"{entry.config.seeds} seed{'s' if entry.config.seeds != 1 else ''}"
    parts = [f"**Runs:** {finished_of_grid(entry)} of the {entry.total} at {seeds} finished, {len(frame)} row(s) shown"]
    ran = f"{here} ran here"
    if held:
        ran += f" (wall time {duration(wall)} over {len(held)} sitting{'s' if len(held) != 1 else ''})"
    parts.append(ran)
    if there:
        sources = sorted({shown_path(imported[r]) for r in frame.loc[marks, "run_id"]})
        spent = pd.to_numeric(frame.loc[marks, "wall_s"], errors="coerce").sum() if "wall_s" in frame.columns else np.nan
        away = imported_sittings(entry.out_dir)
        there_wall = (
            f"; wall time {duration(sittings_wall(away))} over {len(away)} sitting{'s' if len(away) != 1 else ''} there" if away else ""
        )
        parts.append(
            f"{there} imported from {', '.join(f'`{s}`' for s in sources)} (their runs took {duration(spent)} summed over runs, elsewhere{there_wall})"
        )
    if stale:
        parts.append(f"{stale} row(s) of earlier settings of the file left out")
    return "; ".join(parts) + "."


def _floor_rows(entry: PlanEntry, frame: pd.DataFrame, everything: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame | None, str]:
    """Popularity rows for ``entry``'s floors: its own, else those of the other files (named)."""
    own = frame[frame["attack"] == FLOOR_ATTACK] if "attack" in frame.columns else frame.iloc[0:0]
    if not own.empty:
        return own, "the file's own popularity runs"
    others = {
        stem: rows[rows["attack"] == FLOOR_ATTACK]
        for stem, rows in everything.items()
        if stem != entry.stem and not rows.empty and "attack" in rows.columns
    }
    # only the files with popularity runs in one of this file's settings (FLOOR_KEYS) are named
    others = {
        stem: rows
        for stem, rows in others.items()
        if not rows.empty and not np.isnan(floor_values(frame, rows.assign(_match=1.0), "_match")).all()
    }
    if not others:
        return None, "none in this reproduction (no popularity runs in the same setting)"
    return pd.concat(others.values(), ignore_index=True, sort=False), "popularity runs of " + ", ".join(f"`{s}`" for s in sorted(others))


def _files_table(entries: list[PlanEntry], frames: dict[str, pd.DataFrame], status: dict[str, str]) -> list[str]:
    lines = [
        "| # | file | experiment | seeds | runs | ran here | imported | wall time here | wall time elsewhere | Σ run time | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    total_wall = total_away = 0.0
    for i, entry in enumerate(entries, 1):
        frame = frames.get(entry.stem, pd.DataFrame())
        imported = imported_runs(entry.out_dir)
        n_imported = int(frame["run_id"].isin(set(imported)).sum()) if "run_id" in frame.columns and imported else 0
        held = sittings(entry.out_dir)
        wall = sittings_wall(held)
        total_wall += wall or 0.0
        away = sittings_wall(imported_sittings(entry.out_dir))
        total_away += away or 0.0
        spent = pd.to_numeric(frame["wall_s"], errors="coerce").sum() if "wall_s" in frame.columns else np.nan
        done = finished_of_grid(entry)
        state = "done" if done >= entry.total else ("not run yet" if frame.empty else "partial")
        if status.get(entry.stem, "").startswith("failed"):
            state = f"failed (see [{entry.stem}](#{entry.stem}))"
        lines.append(
            f"| {i} | [{entry.stem}](#{entry.stem}) | {entry.config.experiment} | {entry.config.seeds} | "
            f"{done} / {entry.total} | {len(frame) - n_imported} | {n_imported} | {duration(wall)} | "
            f"{duration(away)} | {duration(spent)} | {state} |"
        )
    lines += [
        "",
        f"Wall time of all sittings here: {duration(total_wall)}; of the sittings elsewhere that ran the imported "
        f"rows (where their directories recorded them): {duration(total_away)}. _Σ run time_ adds up the runs' own "
        "wall times (they run side by side, and imported ones ran elsewhere).",
    ]
    return lines


def render_reproduction(
    root: Path, paper: str, entries: list[PlanEntry], command: str | None = None, status: dict[str, str] | None = None
) -> Path:
    """Write ``root/report.md`` (and ``root/<stem>-<i>-<kind>.png``) for ``entries`` (every file of
    the paper's folder, run or not, in running order); returns its path. ``status``: a word per
    file stem where this invocation has one to say (``failed: ...``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(root)
    status = status or {}
    frames: dict[str, pd.DataFrame] = {}
    stale: dict[str, int] = {}
    for entry in entries:
        frames[entry.stem], stale[entry.stem] = file_rows(entry)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    lines = [
        f"# Reproduction: {paper}",
        "",
        f"Written {now} by raysteal {__version__}" + (f": `{command}`" if command else "") + ".",
        "",
        READING,
        "",
        "## Files",
        "",
    ]
    lines += _files_table(entries, frames, status) + [""]
    for entry in entries:
        frame = frames[entry.stem]
        spec = json.loads(entry.config.model_dump_json())
        description = " ".join(str(spec.get("description") or "").split())
        lines += [f"## {entry.stem}", "", f"`{entry.path}` (experiment `{entry.config.experiment}`). {description}", ""]
        if frame.empty:
            lines += [f"_No results yet ({entry.total} runs to go)._", ""]
            continue
        imported = imported_runs(entry.out_dir)
        lines += [_runs_line(entry, frame, imported, stale[entry.stem]), ""]
        floor_rows, floor_source = _floor_rows(entry, frame, frames)
        lines += [f"Floor: {floor_source}.", ""]
        if entry.stem in status:
            lines += [f"**This sitting:** {status[entry.stem]}", ""]
        origin = _origin_texts(frame, imported)
        if origin is not None:
            lines += ["The _runs_ column says which cells hold runs taken from the directories named above.", ""]
        lines += experiment_sections(
            entry.config.experiment,
            frame,
            spec,
            root,
            png_name=entry.stem,
            paper_beside=True,
            floor_rows=floor_rows,
            extra=None if origin is None else {"runs": origin},
        )
        missing = unmatched_paper_keys(spec.get("paper") or {}, frame)
        if missing:
            shown = ", ".join(f"`{key}` {spec['paper'][key]:.4f}" for key in missing)
            lines += [f"Paper values with no run here ({len(missing)}): {shown}.", ""]
    return write_text_atomically(root / "report.md", "\n".join(lines) + "\n")


def publish_reproduction(root: Path, entries: list[PlanEntry], dest: Path) -> list[Path]:
    """Copy a reproduction's results where the documentation keeps them: ``dest/report.md`` and its
    PNGs (the page, as :func:`render_reproduction` wrote it in ``root``), and for every file with
    rows ``dest/<stem>/results.parquet`` and ``dest/<stem>/report.md`` (+ PNGs, the file's own
    ``raysteal report``). Never the query logs, ledgers or checkpoints. Returns the files written."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    page = [Path(root) / "report.md", *sorted(Path(root).glob("*.png"))]
    written += [copy_atomically(source, dest / source.name) for source in page if source.is_file()]
    for entry in entries:
        store = ResultStore(entry.out_dir)
        if not store.runs_dir.is_dir() or not any(store.runs_dir.glob("*.parquet")):
            continue
        store.export()
        target = dest / entry.stem
        target.mkdir(parents=True, exist_ok=True)
        written.append(copy_atomically(store.results_file, target / "results.parquet"))
        if (entry.out_dir / SITTINGS_FILE).is_file():  # the wall times, for a reproduction from a fresh checkout
            written.append(copy_atomically(entry.out_dir / SITTINGS_FILE, target / SITTINGS_FILE))
        written.append(render_report(entry.out_dir, target))
        written += sorted(target.glob("*.png"))
    return written
