"""Checks on a records table (`validate_records`) and its content digest (`records_digest`)."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .coerce import as_array, check_queries, duplicates, first_index
from .schema import DEFAULT_GRADES, SCHEMA, RecordsError, check_grades, check_table, num_grades


def first_bad_weight(weights: pa.Array | pa.ChunkedArray) -> int | None:
    """The first row whose weight is not a finite number > 0 (nulls count as 1), or None."""
    w = as_array(pc.cast(weights, pa.float64()))
    return first_index(pc.invert(pc.and_(pc.is_finite(w), pc.greater(w, 0))))


def validate_records(table: pa.Table, grades: int | None = None, require_labels: bool = False) -> None:
    """Raise RecordsError unless `table` is a well-formed records table.

    Checks the schema (fields, types), that every query is present, that labels lie in 1..K (K from
    `grades`, else the table's metadata, else 5) and, with `require_labels`, that no pair is unlabeled.
    """
    check_table(table)
    names = table.column_names
    dups = duplicates(names)
    if dups:
        raise RecordsError(f"records table has duplicate column(s) {', '.join(repr(d) for d in dups)}")
    missing = [f for f in SCHEMA.names if f not in names]
    if missing:
        raise RecordsError(f"records table lacks field(s) {', '.join(missing)}; build it with make_records()")
    extra = [f for f in names if f not in SCHEMA.names]
    if extra:
        raise RecordsError(f"records table has unknown column(s) {', '.join(extra)}")
    for field in SCHEMA:
        t = table.schema.field(field.name).type
        if t != field.type:
            raise RecordsError(f"records field {field.name!r} has type {t}, expected {field.type}")

    def row_name(i: int) -> str:
        return f"row {i + 1}"

    check_queries(table, "records", row_name)
    k = check_grades(grades) if grades is not None else (num_grades(table) or DEFAULT_GRADES)
    labels = as_array(table.column("label"))
    i = first_index(pc.or_(pc.less(labels, 1), pc.greater(labels, k)))
    if i is not None:
        raise RecordsError(f"records: {row_name(i)}: label {labels[i].as_py()} is outside 1..{k}")
    weights = as_array(table.column("weight"))
    i = first_bad_weight(weights)
    if i is not None:
        raise RecordsError(
            f"records: {row_name(i)}: weight {weights[i].as_py()} should be a finite number > 0"
        )
    if require_labels and labels.null_count:
        i = first_index(labels.is_null())
        assert i is not None
        raise RecordsError(
            f"records: {labels.null_count} of {len(labels)} pairs are unlabeled (first at {row_name(i)}); "
            "graded pairs are required here"
        )


class _HashSink(io.RawIOBase):
    """A write-only file that feeds a hash: the IPC stream is digested as written, never held whole."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.hash.update(b)
        return memoryview(b).nbytes


# Rows per IPC batch in `records_digest`: fixed, so the source's chunking does not reach the digest.
_DIGEST_ROWS = 65_536


def records_digest(table: pa.Table) -> str:
    """A sha256 (hex) of a records table's contents: its rows in order, not how they are chunked or
    where they were read from, so the same records from a file or from memory give the same digest."""
    validate_records(table)
    # Schema metadata (K, pandas notes) is not content; K is checked on its own wherever it matters.
    table = pa.Table.from_arrays([table.column(n) for n in SCHEMA.names], schema=SCHEMA)
    sink = _HashSink()
    with pa.PythonFile(sink, mode="w") as f, pa.ipc.new_stream(f, SCHEMA) as writer:
        for start in range(0, table.num_rows, _DIGEST_ROWS):
            # take() writes fresh buffers: a sliced array keeps its parent's offsets and bits, which
            # the IPC stream would carry into the digest.
            writer.write_table(table.take(np.arange(start, min(start + _DIGEST_ROWS, table.num_rows))))
    return sink.hash.hexdigest()
