"""A paper's reproduction (``raysteal reproduce PAPER --out DIR``): which experiment files of
``experiments/PAPER/`` it runs and in which order, the rows it takes from earlier results
directories (``--from``), and the record of each file's sittings (its wall time).

``DIR/<file stem>/`` is an ordinary ``raysteal run`` results directory, plus:

* ``reproduce.json``: one entry per sitting on the file (UTC start, wall seconds, runs finished
  before and after, status), so the report can give each file's wall time, and the sittings
  that ran the rows taken ``--from`` elsewhere (``imported_sittings``, each naming its source);
  it is published beside ``results.parquet``, so a fresh checkout keeps the wall times;
* ``imported.json``: the rows taken from another results directory (row file -> its source),
  so the report can say which runs came from where.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from raysteal.atomic import copy_atomically, write_text_atomically
from raysteal.data.datasets import dataset_spec
from raysteal.errors import ConfigError, DataFileError, RaystealError
from raysteal.experiment.config import ExperimentConfig, parse_experiment, read_config_file
from raysteal.experiment.run import expand_runs
from raysteal.results.store import ResultStore, published_rows

if TYPE_CHECKING:
    from raysteal.experiment.config import DatasetEntry
    from raysteal.experiment.run import Run

SITTINGS_FILE = "reproduce.json"
IMPORTS_FILE = "imported.json"

ATTACK_COST = {
    "popularity": 0.02,
    "qsd": 1.0,
    "ptd": 1.0,
    "ptq": 1.5,
    "pta": 2.0,
    "ptaq": 2.5,
    "pta_pre": 2.0,
    "ptaq_pre": 2.5,
    "aux_frozen": 2.0,
}
"""Rough relative cost of one collaborative run per attack (PTD on a 1M-interaction log = 1, about
20 s of a 2-core machine's wall time); an attack not listed counts 2. Only the order of the files
depends on these numbers."""
SEQUENTIAL_COST = {"popularity": 0.02, "dfme": 0.4, "seq_ptd": 24.0, "seq_ptq": 24.0, "seq_ptaq": 50.0}
"""The same for a run against a sequential target (Table 8 on ML-1M: DFME runs of 7-23 s, PTD/PTQ
students of ~900 s and PTAQ ones of ~2,000 s, one core each); an attack not listed counts 24."""


@dataclass
class PlanEntry:
    """One experiment file of a reproduction."""

    path: Path
    config: Any  # ExperimentConfig, --seeds / --figure-seeds applied
    out_dir: Path
    figure: bool  # its report is figures only (curves, heatmaps)
    target_keys: set[str] = field(default_factory=set)
    total: int = 0  # runs of the grid
    pending: int = 0  # runs without a row yet
    cost: float = 0.0  # estimated cost of the pending runs

    @property
    def stem(self) -> str:
        return self.path.stem


def default_experiments_root() -> Path:
    """``./experiments`` when it exists, else the ``experiments/`` folder of this checkout."""
    here = Path("experiments")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "experiments"


def file_kind(path: Path) -> str:
    """``experiment``, ``tune`` (a ``search_space`` section) or ``simulate`` (a ``simulation`` section)."""
    raw = read_config_file(path, "experiment")
    if "search_space" in raw:
        return "tune"
    if "simulation" in raw:
        return "simulate"
    return "experiment"


def experiment_files(folder: Path) -> list[Path]:
    """The experiment files of ``folder`` (YAML / JSON; Tune and simulate files left out), by name."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))
    return [p for p in files if file_kind(p) == "experiment"]


def paper_folders(root: Path) -> list[str]:
    """The folders of ``root`` holding at least one experiment file."""
    if not root.is_dir():
        return []
    names = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            if experiment_files(folder):
                names.append(folder.name)
        except ConfigError:  # an unreadable file: the folder is still one to name
            names.append(folder.name)
    return names


def resolve_paper(paper: str, root: Path | None = None) -> Path:
    """The folder PAPER names: ``root/PAPER`` (``root``: :func:`default_experiments_root`), or
    PAPER itself when it is a directory path; anything else is a one-line ``ConfigError`` listing
    the folders there are."""
    root = Path(root) if root is not None else default_experiments_root()
    candidate = root / paper
    if candidate.is_dir() and "/" not in paper.strip("/"):
        folder = candidate
    elif Path(paper).is_dir():
        folder = Path(paper)
    else:
        known = paper_folders(root)
        listed = ", ".join(known) if known else "none"
        raise ConfigError(
            f"no experiments folder {paper!r} under {root}; the folders there are: {listed} "
            "(or give the path of a folder of experiment files)"
        )
    if not experiment_files(folder):
        raise ConfigError(f"{folder}: holds no experiment file (Tune and simulate files are not run by reproduce)")
    return folder


def select_files(files: list[Path], only: list[str] | None) -> list[Path]:
    """``files`` narrowed to ``--only`` names: a file's stem or name, or a glob of them
    (``fig*``); a name matching none is a ``ConfigError`` listing the folder's files."""
    if not only:
        return files
    chosen: list[Path] = []
    for name in only:
        hits = [p for p in files if name in (p.stem, p.name) or fnmatch.fnmatch(p.stem, name) or fnmatch.fnmatch(p.name, name)]
        if not hits:
            raise ConfigError(f"--only {name}: no such experiment file; the folder's are: {', '.join(p.stem for p in files)}")
        chosen += [p for p in hits if p not in chosen]
    return [p for p in files if p in chosen]  # the folder's order; the plan orders them


def is_figure_file(config) -> bool:
    """Whether a file's report is figures only (its seeds follow ``--figure-seeds``)."""
    kinds = {entry.kind for entry in config.report}
    return bool(kinds) and kinds <= {"curve", "heatmap"}


def _dataset_size(dataset: DatasetEntry) -> float:
    """Interactions of a dataset entry, in millions, where the registry knows it (else 0.1)."""
    if dataset.path is None:
        try:
            expected = dataset_spec(dataset.name).expected
        except RaystealError:
            expected = {}
        counts = expected.get(dataset.preprocess) or expected.get("none")
        if counts:
            return counts[0] / 1e6
    return 0.1


def run_cost(run: Run) -> float:
    """The estimated relative cost of one run (see :data:`ATTACK_COST`)."""
    attack = run.attack_name
    if run.sequential:
        weight = SEQUENTIAL_COST.get(attack, 24.0)
    else:
        weight = ATTACK_COST.get(attack, 2.0)
    return weight * max(_dataset_size(run.dataset), 0.01)


def target_identity(run: Run) -> str:
    """What decides a run's trained target: dataset entry, the split's target half, target entry."""
    spec = run.spec
    split = spec["split"]
    return json.dumps([spec["dataset"], split.get("aux_fraction"), split.get("target_seed"), spec["target"]], sort_keys=True, default=str)


def plan(entries: list[PlanEntry]) -> list[PlanEntry]:
    """``entries`` with their pending runs counted and costed, in running order: files sharing a
    trained target together, the cheaper file first within a group, and the groups in the order
    that finishes the most files soonest (Smith's rule: the lower estimated cost per file first),
    so a single file of hours waits behind a group of many short ones."""
    for entry in entries:
        runs = list({r.id: r for r in expand_runs(entry.config)}.values())
        store = ResultStore(entry.out_dir)
        done = store.finished()
        pending = [r for r in runs if not store.is_finished(r.ids, done)]
        entry.total, entry.pending = len(runs), len(pending)
        entry.cost = sum(run_cost(r) for r in pending)
        entry.target_keys = {target_identity(r) for r in runs}
    # files sharing a target: connected groups
    group = list(range(len(entries)))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i in range(len(entries)):
        for j in range(i):
            if entries[i].target_keys & entries[j].target_keys:
                group[root(i)] = root(j)
    totals: dict[int, list[float]] = {}
    for i, entry in enumerate(entries):
        totals.setdefault(root(i), []).append(entry.cost)
    per_file = {r: sum(costs) / len(costs) for r, costs in totals.items()}
    first_name = {r: min(e.stem for i, e in enumerate(entries) if root(i) == r) for r in totals}
    order = sorted(range(len(entries)), key=lambda i: (per_file[root(i)], first_name[root(i)], entries[i].cost, entries[i].stem))
    return [entries[i] for i in order]


# ------------------------------------------------------------------ rows from elsewhere
def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except ValueError as err:
        raise DataFileError(f"{path}: not the JSON raysteal reproduce writes ({err}); move it away or restore it") from None


def _holds_rows(directory: Path) -> bool:
    """A results directory (``runs/``) or a published one (only ``results.parquet``)."""
    return (directory / "runs").is_dir() or (directory / "results.parquet").is_file()


def import_sources(sources: list[Path], stem: str) -> list[Path]:
    """The results directories ``--from`` names for file ``stem``: each source itself and, where
    it is an earlier reproduction or a published one (``docs/results/<paper>``), its ``<stem>/``
    directory."""
    out = []
    for source in sources:
        for candidate in (Path(source), Path(source) / stem):
            if _holds_rows(candidate) and candidate.resolve() not in [p.resolve() for p in out]:
                out.append(candidate)
    return out


def check_sources(sources: list[Path]) -> None:
    """Each ``--from`` directory exists (a ``ConfigError`` naming the first that does not)."""
    for source in sources:
        if not Path(source).is_dir():
            raise ConfigError(
                f"--from {source}: not a directory (a results directory of raysteal run, reproduce or tune, or a published one)"
            )


def import_rows(config, out_dir: Path, sources: list[Path]) -> dict[str, int]:
    """Copy into ``out_dir/runs`` the rows of ``config``'s runs that a source directory (a results
    directory, or a published one holding only ``results.parquet``) holds and
    ``out_dir`` does not (a run's id is a hash of its whole specification, so a row is taken only
    for the very run); each is recorded in ``out_dir/imported.json``. Returns rows copied per source."""
    store = ResultStore(out_dir)
    done = store.finished()
    runs = [r for r in expand_runs(config) if not store.is_finished(r.ids, done)]
    record = _read_json(Path(out_dir) / IMPORTS_FILE, {"runs": {}})
    copied: dict[str, int] = {}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for source in sources:
        if Path(source).resolve() == Path(out_dir).resolve():
            continue
        source_store = ResultStore(source)
        # a results directory's row files, else a published results.parquet's rows
        published = {} if source_store.runs_dir.is_dir() else published_rows(source_store.results_file)
        available = source_store.finished() or set(published)
        for run in list(runs):
            rid = next((i for i in run.ids if i in available), None)
            if rid is None:
                continue
            if rid in published:
                store.import_row(rid, published[rid])
            else:
                copy_atomically(source_store.runs_dir / f"{rid}.parquet", store.runs_dir / f"{rid}.parquet")
            record["runs"][rid] = {"from": str(Path(source).resolve()), "imported_utc": now}
            copied[str(source)] = copied.get(str(source), 0) + 1
            runs.remove(run)
    if copied:
        write_text_atomically(Path(out_dir) / IMPORTS_FILE, json.dumps(record, indent=2, sort_keys=True))
        store.save_experiment(config.experiment, config.model_dump(mode="json"))  # the report's tables, without a run here
    return copied


def saved_experiments(out_dir: Path) -> list[ExperimentConfig]:
    """The experiments whose specifications ``out_dir`` keeps (``experiments/*.json``: each
    ``raysteal run`` into it saves its file's whole grid there), validated. None saved is a
    ``ConfigError``; a damaged or stale one names its file."""
    specs = ResultStore(out_dir).load_experiments()
    if not specs:
        raise ConfigError(
            f"{out_dir}: no experiment specification under experiments/ (raysteal run saves one there), so no row can be matched to a run"
        )
    return [parse_experiment(spec, source=f"{out_dir}/experiments/{name}.json") for name, spec in specs.items()]


def import_saved_experiments_rows(out_dir: Path, sources: list[Path]) -> dict[str, dict[str, int]]:
    """``raysteal report --from``: :func:`import_rows` for every experiment ``out_dir`` keeps a
    specification of, so a results directory that gathers the runs of several experiment files
    (``raysteal run A.yaml --out D``, ``raysteal run B.yaml --out D``) takes back the published rows
    of each, matched by run id, before its report and ``results.parquet`` are written. Returns rows
    copied per experiment and source (experiments that took none are left out)."""
    check_sources(sources)
    configs = saved_experiments(out_dir)
    return {config.experiment: copied for config in configs if (copied := import_rows(config, out_dir, sources))}


def rows_of_unkept_experiments(out_dir: Path, sources: list[Path]) -> list[str]:
    """One line per source and experiment whose rows ``raysteal report --from`` cannot take: the
    source holds them, but ``out_dir`` keeps no specification of their experiment to match them
    by; each line names the command that takes them."""
    kept = set(ResultStore(out_dir).load_experiments())
    lines = []
    for source in sources:
        store = ResultStore(source)
        frame = store.load() if store.runs_dir.is_dir() else _read_experiment_column(store.results_file)
        if frame.empty or "experiment" not in frame.columns:
            continue
        for experiment, count in frame["experiment"].value_counts().sort_index().items():
            if experiment not in kept:
                lines.append(
                    f"{source} holds {count} row(s) of experiment {experiment!r}, which {out_dir} keeps no specification of: "
                    f"`raysteal run ITS_FILE --out {out_dir} --from {source}` takes them (--where narrows it to the runs they are)"
                )
    return lines


def _read_experiment_column(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path, columns=["experiment"])
    except (OSError, ValueError, KeyError):  # no such column, or not a parquet file: import_rows says which
        return pd.DataFrame()


def imported_runs(out_dir: Path) -> dict[str, str]:
    """Row file id -> the directory it was imported from (``--from``), for ``out_dir``."""
    record = _read_json(Path(out_dir) / IMPORTS_FILE, {"runs": {}})
    return {rid: entry.get("from", "?") for rid, entry in record.get("runs", {}).items()}


def retrained_targets(config, out_dir: Path) -> list[str]:
    """One line per target of ``config`` whose rows in ``out_dir`` were scored against two
    trainings of it: rows taken ``--from`` elsewhere and rows run here that share the target's
    specification (dataset, split, target entry) but not its test accuracy. A target cache is
    keyed by specification, not by code, so another machine or version may retrain it slightly
    differently (float rounding grows over a training); rows of two trainings then differ by the
    target as well as by their settings."""
    imported = imported_runs(out_dir)
    if not imported:
        return []
    frame = ResultStore(out_dir).load()
    column = "target_test_ndcg@10_full"
    if frame.empty or column not in frame.columns:
        return []
    accuracy = dict(zip(frame["run_id"].astype(str), pd.to_numeric(frame[column], errors="coerce")))
    groups: dict[str, dict[str, set[float]]] = {}
    for run in expand_runs(config):
        rid = next((i for i in run.ids if i in accuracy), None)
        if rid is None or accuracy[rid] != accuracy[rid]:  # no row, or no accuracy in it
            continue
        where = "taken" if rid in imported else "here"
        groups.setdefault(target_identity(run), {}).setdefault(where, set()).add(round(float(accuracy[rid]), 6))
    lines = []
    for identity, seen in groups.items():
        if {"taken", "here"} <= set(seen) and seen["taken"] != seen["here"]:
            dataset, _, _, target = json.loads(identity)
            lines.append(
                f"{config.experiment}: {target.get('model')} on {dataset.get('name')}: rows taken --from were scored against a "
                f"training of the target with test NDCG@10 {', '.join(f'{v:.4f}' for v in sorted(seen['taken']))}, rows run here "
                f"against one with {', '.join(f'{v:.4f}' for v in sorted(seen['here']))} (retrained by other code or on another "
                "device): compare rows within one training"
            )
    return lines


# ------------------------------------------------------------------ sittings (wall time)
def record_sitting(out_dir: Path, file: Path, experiment: str, sitting: dict[str, Any]) -> None:
    """Append one sitting (``started_utc``, ``wall_s``, ``status``, run counts) to ``out_dir/reproduce.json``."""
    path = Path(out_dir) / SITTINGS_FILE
    record = _read_json(path, {})
    record.update({"file": str(file), "experiment": experiment})
    record.setdefault("sittings", []).append(sitting)
    write_text_atomically(path, json.dumps(record, indent=2))


def _sittings_record(out_dir: Path) -> dict[str, Any]:
    """``out_dir/reproduce.json``, checked: its ``sittings`` and ``imported_sittings`` are lists of
    entries with a number of wall seconds (a ``DataFileError`` naming the file otherwise)."""
    path = Path(out_dir) / SITTINGS_FILE
    record = _read_json(path, {})
    lists = [record.get(key, []) for key in ("sittings", "imported_sittings")] if isinstance(record, dict) else [None]
    for entries in lists:
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("wall_s", 0.0), (int, float)) and not isinstance(e.get("wall_s"), bool)
            for e in entries
        ):
            raise DataFileError(
                f"{path}: not the sittings record raysteal reproduce writes (lists of sittings with wall_s seconds); move it away or restore it"
            )
    return record


