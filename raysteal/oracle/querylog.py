"""The query log: one row per request (granted or refused), as an Arrow table results can join.

A log opened with a journal (``querylog-<session>.jsonl`` beside the budget ledger, one per server
start, kept across its restarts) appends each row as a JSON line (flushed) and replays them when
reopened. Granted rows are as durable as the ledger: a charge the journal of the ledger holds but
the log does not (a crash between charging and answering) gets a row rebuilt from the charge
(:meth:`QueryLog.reconcile`, reason :data:`UNCONFIRMED`); the retry that answers it replaces that
row, so every charged request has exactly one granted row.

A granted row also carries what was asked and answered, one entry per query of the request (the
content columns, :data:`CONTENT_COLUMNS`; null on refused rows and on rows of older logs): each
input's length, its last item (the user id for a collaborative target), 64-bit hashes of the input
and of the input less its last item, and the list answered. That is what a query-log detector
(:mod:`raysteal.detection`) reads: which items an account asks about, and whether each query
extends an earlier one by an item the server had just returned.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raysteal.errors import DataFileError
from raysteal.oracle.ledger import session_charges

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
        ("lengths", pa.list_(pa.int32())),
        ("last_items", pa.list_(pa.int64())),
        ("input_hashes", pa.list_(pa.int64())),
        ("prefix_hashes", pa.list_(pa.int64())),
        ("tail_hashes", pa.list_(pa.int64())),
        ("answers", pa.list_(pa.list_(pa.int32()))),
    ]
)

CONTENT_COLUMNS = ("lengths", "last_items", "input_hashes", "prefix_hashes", "tail_hashes", "answers")
"""Per-query content of a granted row (see the module docstring); null where not recorded."""

_HASH_BASE = np.uint64(1_000_003)
EMPTY_HASH = 0
"""The hash of an empty input (the prefix of a one-item input, or of a user id)."""


def sequence_hashes(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(lengths, last_items, input_hashes, prefix_hashes, tail_hashes)`` of a validated request:
    ``int64 [B]`` user ids, or ``int64 [B, L]`` sequences left-padded with -1. The hash is a
    polynomial hash over the items in order (mod 2**64, as int64), so ``prefix_hashes[i]`` (the
    input less its last item) equals ``input_hashes[j]`` exactly when query ``i`` extends query
    ``j`` by one item, and equals ``tail_hashes[j]`` (the input less its first item) when query
    ``i`` slides a full window of query ``j`` by one item (up to hash collisions)."""
    arr = np.asarray(inputs, dtype=np.int64)
    if arr.ndim == 1:  # user ids: an input of one item
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"inputs must be user ids or padded sequences, got shape {arr.shape}")
    lengths = (arr >= 0).sum(axis=1).astype(np.int32)
    prefix = np.zeros(len(arr), dtype=np.uint64)
    tail = np.zeros(len(arr), dtype=np.uint64)
    first = arr.shape[1] - lengths  # column of each input's first item
    with np.errstate(over="ignore"):
        for col in range(arr.shape[1]):
            items = arr[:, col]
            real = items >= 0
            step = (items[real] + 1).astype(np.uint64)
            if col < arr.shape[1] - 1:  # left-padded: the last column holds every last item
                prefix[real] = prefix[real] * _HASH_BASE + step
            later = real.copy()
            later[real] = col > first[real]
            tail[later] = tail[later] * _HASH_BASE + (items[later] + 1).astype(np.uint64)
        last = arr[:, -1] if arr.shape[1] else np.full(len(arr), -1, dtype=np.int64)
        full = np.where(last >= 0, prefix * _HASH_BASE + (last + 1).astype(np.uint64), prefix)
    return lengths, last, full.view(np.int64), prefix.view(np.int64), tail.view(np.int64)


UNCONFIRMED = "charged; answer unconfirmed (server lost)"
"""Reason of a granted row rebuilt from the ledger: charged, then the server died before logging."""

SESSION_KEY = b"raysteal.session"
"""Arrow schema metadata key naming the log's session (its part file is named after it)."""

_SESSION = re.compile(r"\d+-[0-9a-f]{8}")


