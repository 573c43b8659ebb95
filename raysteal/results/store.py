"""Results as a Parquet dataset: one file per run, written atomically (temp file + rename).

A directory of ``runs/<run_id>.parquet`` files is a dataset pandas, pyarrow and DuckDB read
directly (``pd.read_parquet(DIR / "runs")``). A run whose file exists is finished; a killed
experiment resumes by skipping those.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def run_id(run: dict[str, Any]) -> str:
    """Stable id of a run: a hash of its full specification (seed included)."""
    return hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class ResultStore:
    """The results of one output directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.logs_dir = self.root / "query_logs"

    def finished(self) -> set[str]:
        """Ids of runs with a results file."""
        if not self.runs_dir.is_dir():
            return set()
        return {p.stem for p in self.runs_dir.glob("*.parquet")}

    def write_row(self, rid: str, row: dict[str, Any]) -> Path:
        """Write one run's row atomically (nested values stored as JSON strings)."""
        flat = {k: (json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list, tuple)) else v) for k, v in row.items()}
        table = pa.Table.from_pylist([flat])
        path = self.runs_dir / f"{rid}.parquet"
        _atomic_write_table(table, path)
        return path

    def write_query_log(self, name: str, table: pa.Table) -> Path:
        """Persist a server's query log (joinable on ``attacker`` = run id, ``run id@N`` for a retry).

        One part per invocation (``NAME.parquet``, then ``NAME.1.parquet``, ...): a resumed
        experiment's server starts a new log, and the queries of earlier invocations are kept."""
        path = self.logs_dir / f"{name}.parquet"
        part = 0
        while path.exists():
            part += 1
            path = self.logs_dir / f"{name}.{part}.parquet"
        _atomic_write_table(table, path)
        return path

    def load(self) -> pd.DataFrame:
        """All rows (empty frame when none)."""
        if not self.runs_dir.is_dir() or not any(self.runs_dir.glob("*.parquet")):
            return pd.DataFrame()
        frames = [pd.read_parquet(p) for p in sorted(self.runs_dir.glob("*.parquet"))]
        return pd.concat(frames, ignore_index=True, sort=False)

    def load_query_logs(self) -> pd.DataFrame:
        if not self.logs_dir.is_dir():
            return pd.DataFrame()
        frames = [pd.read_parquet(p).assign(server=p.stem.split(".")[0]) for p in sorted(self.logs_dir.glob("*.parquet"))]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