def sittings(out_dir: Path) -> list[dict[str, Any]]:
    """The sittings recorded for ``out_dir`` (oldest first)."""
    return list(_sittings_record(out_dir).get("sittings", []))


def imported_sittings(out_dir: Path) -> list[dict[str, Any]]:
    """The sittings, elsewhere, that ran the rows ``out_dir`` took ``--from`` another directory
    (each with ``from``: that directory)."""
    return list(_sittings_record(out_dir).get("imported_sittings", []))


def sittings_wall(held: list[dict[str, Any]]) -> float | None:
    """The wall seconds of ``held`` sittings added up; ``None`` for none."""
    return sum(float(s.get("wall_s", 0.0)) for s in held) if held else None


def _sitting_key(sitting: dict[str, Any]) -> tuple[str, float]:
    return str(sitting.get("started_utc")), round(float(sitting.get("wall_s", 0.0)), 3)


def carry_sittings(out_dir: Path, sources: list[Path]) -> int:
    """Copy into ``out_dir/reproduce.json`` (as ``imported_sittings``) the sittings recorded by the
    source directories that supplied ``out_dir``'s imported rows, theirs and those they carried
    in turn, each once (a sitting recorded here is not carried back). Returns how many were added."""
    used = {str(Path(p).resolve()) for p in imported_runs(out_dir).values()}
    path = Path(out_dir) / SITTINGS_FILE
    record = _sittings_record(out_dir)
    seen = {_sitting_key(s) for s in record.get("sittings", []) + record.get("imported_sittings", [])}
    added = []
    for source in sources:
        where = str(Path(source).resolve())
        if where not in used:
            continue
        theirs = _sittings_record(Path(source))
        for sitting in theirs.get("sittings", []) + theirs.get("imported_sittings", []):
            if _sitting_key(sitting) in seen:
                continue
            seen.add(_sitting_key(sitting))
            added.append({**sitting, "from": sitting.get("from", where)})
    if added:
        record.setdefault("imported_sittings", []).extend(added)
        write_text_atomically(path, json.dumps(record, indent=2))
    return len(added)


def link_shared_cache(out_dir: Path, shared: Path) -> None:
    """Let the file's auxiliary-model cache (``out_dir/cache``, where ``raysteal run`` keeps it
    without ``--cache-dir``) be the reproduction's shared one: a relative symlink to ``shared``,
    made only where ``out_dir/cache`` does not exist yet (an earlier real one is kept)."""
    link = Path(out_dir) / "cache"
    if link.exists() or link.is_symlink():
        return
    Path(shared).mkdir(parents=True, exist_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(os.path.relpath(Path(shared).resolve(), link.parent.resolve()), target_is_directory=True)
    except OSError:  # a file system without links: the file keeps its own cache
        pass
