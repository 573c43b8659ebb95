"""Parsers of the on-disk formats of recommender datasets.

Every reader returns a *canonical* Arrow table in file order with columns ``user`` and
``item`` (original ids: ``int64``, or ``string`` where ids are not plain integers) and, when
the file has them, ``timestamp`` (``int64`` seconds, or ``float64``) and ``rating``. Dense
re-indexing, ordering and filtering happen afterwards in :mod:`raysteal.data.preprocess`.

A reader registered with ``@file_format(name)`` is also a ``format:`` a user's ``path:`` file may
name (:func:`raysteal.data.datasets.load_file`): a new format is one function here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as _compute
import pyarrow.parquet as pq

from raysteal.data.readers import canonical_ids, first_line, read_bytes, read_delimited, split_lines_of_ints
from raysteal.errors import ConfigError, DataFileError

# pyarrow.compute makes most of its kernels (equal, sort_indices, ...) at import time, so a type
# checker does not see them: the module is typed Any here.
pc: Any = _compute

I64, F64, STR = pa.int64(), pa.float64(), pa.string()

FILE_FORMATS: dict[str, Callable[..., pa.Table]] = {}
"""The readers a ``path:`` file may name as its ``format:``, by that name, in registration order."""


_Reader = TypeVar("_Reader", bound=Callable[..., pa.Table])


def file_format(name: str) -> Callable[[_Reader], _Reader]:
    """Decorator: register a reader as the file format ``name``."""

    def register(reader: _Reader) -> _Reader:
        if name in FILE_FORMATS:
            raise ValueError(f"file format {name!r} registered twice")
        FILE_FORMATS[name] = reader
        return reader

    return register


def _canonical(table: pa.Table, mapping: Mapping[str, str]) -> pa.Table:
    """Select and rename columns (``{canonical: source}``), timestamps to numbers."""
    cols: dict[str, pa.Array] = {}
    for new, old in mapping.items():
        col = table.column(old).combine_chunks()
        if new == "timestamp" and pa.types.is_date(col.type):
            col = pc.cast(col, pa.timestamp("s"))
        if new == "timestamp" and pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.int64())
        cols[new] = col
    return pa.table(cols)


def _refuse_empty_ids(table: pa.Table, mapping: Mapping[str, str], path: Path) -> pa.Table:
    """``table`` (canonical columns) unless a string user or item id is empty (``1,,3``: a blank
    cell would become an id of its own)."""
    for canon in ("user", "item"):
        col = table.column(canon)
        if pa.types.is_dictionary(col.type):  # e.g. a pandas categorical written to Parquet
            col = pc.cast(col, col.type.value_type)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            blank = pc.equal(pc.utf8_trim_whitespace(col), "").to_numpy(zero_copy_only=False)
            if blank.any():
                raise DataFileError(f"{path}: column {mapping[canon]!r} has an empty id (data row {int(blank.argmax()) + 1})")
    return table


def _sort_chronologically(table: pa.Table) -> pa.Table:
    """Rows by (user, timestamp, item): ties within one second go by ascending item id.

    This is the order of BERT4Rec-style MovieLens preprocessing (and of the shared
    ``ml-1m.seq.tsv.gz``), so ``ratings.dat`` and the shared sequence file agree.
    """
    return table.sort_by([("user", "ascending"), ("timestamp", "ascending"), ("item", "ascending")])


# ------------------------------------------------------------------ MovieLens
@file_format("grouplens-dat")
def read_grouplens_ratings(path: Path) -> pa.Table:
    """GroupLens ML-1M/10M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``, no header."""
    names = ["user", "item", "rating", "timestamp"]
    table = read_delimited(path, delimiter="::", columns=names, header=None, types=dict(zip(names, [I64, I64, F64, I64])))
    return _sort_chronologically(_canonical(table, {n: n for n in names}))


@file_format("ml-100k")
def read_ml100k(path: Path) -> pa.Table:
    """GroupLens ML-100K ``u.data``: ``user item rating timestamp``, tab-separated, no header."""
    names = ["user", "item", "rating", "timestamp"]
    table = read_delimited(path, delimiter="\t", columns=names, header=None, types=dict(zip(names, [I64, I64, F64, I64])))
    return _sort_chronologically(_canonical(table, {n: n for n in names}))


@file_format("user-item-tsv")
def read_user_item_tsv(path: Path) -> pa.Table:
    """Two tab-separated integer columns under a header line (``user_id<TAB>movie_id``), rows in
    chronological order per user (the shared ``ml-1m.seq.tsv.gz``)."""
    names = ["user", "item"]
    table = read_delimited(path, delimiter="\t", columns=names, header="skip", types={"user": I64, "item": I64})
    return _canonical(table, {"user": "user", "item": "item"})


# --------------------------------------------------------- SASRec / BERT4Rec
@file_format("user-item-lines")
def read_user_item_lines(path: Path) -> pa.Table:
    """SASRec/BERT4Rec format (Amazon Beauty, Steam, ML-1M ``.txt``): ``user item`` per line,
    space-separated, chronological per user."""
    names = ["user", "item"]
    table = read_delimited(path, delimiter=" ", columns=names, header=None, types={"user": I64, "item": I64})
    return _canonical(table, {"user": "user", "item": "item"})


@file_format("sequence-lines")
def read_sequence_lines(path: Path) -> pa.Table:
    """S3-Rec/ICLRec format: ``user item item ...`` (one chronological sequence per line)."""
    values, lengths = split_lines_of_ints(path)
    if np.any(lengths < 2):
        line = int(np.flatnonzero(lengths < 2)[0]) + 1
        raise DataFileError(f"{path}: record {line} has a user id but no items")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    is_item = np.ones(values.size, dtype=bool)
    is_item[starts] = False
    users = np.repeat(values[starts], lengths - 1)
    return pa.table({"user": users, "item": values[is_item]})


# ------------------------------------------------------------------- Ta-Feng
TAFENG_DATE_FORMAT = "%m/%d/%Y"


@file_format("tafeng")
def read_tafeng(path: Path) -> pa.Table:
    """The raw Kaggle Ta-Feng CSV (UTF-8 BOM, CRLF, every field quoted, header
    ``TRANSACTION_DT,CUSTOMER_ID,...,PRODUCT_ID,...``). Ids stay strings (leading zeros kept);
    ``timestamp`` is the transaction day in seconds since the epoch."""
    table = read_delimited(
        path,
        delimiter=",",
        columns=None,
        header="names",
        types={"TRANSACTION_DT": pa.timestamp("s"), "CUSTOMER_ID": STR, "PRODUCT_ID": STR},
        keep=["TRANSACTION_DT", "CUSTOMER_ID", "PRODUCT_ID"],
        quoted=True,
        timestamp_format=TAFENG_DATE_FORMAT,
    )
    return _canonical(table, {"user": "CUSTOMER_ID", "item": "PRODUCT_ID", "timestamp": "TRANSACTION_DT"})


# ------------------------------------------------------------ CaseRecommender
@file_format("caserec")
def read_caserec(path: Path) -> pa.Table:
    """CaseRecommender ``.dat`` (Steam-200k ``game_purchase.dat``): ``user<TAB>item<TAB>value``
    under a header line; rows in file order (no timestamps)."""
    names = ["user", "item", "rating"]
    table = read_delimited(path, delimiter="\t", columns=names, header="skip", types=dict(zip(names, [I64, I64, F64])))
    return _canonical(table, {n: n for n in names})


# ------------------------------------------------------------------- RecBole
RECBOLE_TYPES = {"token": STR, "float": F64}


@file_format("recbole")
def read_recbole_inter(
    path: Path, user_field: str = "user_id", item_field: str = "item_id", time_field: str | None = "timestamp"
) -> pa.Table:
    """RecBole atomic ``.inter`` file: tab-separated, header ``name:type`` (``user_id:token``,
    ``item_id:token``, ``rating:float``, ``timestamp:float``, ...). Token ids that are all plain
    integers become ``int64``; others stay strings. ``time_field`` is used when present."""
    path = Path(path)
    data = read_bytes(path)
    head = first_line(data).split("\t")
    names, kinds = [], {}
    for col in head:
        name, sep, kind = col.partition(":")
        if not sep:
            raise DataFileError(f"{path}, line 1: RecBole header field {col!r} lacks its ':type' suffix")
        names.append(name)
        kinds[name] = kind
    for field in (user_field, item_field):
        if field not in names:
            raise DataFileError(f"{path}, line 1: no {field!r} column in the header (columns: {', '.join(names)})")
    wanted = {"user": user_field, "item": item_field}
    if time_field and time_field in names:
        wanted["timestamp"] = time_field
    types = {}
    for field in wanted.values():
        kind = kinds[field]
        if kind not in RECBOLE_TYPES:
            raise DataFileError(f"{path}, line 1: column {field!r} has type {kind!r}; expected token or float")
        types[field] = RECBOLE_TYPES[kind]
    table = read_delimited(path, delimiter="\t", columns=names, header="skip", types=types, keep=list(wanted.values()), data=data)
    out = _refuse_empty_ids(_canonical(table, wanted), wanted, path)
    return out.set_column(0, "user", canonical_ids(out["user"])).set_column(1, "item", canonical_ids(out["item"]))


# -------------------------------------------------------- generic CSV/Parquet
@file_format("table")
def read_table_file(
    path: Path,
    user: str = "user_id",
    item: str = "item_id",
    timestamp: str | None = None,
    delimiter: str | None = None,
) -> pa.Table:
    """A CSV/TSV (optionally ``.gz``) with a header row, or a Parquet file, with a column mapping.

    ``user``/``item``/``timestamp`` name the source columns. CSV ids are read as strings and
    become ``int64`` only when every id is a plain integer (so ``"007"`` keeps its zeros); the
    timestamp column must be numeric or an ISO-8601 date-time. The delimiter defaults to tab
    for ``.tsv`` and comma otherwise.
    """
    path = Path(path)
    wanted = {"user": user, "item": item}
    if timestamp:
        wanted["timestamp"] = timestamp
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        try:
            schema = pq.read_schema(path)
        except FileNotFoundError:
            raise DataFileError(f"{path}: file not found") from None
        except (OSError, pa.ArrowException) as err:
            raise DataFileError(f"{path}: not a readable Parquet file ({err})") from None
        missing = [c for c in wanted.values() if c not in schema.names]
        if missing:
            raise DataFileError(f"{path}: no column {missing[0]!r} (columns: {', '.join(schema.names)})")
        table = pq.read_table(path, columns=list(wanted.values()))
        for col in wanted.values():
            if table.column(col).null_count:
                raise DataFileError(f"{path}: column {col!r} has missing values")
    else:
        if delimiter is None:
            delimiter = "\t" if name.endswith((".tsv", ".tsv.gz", ".inter")) else ","
        types: dict[str, pa.DataType] = {user: STR, item: STR}
        table = read_delimited(
            path, delimiter=delimiter, columns=None, header="names", types=types, keep=list(wanted.values()), quoted=True
        )
        if timestamp and pa.types.is_string(table.column(timestamp).type):
            col = table.column(timestamp)
            for cast_to in (pa.int64(), pa.float64(), pa.timestamp("s")):
                try:
                    table = table.set_column(table.column_names.index(timestamp), timestamp, pc.cast(col, cast_to))
                    break
                except pa.ArrowException:
                    continue
            else:
                raise DataFileError(f"{path}: timestamp column {timestamp!r} is neither numeric nor an ISO date-time")
    out = _refuse_empty_ids(_canonical(table, wanted), wanted, path)
    if timestamp and not (pa.types.is_integer(out["timestamp"].type) or pa.types.is_floating(out["timestamp"].type)):
        raise ConfigError(f"{path}: timestamp column {timestamp!r} has type {out['timestamp'].type}; expected numbers or dates")
    return out.set_column(0, "user", canonical_ids(out["user"])).set_column(1, "item", canonical_ids(out["item"]))