def new_session() -> str:
    """A writer id unique per process and call (``<pid>-<8 hex>``): names a journal and a part."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def journal_name(session: str) -> str:
    """The file name of ``session``'s query-log journal, in its server's ledger directory."""
    return f"querylog-{session}.jsonl"


def part_name(server: str, session: str) -> str:
    """The file name of a query-log part: unique per server start, so writers never collide."""
    return f"{server}.{session}.parquet"


def part_session(path: Path) -> str | None:
    """The session a part file was named after (``None`` for parts of older versions)."""
    stem = path.name.removesuffix(".parquet")
    tail = stem.rsplit(".", 1)[-1] if "." in stem else ""
    return tail if _SESSION.fullmatch(tail) else None


def part_server(path: Path) -> str:
    """The server a part file belongs to (its name less the session, or the part number of older parts)."""
    stem = path.name.removesuffix(".parquet")
    return stem.rsplit(".", 1)[0] if part_session(path) else stem.split(".")[0]


def content_of(inputs: np.ndarray | None, answers: np.ndarray | None) -> dict[str, np.ndarray | None]:
    """The content columns of one row, as arrays (all null without ``inputs``); ``answers`` is kept
    as ``int32 [B, k]`` padded with -1 (a row of a log holds 4 bytes per answered item)."""
    if inputs is None:
        return {c: None for c in CONTENT_COLUMNS}
    lengths, last, full, prefix, tail = sequence_hashes(inputs)
    lists = None if answers is None else np.asarray(answers, dtype=np.int64).reshape(len(lengths), -1).astype(np.int32)
    return {"lengths": lengths, "last_items": last, "input_hashes": full, "prefix_hashes": prefix, "tail_hashes": tail, "answers": lists}


def _from_json(row: dict[str, Any]) -> dict[str, Any]:
    """A journaled row's content columns back to arrays (answers padded with -1)."""
    for c in CONTENT_COLUMNS[:-1]:
        if row.get(c) is not None:
            row[c] = np.asarray(row[c], dtype=np.int32 if c == "lengths" else np.int64)
    if row.get("answers") is not None:
        lists = row["answers"]
        padded = np.full((len(lists), max((len(a) for a in lists), default=0)), -1, dtype=np.int32)
        for i, a in enumerate(lists):
            padded[i, : len(a)] = a
        row["answers"] = padded
    return row


def _to_json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for c in CONTENT_COLUMNS[:-1]:
        if out.get(c) is not None:
            out[c] = out[c].tolist()
    if out.get("answers") is not None:
        out["answers"] = [a[a >= 0].tolist() for a in out["answers"]]
    return out


def _answers_column(rows: list[np.ndarray | None]) -> pa.Array:
    """``list<list<int32>>`` of padded answer arrays (padding dropped; null rows kept null)."""
    outer, counts, values, nulls = [0], [], [], []
    for a in rows:
        nulls.append(a is None)
        if a is None:
            outer.append(outer[-1])
            continue
        valid = a >= 0
        counts.append(valid.sum(axis=1))
        values.append(a[valid])
        outer.append(outer[-1] + len(a))
    inner_offsets = np.r_[0, np.cumsum(np.concatenate(counts))] if counts else np.zeros(1, dtype=np.int64)
    flat = np.concatenate(values).astype(np.int32) if values else np.zeros(0, dtype=np.int32)
    inner = pa.ListArray.from_arrays(pa.array(inner_offsets, pa.int32()), pa.array(flat, pa.int32()))
    return pa.ListArray.from_arrays(pa.array(outer, pa.int32()), inner, mask=pa.array(nulls, pa.bool_()))


