"""Readers: Parquet, CSV/TSV and JSONL files, and Python rows (`make_records`), into records tables."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .coerce import build_table, duplicates
from .schema import Column, RecordsError, RecordsFileNotFoundError, RowName, detect_format, num_grades


def _existing_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise RecordsFileNotFoundError(f"file not found: {p}")
    if p.is_dir():
        raise RecordsError(f"{p} is a directory, not a file")
    if p.stat().st_size == 0:
        raise RecordsError(f"{p}: file is empty")
    return p


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # tolerate the BOM that spreadsheet exports add
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RecordsError(
            f"{path}: invalid UTF-8 at byte {e.start} (line {line}); save the file as UTF-8"
        ) from None
    if not text.strip():
        raise RecordsError(f"{path}: file is empty")
    return text


def _raise_csv_field_limit() -> None:
    # Product descriptions easily exceed the csv module's 128 KiB default field limit.
    if csv.field_size_limit() < 2**28:
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_delimited(
    path: str | os.PathLike[str], delimiter: str = ",", header: bool = True
) -> tuple[list[str] | None, list[list[str]], list[int]]:
    """Rows of a UTF-8 CSV/TSV file: (header or None, rows, starting line number of each row).

    Fields may span lines (quoted newlines), so each row carries the line it starts on for error messages.
    Blank lines are skipped; every row must have as many fields as the header (or the first row).
    """
    p = _existing_file(path)
    text = _read_text(p)
    _raise_csv_field_limit()
    # CSV gets strict quoting so a broken file fails loudly; TSV dumps often contain stray quote marks
    # inside fields, so they are read leniently like pandas does.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=delimiter == ",")
    rows: list[list[str]] = []
    lines: list[int] = []
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            rows.append(row)
            lines.append(start)
    except csv.Error as e:
        raise RecordsError(f"{p}: line {reader.line_num}: malformed CSV ({e})") from None
    names: list[str] | None = None
    if header:
        if not rows:
            raise RecordsError(f"{p}: file is empty")
        names = [name.strip() for name in rows.pop(0)]
        lines.pop(0)
        dups = duplicates(names)
        if dups:
            raise RecordsError(f"{p}: duplicate column(s) {', '.join(repr(d) for d in dups)} in the header")
    width = len(names) if names is not None else (len(rows[0]) if rows else 0)
    for row, line in zip(rows, lines, strict=True):
        if len(row) != width:
            what = "the header has" if names is not None else "the first row has"
            raise RecordsError(f"{p}: line {line} has {len(row)} fields but {what} {width}")
    return names, rows, lines


def _read_csv(path: Path, delimiter: str) -> tuple[list[tuple[str, Column]], RowName]:
    names, rows, lines = read_delimited(path, delimiter=delimiter, header=True)
    assert names is not None
    columns: list[tuple[str, Column]] = [(name, [row[j] for row in rows]) for j, name in enumerate(names)]
    return columns, lambda i: f"line {lines[i]}"


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _read_jsonl(path: Path) -> tuple[list[tuple[str, Column]], RowName]:
    text = _read_text(path)
    objects: list[dict[str, Any]] = []
    lines: list[int] = []
    # Split on "\n" only: str.splitlines would also split at U+2028 etc., which JSON strings may contain.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as e:
            raise RecordsError(f"{path}: line {lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        except _DuplicateKey as e:
            raise RecordsError(f"{path}: line {lineno}: duplicate key {e.args[0]!r}") from None
        except RecursionError:
            raise RecordsError(f"{path}: line {lineno}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise RecordsError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        objects.append(obj)
        lines.append(lineno)
    names: dict[str, None] = {}
    for obj in objects:
        names.update(dict.fromkeys(obj))
    columns: list[tuple[str, Column]] = [(name, [obj.get(name) for obj in objects]) for name in names]
    return columns, lambda i: f"line {lines[i]}"


def _table_columns(table: pa.Table) -> list[tuple[str, Column]]:
    return [(name, table.column(i)) for i, name in enumerate(table.column_names)]


def _read_parquet(path: Path) -> tuple[list[tuple[str, Column]], int | None]:
    try:
        table = pq.ParquetFile(path).read()
    except (pa.ArrowException, OSError) as e:
        raise RecordsError(f"{path}: not a readable Parquet file ({e})") from None
    try:
        stored = num_grades(table)
    except RecordsError as e:
        raise RecordsError(f"{path}: {e}") from None
    return _table_columns(table), stored


def read_records(
    path: str | os.PathLike[str],
    mapping: Mapping[str, str] | None = None,
    fmt: str | None = None,
    label_bins: Sequence[float] | str | None = None,
    grades: int | None = None,
) -> pa.Table:
    """Read a Parquet, CSV, TSV or JSONL file of (query, item, grade) pairs as a `SCHEMA` table.

    `mapping` renames source columns to record fields ({"source_col": "field"}); unmapped columns that are
    not record fields are ignored.  `label_bins` turns float scores into grades: K+1 increasing edges, a
    (lo, hi) pair or "lo:hi" for `grades` (default 5) equal-width bins, or "e0,e1,..." edges.  `grades` is
    K; without it K comes from the bins, from the Parquet metadata, or defaults to 5 for validation (and
    is then not recorded, since nobody said so).
    """
    p = Path(path)
    kind = detect_format(p, fmt)
    p = _existing_file(p)
    stored: int | None = None
    if kind == "parquet":
        columns, stored = _read_parquet(p)
        row_name: RowName = lambda i: f"row {i + 1}"  # noqa: E731
    elif kind == "jsonl":
        columns, row_name = _read_jsonl(p)
    else:
        columns, row_name = _read_csv(p, "\t" if kind == "tsv" else ",")
    return build_table(
        columns,
        source=str(p),
        row_name=row_name,
        mapping=mapping,
        label_bins=label_bins,
        grades=grades,
        stored_grades=stored,
    )


def read_table(path: str | os.PathLike[str], what: str = "input", fmt: str | None = None) -> pa.Table:
    """A whole Parquet, CSV/TSV or JSONL file as an Arrow table with its own columns, read as
    `read_records` reads files (UTF-8 and CSV quoting checked, line numbers in errors), for small
    inputs that are not records, such as queries or texts to embed. CSV cells stay text, so a query
    "2024" is a string; `what` names the input in error messages."""
    try:
        p = Path(path)
        kind = detect_format(p, fmt)
        p = _existing_file(p)
        if kind == "parquet":
            try:
                return pq.ParquetFile(p).read()
            except (pa.ArrowException, OSError) as e:
                raise RecordsError(f"{p}: not a readable Parquet file ({e})") from None
        if kind == "jsonl":
            columns, _ = _read_jsonl(p)
            arrays = {}
            for name, values in columns:
                try:
                    arrays[name] = pa.array(values)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                    raise RecordsError(f"{p}: column {name!r} mixes value types ({e})") from None
            return pa.table(arrays)
        columns, _ = _read_csv(p, "\t" if kind == "tsv" else ",")
        return pa.table({name: pa.array(values, pa.string()) for name, values in columns})
    except RecordsFileNotFoundError as e:
        raise RecordsFileNotFoundError(f"{what}: {e}") from None
    except RecordsError as e:
        raise RecordsError(f"{what}: {e}") from None


def make_records(
    data: pa.Table | pa.RecordBatch | Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | Any,
    *,
    mapping: Mapping[str, str] | None = None,
    label_bins: Sequence[float] | str | None = None,
    grades: int | None = None,
    source: str = "records",
    lines: Sequence[int] | None = None,
) -> pa.Table:
    """A `SCHEMA` table from in-memory data: an Arrow table, a pandas DataFrame, a dict of columns or a list
    of row dicts.  Same rules and options as `read_records`; `source` names the data in error messages and
    `lines`, if given, the line each row came from (else errors say "row N")."""
    stored: int | None = None
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        columns = _table_columns(data)
        stored = num_grades(data)
    elif type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns"):
        names = [str(c) for c in data.columns]
        dups = duplicates(names)
        if dups:
            raise RecordsError(f"{source}: duplicate column(s) {', '.join(repr(d) for d in dups)}")
        columns = _table_columns(pa.Table.from_pandas(data, preserve_index=False))
    elif isinstance(data, Mapping):
        columns = []
        for name, values in data.items():
            if isinstance(values, (pa.Array, pa.ChunkedArray)):
                columns.append((str(name), values))
            # A string is a sequence too, but {"query": "abc"} means one row, not the rows a, b, c.
            elif isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
                raise TypeError(
                    f"{source}: column {name!r} should be a list of values, got {type(values).__name__}"
                )
            else:
                columns.append((str(name), list(values)))
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        names_seen: dict[str, None] = {}
        for i, row in enumerate(data):
            if not isinstance(row, Mapping):
                raise TypeError(f"{source}: row {i + 1} should be a dict, got {type(row).__name__}")
            names_seen.update(dict.fromkeys(row))
        columns = [(name, [row.get(name) for row in data]) for name in names_seen]
    else:
        raise TypeError(
            f"cannot make records from {type(data).__name__}; pass a pyarrow Table, a pandas DataFrame, "
            "a dict of columns or a list of dicts"
        )

    if lines is not None:
        n = len(columns[0][1]) if columns else 0
        if isinstance(lines, (str, bytes)) or not isinstance(lines, Sequence) or len(lines) != n:
            raise ValueError(f"lines: expected one line number per row ({n}), got {lines!r}"[:200])

    def row_name(i: int) -> str:
        return f"line {lines[i]}" if lines is not None else f"row {i + 1}"

    return build_table(
        columns,
        source=source,
        row_name=row_name,
        mapping=mapping,
        label_bins=label_bins,
        grades=grades,
        stored_grades=stored,
    )
