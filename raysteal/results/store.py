"""Results as a Parquet dataset: one file per run, written atomically (temp file + rename).

Each run's row is ``runs/<run_id>.parquet``; the files differ in columns (each attack has its own
settings and figures), so read them with :meth:`ResultStore.load`, or read ``results.parquet``:
every row in one schema, rewritten at the end of each ``raysteal run`` (also one with nothing
left to run; :meth:`ResultStore.export`), the file pandas, pyarrow and DuckDB read directly. A run whose file exists is finished; a killed
experiment resumes by skipping those. An unfinished run may keep what it has done so far in
``partial/<run_id>/`` (e.g. a DFME run's synthesis and student epochs); the directory goes once
the run's row is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raysteal.atomic import write_atomically, write_text_atomically
from raysteal.errors import DataFileError

# Settings added to run specifications after results were first stored, oldest first, each with
# the value that reproduces the specification from before it existed. While a setting is at that
# value it stays out of the id, so a new optional setting does not turn finished runs into
# unfinished ones (a resumed experiment would redo them, and a report would count both rows as
# seeds). A new field of a dataset, target, split or experiment entry belongs here;
# tests/test_results_store.py pins the id of a fixed specification to catch one that is not.
ADDED_RUN_FIELDS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("target", "checkpoint"), None),
    (("split", "head_fraction"), 0.2),
    (("dataset", "path"), None),
    (("dataset", "format"), None),
    (("dataset", "columns"), {}),
    (("query_cache",), False),
    (("split", "attacker_population"), None),
    (("split", "scored_users"), "all"),
    (("target", "watermark"), None),
    (("target", "gro"), None),
    (("split", "target_training"), "leave_one_out"),
    (("split", "attacker_unit"), "users"),
    # collaborative targets' dynamic negative sampling (a file pinning Rendle's uniform draws, 1,
    # names the target that runs had before the option existed)
    (("target", "params", "negative_candidates"), 1),
)
# Ids written between a setting's addition and its registration above kept it, at its default,
# in the hash: this many of the oldest added settings (raysteal 0.1.0: ``target.checkpoint``).
_LEGACY_KEPT = (1,)


def _without(run: dict[str, Any], fields: tuple[tuple[tuple[str, ...], Any], ...]) -> dict[str, Any]:
    """``run`` with each of ``fields`` removed while it holds its registered default."""
    out = json.loads(json.dumps(run, default=str))
    for path, default in fields:
        parent = out
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent and parent[path[-1]] == default:
            del parent[path[-1]]
    return out


def _hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]


def canonical_run(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` without the later-added settings that are at their default (:data:`ADDED_RUN_FIELDS`)."""
    return _without(run, ADDED_RUN_FIELDS)


def run_id(run: dict[str, Any]) -> str:
    """Stable id of a run: a hash of its full specification (seed included), see :func:`canonical_run`."""
    if not isinstance(run, dict):  # a typed Run hashes its spec: ``run.id``
        raise TypeError(f"run_id takes a run's JSON form (Run.spec), not {type(run).__name__}")
    return _hash(canonical_run(run))


def run_ids(run: dict[str, Any]) -> list[str]:
    """:func:`run_id` first, then the ids earlier versions gave the same run (still finished runs)."""
    ids = [run_id(run)]
    for kept in _LEGACY_KEPT:
        legacy = _hash(_without(run, ADDED_RUN_FIELDS[kept:]))
        if legacy not in ids:
            ids.append(legacy)
    return ids


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    write_atomically(path, lambda fh: pq.write_table(table, fh))