class QueryLog:
    """Append-only, thread-safe request log held column-wise (cheap appends, one Arrow build),
    journaled to ``journal_path`` when given (``read_only``: replay it, never write)."""

    def __init__(
        self, journal_path: str | os.PathLike | None = None, session: str = "", defense: str = "", read_only: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self._cols: dict[str, list] = {f.name: [] for f in QUERY_LOG_SCHEMA}
        self._granted: dict[str, int] = {}  # request id -> index of its granted row
        self.session, self.defense = session, defense
        self._path = Path(journal_path) if journal_path else None
        self._journal = None
        if self._path is None:
            return
        complete = self._replay(self._path) if self._path.exists() else 0
        if read_only:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path.exists() and complete < self._path.stat().st_size:
            os.truncate(self._path, complete)  # a torn last line: that row was never written whole
        fresh = not self._path.exists() or complete == 0
        self._journal = open(self._path, "a", encoding="utf-8")
        if fresh:
            self._write({"op": "open", "session": session, "defense": defense})

    # ------------------------------------------------------------- journal
    def _replay(self, path: Path) -> int:
        """Rebuild rows from the journal at ``path``; returns the bytes of its complete lines."""
        complete = 0
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.endswith(b"\n"):
                    break
                self._apply(raw, number)
                complete += len(raw)
        return complete

    def _apply(self, raw: bytes, number: int) -> None:
        where = f"query log journal {self._path}, line {number}"
        try:
            entry = json.loads(raw.decode("utf-8"))
            if entry["op"] == "open":
                self.session, self.defense = self.session or str(entry["session"]), self.defense or str(entry["defense"])
            elif entry["op"] == "row":
                row = {f.name: entry[f.name] for f in QUERY_LOG_SCHEMA if f.name not in CONTENT_COLUMNS}
                self._put(_from_json({**row, **{c: entry.get(c) for c in CONTENT_COLUMNS}}), bool(entry.get("settles", False)))
            else:
                raise ValueError(f"unknown op {entry['op']!r}")
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DataFileError(f"{where}: not a query-log entry ({type(err).__name__}: {err}); the journal is corrupt") from None

    def _write(self, entry: dict[str, Any]) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps(entry) + "\n")
            self._journal.flush()  # no fsync: granted rows are rebuilt from the (fsynced) ledger

    def _put(self, row: dict[str, Any], settles: bool = False) -> None:
        """Add a row; a granted row (a retry's answer) or a row that ``settles`` the request (its
        failure after the charge: refunded) replaces the request's granted row."""
        at = self._granted.pop(row["request_id"], None) if row["granted"] or settles else None
        if at is None:
            at = len(self._cols["attacker"])
            for key, value in row.items():
                self._cols[key].append(value)
        else:
            for key, value in row.items():
                self._cols[key][at] = value
        if row["granted"]:
            self._granted[row["request_id"]] = at

    # ------------------------------------------------------------- public
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
        settles: bool = False,
        inputs: np.ndarray | None = None,
        answers: np.ndarray | None = None,
    ) -> None:
        """Log one request (``settles``: a charged request's final refusal, see :meth:`_put`);
        ``inputs`` (the validated request) and ``answers`` (the lists returned) fill the content
        columns of a granted row."""
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
            **content_of(inputs, answers),
        }
        with self._lock:
            self._put(row, settles)
            self._write({"op": "row", **_to_json(row), **({"settles": True} if settles else {})})

    def reconcile(self, charges: dict[str, dict]) -> int:
        """Add a granted row (reason :data:`UNCONFIRMED`, no latency) for each charge in
        ``charges`` (:func:`raysteal.oracle.ledger.session_charges`) the log has no granted row
        for; not journaled (rebuilt at every open). Returns how many were added."""
        with self._lock:
            missing = [(rid, c) for rid, c in charges.items() if rid not in self._granted]
            for rid, charge in missing:
                k = charge.get("k")
                self._put(
                    {
                        "attacker": str(charge["attacker"]),
                        "request_id": rid,
                        "time": int(float(charge.get("t", 0.0)) * 1e6),
                        "count": int(charge["count"]),
                        "k": -1 if k is None else int(k),
                        "granted": True,
                        "reason": UNCONFIRMED,
                        "defense": self.defense,
                        "latency_ms": math.nan,
                        **content_of(None, None),
                    }
                )
        return len(missing)

    def __len__(self) -> int:
        return len(self._cols["attacker"])

    def to_arrow(self) -> pa.Table:
        """The rows (in the order first logged), the session in the schema's metadata."""
        schema = QUERY_LOG_SCHEMA.with_metadata({SESSION_KEY: self.session.encode()}) if self.session else QUERY_LOG_SCHEMA
        with self._lock:
            columns = {k: pa.array(v, type=QUERY_LOG_SCHEMA.field(k).type) for k, v in self._cols.items() if k != "answers"}
            columns["answers"] = _answers_column(self._cols["answers"])
            return pa.table({f.name: columns[f.name] for f in QUERY_LOG_SCHEMA}, schema=schema)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def journaled_logs(ledgers_dir: str | os.PathLike, skip: set[str]) -> Iterator[tuple[str, pa.Table]]:
    """``(server, log)`` of every session journaled under ``ledgers_dir/<server>/`` that is not in
    ``skip`` (the sessions whose part was written): a killed invocation's log, rebuilt from its
    journal and its server's ledger."""
    root = Path(ledgers_dir)
    if not root.is_dir():
        return
    for path in sorted(root.glob("*/querylog-*.jsonl")):
        session = path.name.removeprefix("querylog-").removesuffix(".jsonl")
        if session in skip:
            continue
        log = QueryLog(path, session=session, read_only=True)
        log.reconcile(session_charges(path.parent / "ledger.jsonl", session))
        if len(log):
            yield path.parent.name, log.to_arrow()
