"""Strict, fast parsing of delimited text files into Arrow tables (Arrow's C++ CSV reader).

Parsing runs in Arrow; only when Arrow rejects a file does a slow line-by-line scan run to
find the first offending line, so every :class:`~raysteal.errors.DataFileError` names the
file and the line number.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as _compute
import pyarrow.csv as pacsv

from raysteal.errors import DataFileError

# pyarrow.compute makes most of its kernels (equal, sort_indices, ...) at import time, so a type
# checker does not see them: the module is typed Any here.
pc: Any = _compute

_INT = re.compile(r"^[+-]?\d+$")
_CANONICAL_INT = re.compile(r"^(0|-?[1-9]\d{0,17})$")


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in ``.gz``."""
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataFileError(f"{path}: cannot read ({err})") from None


def _strip_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def first_line(data: bytes) -> str:
    """The first line of ``data`` (BOM and line ending removed), decoded as UTF-8."""
    end = data.find(b"\n")
    line = _strip_bom(data if end < 0 else data[:end]).rstrip(b"\r")
    return line.decode("utf-8", errors="replace")


def read_delimited(
    path: Path,
    *,
    delimiter: str,
    columns: list[str] | None,
    header: str | None,
    types: dict[str, pa.DataType],
    keep: list[str] | None = None,
    quoted: bool = False,
    timestamp_format: str | None = None,
    data: bytes | None = None,
) -> pa.Table:
    """Parse a delimited file into an Arrow table, strictly.

    ``header``: ``"names"`` (the first line holds the column names), ``"skip"`` (the first line
    is a header to ignore; ``columns`` names the fields) or ``None`` (no header; ``columns``
    names the fields). ``types`` fixes the type of each listed column (no inference, no
    nulls); ``keep`` restricts the output to those columns. A multi-character ``delimiter``
    (GroupLens ``::``) is supported. Empty lines are ignored. Raises :class:`DataFileError`
    naming the file and the first bad line.
    """
    path = Path(path)
    raw = read_bytes(path) if data is None else data
    delim = delimiter
    if len(delimiter) > 1:
        for sub in ("\t", "\x1f", "\x1e"):
            if sub.encode() not in raw:
                raw, delim = raw.replace(delimiter.encode(), sub.encode()), sub
                break
        else:
            raise DataFileError(f"{path}: cannot split on {delimiter!r}")
    if header in ("skip", None) and not columns:
        raise ValueError("columns must name the fields when the file has no header row")
    read_opts = pacsv.ReadOptions(
        column_names=None if header == "names" else columns,
        skip_rows=1 if header == "skip" else 0,
    )
    parse_opts = pacsv.ParseOptions(
        delimiter=delim,
        quote_char='"' if quoted else False,
        double_quote=quoted,
        escape_char=False,
        newlines_in_values=False,
        ignore_empty_lines=True,
    )
    convert_opts = pacsv.ConvertOptions(
        column_types=types,
        include_columns=keep or [],
        null_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        timestamp_parsers=[timestamp_format] if timestamp_format else None,
    )
    try:
        table = pacsv.read_csv(pa.BufferReader(raw), read_options=read_opts, parse_options=parse_opts, convert_options=convert_opts)
    except (pa.ArrowException, ValueError) as err:
        if "Empty CSV file" in str(err) or not raw.strip():
            raise DataFileError(f"{path}: the file is empty") from None
        located = _locate_bad_line(raw, delim, columns, header, types, keep, quoted, timestamp_format, shown=delimiter)
        if located is not None:
            line, why = located
            raise DataFileError(f"{path}, line {line}: {why}") from None
        raise DataFileError(f"{path}: {err}") from None
    if table.num_rows == 0:
        raise DataFileError(f"{path}: no data rows")
    return table


def _split(line: str, delim: str, quoted: bool) -> list[str]:
    if not quoted:
        return line.split(delim)
    return next(csv.reader([line], delimiter=delim, quotechar='"', doublequote=True))