def _read_rows(path: Path, what: str) -> pd.DataFrame:
    """One Parquet file of the store; a damaged one (raysteal writes atomically, so something else
    changed it) is a ``DataFileError`` naming it, never a pyarrow traceback."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataFileError(
            f"{path}: not a readable Parquet file ({what}): {err}; move it away (a re-run redoes a missing run) or restore it"
        ) from None


def rows_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as one Arrow table. A column holding values of several kinds across runs (a
    setting that is a number in one run and text in another) is stored as text, missing values
    kept missing, so every row fits one schema."""
    columns: dict[str, pa.Array] = {}
    for name in frame.columns:
        values = frame[name]
        kinds = {type(v) for v in values if not _missing(v)} if values.dtype == object else set()
        try:
            if bool in kinds and len(kinds) > 1:  # Arrow would read True as 1.0 beside numbers
                raise pa.ArrowInvalid("booleans beside other values")
            columns[str(name)] = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[str(name)] = pa.array([None if _missing(v) else str(v) for v in values], type=pa.string())
    return pa.table(columns)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def published_rows(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The rows of a published ``results.parquet`` (``raysteal report``'s export, e.g. one committed
    under ``docs/results/``), one per run id, each without the columns that are empty in it (the
    export's shared schema gives every row every attack's columns). A file without a ``run_id``
    column is a ``DataFileError``."""
    frame = _read_rows(Path(path), "a results file")
    if "run_id" not in frame.columns:
        raise DataFileError(f"{path}: has no run_id column, so its rows cannot be matched to runs; it is not a raysteal results file")
    rows = {}
    for _, row in frame.iterrows():
        kept = row[[not _missing(v) for v in row.tolist()]]
        rows[str(row["run_id"])] = kept.to_frame().T.reset_index(drop=True)
    return rows


class ResultStore:
    """The results of one output directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.results_file = self.root / "results.parquet"
        self.runs_dir = self.root / "runs"
        self.logs_dir = self.root / "query_logs"
        self.partial_dir = self.root / "partial"

    def finished(self) -> set[str]:
        """Ids of runs with a results file."""
        if not self.runs_dir.is_dir():
            return set()
        return {p.stem for p in self.runs_dir.glob("*.parquet")}

    def is_finished(self, ids: list[str], finished: set[str] | None = None) -> bool:
        """Whether a run has a row, under any of its ``ids`` (``Run.ids``: its id, then those earlier
        versions gave it)."""
        done = self.finished() if finished is None else finished
        return any(rid in done for rid in ids)

    def work_dir(self, rid: str) -> Path:
        """The absolute scratch directory of unfinished run ``rid`` (not created here); workers on
        other nodes resume from it only when the output directory is shared storage."""
        return (self.partial_dir / rid).resolve()

    def clear_finished_work(self, finished: set[str] | None = None) -> list[str]:
        """Remove the scratch directories of runs that have a row (a crash between writing the
        row and removing its directory leaves one); returns their ids. Directories of unfinished
        runs -- perhaps another invocation's, running now -- are kept."""
        done = self.finished() if finished is None else finished
        cleared = sorted(p.name for p in self.partial_dir.glob("*") if p.name in done) if self.partial_dir.is_dir() else []
        for rid in cleared:
            shutil.rmtree(self.partial_dir / rid, ignore_errors=True)
        return cleared

    def stray_work(self, expected: set[str]) -> list[str]:
        """Ids of scratch directories that belong to no run in ``expected`` (e.g. runs whose
        settings, hence ids, changed since); they are never removed automatically."""
        if not self.partial_dir.is_dir():
            return []
        return sorted(p.name for p in self.partial_dir.iterdir() if p.is_dir() and p.name not in expected)

    def write_row(self, rid: str, row: dict[str, Any]) -> Path:
        """Write one run's row atomically (nested values stored as JSON strings), then drop the
        run's scratch directory: a finished run is never resumed."""
        flat = {k: (json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list, tuple)) else v) for k, v in row.items()}
        table = pa.Table.from_pylist([flat])
        path = self.runs_dir / f"{rid}.parquet"
        _atomic_write_table(table, path)
        shutil.rmtree(self.partial_dir / rid, ignore_errors=True)
        return path

    def save_experiment(self, name: str, spec: dict[str, Any]) -> Path:
        """Keep an experiment's validated specification beside its rows (``experiments/NAME.json``:
        the report takes its descriptions and tables from it)."""
        return write_text_atomically(self.root / "experiments" / f"{name}.json", json.dumps(spec, indent=2))

    def load_experiments(self) -> dict[str, dict[str, Any]]:
        """The specifications :meth:`save_experiment` kept, by experiment name (empty when none). A
        file that is not one (not JSON, not a mapping, no ``experiment`` name) is a ``DataFileError``
        naming it."""
        specs = {}
        for path in sorted((self.root / "experiments").glob("*.json")):
            try:
                spec = json.loads(path.read_text())
                specs[spec["experiment"]] = spec
            except (ValueError, KeyError, TypeError) as err:
                raise DataFileError(f"{path}: not an experiment spec saved by raysteal run ({err!r}); move it away or restore it") from None
        return specs

    def import_row(self, rid: str, row: pd.DataFrame) -> Path:
        """Write an already-made row (one from :func:`published_rows`) as run ``rid``'s, atomically."""
        path = self.runs_dir / f"{rid}.parquet"
        _atomic_write_table(rows_table(row.infer_objects()), path)
        return path

    def write_query_log(self, name: str, table: pa.Table) -> Path:
        """Persist a server's query log (joinable on ``attacker`` = run id, ``run id@N`` for a retry).

        One part per server start, ``NAME.<session>.parquet`` (the session the server's log carries,
        else a fresh one): unique per writer, so invocations sharing one output directory never
        overwrite each other's part, and writing a session's log again replaces its own part."""
        # loads torch: imported where it is used, so this module loads without it
        from raysteal.oracle.querylog import SESSION_KEY, new_session, part_name

        session = (table.schema.metadata or {}).get(SESSION_KEY, b"").decode() or new_session()
        path = self.logs_dir / part_name(name, session)
        _atomic_write_table(table, path)
        return path

    def load(self) -> pd.DataFrame:
        """All rows (empty frame when none)."""
        if not self.runs_dir.is_dir() or not any(self.runs_dir.glob("*.parquet")):
            return pd.DataFrame()
        frames = [_read_rows(p, "a run's row") for p in sorted(self.runs_dir.glob("*.parquet"))]
        return pd.concat(frames, ignore_index=True, sort=False)

    def export(self) -> Path | None:
        """Write every row to ``results.parquet`` in one schema (atomically); ``None`` when no
        run has a row yet."""
        frame = self.load()
        if frame.empty:
            return None
        _atomic_write_table(rows_table(frame), self.results_file)
        return self.results_file

    def export_or_warn(self) -> Path | None:
        """:meth:`export` where rows have finished and must not be lost to one damaged row file:
        such a file is a ``RuntimeWarning`` (``results.parquet`` stays as it was; ``raysteal report``
        names the file), not an error."""
        import warnings

        try:
            return self.export()
        except DataFileError as err:
            warnings.warn(f"results.parquet not written: {err}", RuntimeWarning, stacklevel=2)
            return None

    def load_query_logs(self) -> pd.DataFrame:
        """Every server's query log: the parts, and the journal (``ledgers/NAME/querylog-*.jsonl``)
        of each server start that wrote no part (an invocation killed, interrupted or still running)."""
        # loads torch: imported where it is used, so this module loads without it
        from raysteal.oracle.querylog import journaled_logs, part_server, part_session

        parts = sorted(self.logs_dir.glob("*.parquet")) if self.logs_dir.is_dir() else []
        frames = [_read_rows(p, "a query log").assign(server=part_server(p)) for p in parts]
        written = {session for p in parts if (session := part_session(p)) is not None}
        frames += [table.to_pandas().assign(server=server) for server, table in journaled_logs(self.root / "ledgers", written)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
