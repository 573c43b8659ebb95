"""The query log: one row per request (granted or refused), as an Arrow table results can join."""

from __future__ import annotations

import threading
import time

import pyarrow as pa

QUERY_LOG_SCHEMA = pa.schema(
    [
        ("attacker", pa.string()),
        ("request_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("count", pa.int64()),
        ("k", pa.int64()),
        ("granted", pa.bool_()),
        ("reason", pa.string()),
        ("defense", pa.string()),
        ("latency_ms", pa.float64()),
    ]
)


class QueryLog:
    """Append-only, thread-safe request log held column-wise (cheap appends, one Arrow build)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cols: dict[str, list] = {f.name: [] for f in QUERY_LOG_SCHEMA}

    def append(
        self,
        attacker: str,
        request_id: str,
        count: int,
        k: int,
        granted: bool,
        reason: str,
        defense: str,
        latency_ms: float = 0.0,
        at: float | None = None,
    ) -> None:
        row = {
            "attacker": attacker,
            "request_id": request_id,
            "time": int((time.time() if at is None else at) * 1e6),
            "count": int(count),
            "k": int(k),
            "granted": bool(granted),
            "reason": reason,
            "defense": defense,
            "latency_ms": float(latency_ms),
        }
        with self._lock:
            for key, value in row.items():
                self._cols[key].append(value)

    def __len__(self) -> int:
        return len(self._cols["attacker"])

    def to_arrow(self) -> pa.Table:
        with self._lock:
            return pa.table({k: pa.array(v, type=QUERY_LOG_SCHEMA.field(k).type) for k, v in self._cols.items()}, schema=QUERY_LOG_SCHEMA)