def _value_error(value: str, typ: pa.DataType, timestamp_format: str | None) -> str | None:
    if pa.types.is_integer(typ):
        return None if _INT.match(value) else f"expected an integer, found {value!r}"
    if pa.types.is_floating(typ):
        try:
            float(value)
            return None
        except ValueError:
            return f"expected a number, found {value!r}"
    if pa.types.is_timestamp(typ):
        try:
            datetime.strptime(value, timestamp_format or "%Y-%m-%d %H:%M:%S")
            return None
        except ValueError:
            return f"expected a date like {timestamp_format or 'YYYY-MM-DD HH:MM:SS'}, found {value!r}"
    return None


def _locate_bad_line(
    raw: bytes,
    delim: str,
    columns: list[str] | None,
    header: str | None,
    types: dict[str, pa.DataType],
    keep: list[str] | None,
    quoted: bool,
    timestamp_format: str | None,
    shown: str | None = None,
) -> tuple[int, str] | None:
    """Slow path, only after Arrow failed: the first bad line (1-based) and what is wrong
    (``shown``: the file's own delimiter, when ``delim`` stands in for a multi-character one)."""
    names = list(columns) if columns else None
    header_pending = header is not None
    for number, rawline in enumerate(_strip_bom(raw).split(b"\n"), start=1):
        try:
            line = rawline.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            return number, "not valid UTF-8"
        if not line.strip():
            continue
        try:
            fields = _split(line, delim, quoted)
        except csv.Error as err:
            return number, f"unparsable line ({err})"
        if header_pending:
            header_pending = False
            if header == "names":
                names = fields
                missing = [c for c in (keep or []) + list(types) if c not in names]
                if missing:
                    return number, f"header has no column {missing[0]!r} (columns split on {shown or delim!r}: {', '.join(names)})"
            continue
        assert names is not None
        if len(fields) != len(names):
            return number, f"expected {len(names)} fields separated by {(shown or delim)!r}, found {len(fields)}"
        for col, typ in types.items():
            if col in names:
                why = _value_error(fields[names.index(col)], typ, timestamp_format)
                if why:
                    return number, f"column {col!r}: {why}"
    return None


def split_lines_of_ints(path: Path, data: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace-separated integers, one record per line (``user item item ...``), vectorised in Arrow.

    Returns ``(values, lengths)``: all integers in file order and the number per non-empty line.
    """
    path = Path(path)
    raw = _strip_bom(read_bytes(path) if data is None else data)
    text = raw.decode("utf-8", errors="strict") if raw else ""
    lines = pc.split_pattern(pa.array([text]), "\n").flatten()
    tokens = pc.utf8_split_whitespace(lines)
    flat = tokens.flatten()
    nonempty = pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
    line_of = pc.list_parent_indices(tokens).to_numpy()[nonempty]
    flat = flat.filter(pa.array(nonempty))
    try:
        values = pc.cast(flat, pa.int64()).to_numpy()
    except pa.ArrowException:
        ok = pc.match_substring_regex(flat, r"^[+-]?\d+$").to_numpy(zero_copy_only=False)
        bad = int(np.flatnonzero(~ok)[0])
        raise DataFileError(f"{path}, line {int(line_of[bad]) + 1}: expected integers, found {flat[bad].as_py()!r}") from None
    if values.size == 0:
        raise DataFileError(f"{path}: the file is empty")
    lengths = np.bincount(line_of, minlength=len(lines))
    return values, lengths[lengths > 0]


def canonical_ids(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """String ids that are all canonical integers (no sign, no leading zeros) become ``int64``.

    Anything else (``"0042"``, ``"a7"``) stays a string, so no id is ever altered.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return arr
    if len(arr) and pc.all(pc.match_substring_regex(arr, _CANONICAL_INT.pattern)).as_py():
        return pc.cast(arr, pa.int64())
    return arr
