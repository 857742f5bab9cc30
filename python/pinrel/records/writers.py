"""Writers: a records table to Parquet, CSV/TSV or JSONL, atomically."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..io import atomic_path
from .checks import validate_records
from .readers import make_records
from .schema import LIST_FIELDS, SCHEMA, check_table, detect_format, with_grades


def _conform(table: pa.Table) -> pa.Table:
    check_table(table)
    if table.schema.remove_metadata().equals(SCHEMA):
        return table
    return make_records(table)


def write_records(
    table: pa.Table, path: str | os.PathLike[str], fmt: str | None = None, grades: int | None = None
) -> Path:
    """Write records atomically as Parquet, CSV, TSV or JSONL (by `fmt` or the extension).

    `grades` records K first (else the table's own metadata holds, or 5 is assumed for validation).
    Only Parquet keeps K (the schema metadata); list fields become JSON arrays in CSV/TSV.
    """
    table = _conform(table)
    if grades is not None:
        table = with_grades(table, grades)
    validate_records(table)
    target = Path(path)
    kind = detect_format(target, fmt)
    with atomic_path(target) as tmp:
        if kind == "parquet":
            pq.write_table(table, tmp)
        elif kind == "jsonl":
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                for row in table.to_pylist():
                    fh.write(json.dumps(row, ensure_ascii=False))
                    fh.write("\n")
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                # CRLF line ends (RFC 4180) also make the writer quote a field holding a lone carriage return.
                writer = csv.writer(fh, delimiter="\t" if kind == "tsv" else ",", lineterminator="\r\n")
                writer.writerow(SCHEMA.names)
                for row in table.to_pylist():
                    writer.writerow([_csv_cell(name, row[name]) for name in SCHEMA.names])
    return target


def _csv_cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in LIST_FIELDS:
        return json.dumps(value, ensure_ascii=False)
    return str(value)
