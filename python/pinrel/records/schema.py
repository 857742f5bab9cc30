"""The records schema (`SCHEMA`), its errors, and the helpers every records module shares:
query identity, K in the schema metadata, format detection, column mappings, Arrow list types.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from ..assembly import ITEM_TEXT_FIELDS
from ..metrics import MAX_GRADES

LIST_FIELDS: tuple[str, ...] = ("captions", "boards", "queries")
TEXT_FIELDS: tuple[str, ...] = tuple(f for f in ITEM_TEXT_FIELDS if f not in LIST_FIELDS)
ID_FIELDS: tuple[str, ...] = ("lang", "query_id", "item_id")

GRADES_KEY = b"pinrel.grades"
DEFAULT_GRADES = 5
FORMATS: tuple[str, ...] = ("parquet", "csv", "tsv", "jsonl")

STR_LIST = pa.list_(pa.string())

SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("query", pa.string()),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("captions", STR_LIST),
        pa.field("boards", STR_LIST),
        pa.field("queries", STR_LIST),
        pa.field("link_title", pa.string()),
        pa.field("link_description", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("query_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("label", pa.int32()),
        pa.field("weight", pa.float64()),
    ]
)

_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_FORMAT_ALIASES = {
    "parquet": "parquet",
    "pq": "parquet",
    "csv": "csv",
    "tsv": "tsv",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
}


# A column as it comes out of a reader: Arrow data (Parquet, tables) or Python values (CSV, JSONL, dicts).
Column: TypeAlias = "pa.Array | pa.ChunkedArray | list[Any]"
RowName: TypeAlias = Callable[[int], str]


class RecordsError(ValueError):
    """Bad records input; the message names the file (or source), the column and the row or line."""


class RecordsFileNotFoundError(RecordsError, FileNotFoundError):
    """A records file that does not exist; catchable both as RecordsError and as FileNotFoundError."""


def query_key(text: str) -> str:
    """The identity of a query for splitting and ids: NFKC, case-folded, whitespace collapsed.

    "Red Mug" and "red  mug" are the same information need; letting them land in different splits would
    leak the test set into training.
    """
    if not isinstance(text, str):
        raise TypeError(f"query: expected text, got {type(text).__name__} {text!r}")
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_id(text: str, prefix: str = "q") -> str:
    """A stable id derived from a text (its `query_key`), for sources that ship no ids."""
    try:
        key = query_key(text).encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"text: not valid Unicode ({e.reason} at {e.start})") from None
    return prefix + hashlib.sha1(key).hexdigest()[:16]


def check_grades(grades: Any, what: str = "grades") -> int:
    if isinstance(grades, bool) or not isinstance(grades, (int, np.integer)):
        raise TypeError(f"{what} must be an int >= 2, got {type(grades).__name__}")
    if grades < 2:
        raise RecordsError(f"{what} must be >= 2 (a scale needs at least two grades), got {grades}")
    if grades > MAX_GRADES:
        raise RecordsError(f"{what} must be <= {MAX_GRADES} (bin a score column into grades), got {grades}")
    return int(grades)


def check_table(table: Any, columns: Iterable[str] = ()) -> None:
    if not isinstance(table, pa.Table):
        raise TypeError(f"records must be a pyarrow.Table, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise RecordsError(f"records: missing column(s) {', '.join(missing)}; make them with make_records")


def num_grades(table: pa.Table) -> int | None:
    """K stored in the table's schema metadata, or None when the table does not say."""
    check_table(table)
    meta = table.schema.metadata or {}
    raw = meta.get(GRADES_KEY)
    if raw is None:
        return None
    try:
        k = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise RecordsError(f"schema metadata {GRADES_KEY.decode()}={raw!r} is not an integer") from None
    return check_grades(k, GRADES_KEY.decode())


def with_grades(table: pa.Table, grades: int | None) -> pa.Table:
    """The table with K recorded in (or, for None, removed from) its schema metadata."""
    check_table(table)
    meta = dict(table.schema.metadata or {})
    if grades is None:
        meta.pop(GRADES_KEY, None)
    else:
        meta[GRADES_KEY] = str(check_grades(grades)).encode("ascii")
    return table.replace_schema_metadata(meta or None)


def detect_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The records format: `fmt` if given (aliases allowed), else from the file extension."""
    if fmt is not None:
        kind = _FORMAT_ALIASES.get(str(fmt).lower())
        if kind is None:
            raise RecordsError(f"unknown records format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return kind
    suffix = Path(path).suffix.lower()
    kind = _EXTENSIONS.get(suffix)
    if kind is None:
        known = ", ".join(sorted(_EXTENSIONS))
        raise RecordsError(
            f"cannot tell the format of {str(path)!r} from its extension {suffix or '(none)'!r}; "
            f"use one of {known} or pass the format explicitly ({', '.join(FORMATS)})"
        )
    return kind


def parse_mapping(specs: Iterable[str]) -> dict[str, str]:
    """`["src=field", ...]` (the CLI's repeated `--map src=field`) as a mapping dict."""
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Iterable):
        raise TypeError(f"column mapping: expected a list of 'SOURCE=FIELD' strings, got {specs!r}")
    mapping: dict[str, str] = {}
    for spec in specs:
        if not isinstance(spec, str):
            raise TypeError(f"column mapping: expected 'SOURCE=FIELD' strings, got {spec!r}")
        # Split at the last "=": field names never contain one, source column names might.
        src, sep, dst = spec.rpartition("=")
        src, dst = src.strip(), dst.strip()
        if not sep or not src or not dst:
            raise RecordsError(f"bad column mapping {spec!r}; expected SOURCE_COLUMN=FIELD, e.g. name=title")
        if src in mapping:
            raise RecordsError(f"column {src!r} is mapped twice ({mapping[src]!r} and {dst!r})")
        mapping[src] = dst
    return mapping


def is_list_type(t: pa.DataType) -> bool:
    """Whether an Arrow type is one of the three list kinds (list, large_list, fixed_size_list)."""
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def list_lengths(arr: pa.Array) -> np.ndarray:
    """Every row's length of a list array as int64, a fixed-size list's included."""
    if pa.types.is_fixed_size_list(arr.type):
        return np.full(len(arr), arr.type.list_size, dtype=np.int64)
    return arr.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
