"""The one record schema of pinrel: graded (query, item) pairs, and its Parquet/CSV/JSONL readers and writers.

Every loader and every file the CLI reads becomes a `pyarrow.Table` with exactly `SCHEMA`, so the rest of
pinrel never guesses column names, types or missing-value conventions.  Normalisation rules, applied by
`read_records` and `make_records`:

- `query` is required: a null or blank query is an error (a pair without a query trains nothing).
- Item text fields (`title`, ...) are never null: missing becomes "" so assembly needs no null checks.
- List fields (`captions`, `boards`, `queries`) are never null: missing becomes [].  In CSV they are JSON
  arrays; a cell that does not start with "[" is taken as a one-element list.
- `lang`, `query_id`, `item_id` are null when absent; "" counts as absent so CSV round trips are exact.
- `label` is an integer grade 1..K or null (an unlabeled pair).  K travels in the schema metadata under
  `GRADES_KEY` when it is known (Parquet keeps it; CSV and JSONL cannot).
- `weight` is how much a graded pair counts in training (rater agreement, say): a finite number > 0, or
  null, which counts as 1.  Models fitted on records (the teacher, the baselines) honour it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .assembly import ITEM_FIELDS, ITEM_TEXT_FIELDS
from .io import atomic_path
from .metrics import MAX_GRADES

__all__ = [
    "DEFAULT_GRADES",
    "FORMATS",
    "GRADES_KEY",
    "ID_FIELDS",
    "ITEM_FIELDS",
    "ITEM_TEXT_FIELDS",
    "LIST_FIELDS",
    "SCHEMA",
    "TEXT_FIELDS",
    "RecordsError",
    "RecordsFileNotFoundError",
    "bin_labels",
    "detect_format",
    "equal_width_edges",
    "first_bad_weight",
    "item_columns",
    "items_of",
    "make_records",
    "num_grades",
    "parse_label_bins",
    "parse_mapping",
    "query_key",
    "read_delimited",
    "read_records",
    "read_table",
    "records_digest",
    "split_by_query",
    "text_id",
    "validate_records",
    "with_grades",
    "write_records",
]

LIST_FIELDS: tuple[str, ...] = ("captions", "boards", "queries")
TEXT_FIELDS: tuple[str, ...] = tuple(f for f in ITEM_TEXT_FIELDS if f not in LIST_FIELDS)
ID_FIELDS: tuple[str, ...] = ("lang", "query_id", "item_id")

GRADES_KEY = b"pinrel.grades"
DEFAULT_GRADES = 5
FORMATS: tuple[str, ...] = ("parquet", "csv", "tsv", "jsonl")

_STR_LIST = pa.list_(pa.string())

SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("query", pa.string()),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("captions", _STR_LIST),
        pa.field("boards", _STR_LIST),
        pa.field("queries", _STR_LIST),
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
_Column: TypeAlias = "pa.Array | pa.ChunkedArray | list[Any]"
_RowName: TypeAlias = Callable[[int], str]


class RecordsError(ValueError):
    """Bad records input; the message names the file (or source), the column and the row or line."""


class RecordsFileNotFoundError(RecordsError, FileNotFoundError):
    """A records file that does not exist; catchable both as RecordsError and as FileNotFoundError."""


# --------------------------------------------------------------------------------------------- helpers


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


def _check_grades(grades: Any, what: str = "grades") -> int:
    if isinstance(grades, bool) or not isinstance(grades, (int, np.integer)):
        raise TypeError(f"{what} must be an int >= 2, got {type(grades).__name__}")
    if grades < 2:
        raise RecordsError(f"{what} must be >= 2 (a scale needs at least two grades), got {grades}")
    if grades > MAX_GRADES:
        raise RecordsError(f"{what} must be <= {MAX_GRADES} (bin a score column into grades), got {grades}")
    return int(grades)


def _check_table(table: Any, columns: Iterable[str] = ()) -> None:
    if not isinstance(table, pa.Table):
        raise TypeError(f"records must be a pyarrow.Table, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise RecordsError(f"records: missing column(s) {', '.join(missing)}; make them with make_records")


def num_grades(table: pa.Table) -> int | None:
    """K stored in the table's schema metadata, or None when the table does not say."""
    _check_table(table)
    meta = table.schema.metadata or {}
    raw = meta.get(GRADES_KEY)
    if raw is None:
        return None
    try:
        k = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise RecordsError(f"schema metadata {GRADES_KEY.decode()}={raw!r} is not an integer") from None
    return _check_grades(k, GRADES_KEY.decode())


def with_grades(table: pa.Table, grades: int | None) -> pa.Table:
    """The table with K recorded in (or, for None, removed from) its schema metadata."""
    _check_table(table)
    meta = dict(table.schema.metadata or {})
    if grades is None:
        meta.pop(GRADES_KEY, None)
    else:
        meta[GRADES_KEY] = str(_check_grades(grades)).encode("ascii")
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


def _check_edges(edges: Sequence[float]) -> np.ndarray:
    try:
        e = np.asarray([float(x) for x in edges], dtype=np.float64)
    except (TypeError, ValueError):
        raise RecordsError(f"bin edges must be numbers, got {edges!r}") from None
    if e.size < 3:
        raise RecordsError(f"need at least 3 bin edges (K >= 2 grades), got {e.size}: {e.tolist()}")
    if not np.isfinite(e).all():
        raise RecordsError(f"bin edges must be finite, got {e.tolist()}")
    if not (np.diff(e) > 0).all():
        raise RecordsError(f"bin edges must be strictly increasing, got {e.tolist()}")
    return e


def equal_width_edges(lo: float, hi: float, grades: int = DEFAULT_GRADES) -> list[float]:
    """Edges of `grades` equal-width bins over [lo, hi]."""
    k = _check_grades(grades)
    for name, x in (("lo", lo), ("hi", hi)):
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise TypeError(f"bin range {name}: expected a number, got {x!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise RecordsError(f"bin range must be finite with lo < hi, got [{lo}, {hi}]")
    # A range too wide (hi - lo overflows) or too narrow for k distinct edges fails the edge checks.
    with np.errstate(over="ignore", invalid="ignore"):
        edges = np.linspace(lo, hi, k + 1)
    return [float(x) for x in _check_edges(edges.tolist())]


def parse_label_bins(spec: str, grades: int | None = None) -> list[float]:
    """Bin edges from text: "LO:HI" (equal-width, K = grades or 5) or "E0,E1,...,EK" (explicit edges)."""
    if not isinstance(spec, str):
        raise TypeError(f"label bins: expected text such as '0:5' or '0,1,2,3,4,5', got {spec!r}")
    text = spec.strip()
    if grades is not None:
        _check_grades(grades)
    try:
        if ":" in text:
            lo, hi = (float(x) for x in text.split(":"))
            return equal_width_edges(lo, hi, DEFAULT_GRADES if grades is None else grades)
        edges = [float(x) for x in text.split(",")]
    except ValueError:
        raise RecordsError(
            f"bad label bins {spec!r}; expected LO:HI (e.g. 0:5) or edges (e.g. 0,1,2,3,4,5)"
        ) from None
    e = _check_edges(edges).tolist()
    if grades is not None and len(e) - 1 != _check_grades(grades):
        raise RecordsError(f"label bins {spec!r} make {len(e) - 1} grades but grades={grades}")
    return e


def _bin(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Grades for finite values, and the index of the first value outside the edges (None if all fit)."""
    outside = ~((values >= edges[0]) & (values <= edges[-1]))  # NaN counts as outside
    bad = int(np.argmax(outside)) if outside.any() else None
    # side="right" puts a value equal to an inner edge into the upper bin: [e0, e1) -> 1, ...
    grades = np.searchsorted(edges, values, side="right")
    # ...and the top edge itself belongs to the last bin, which is closed: [e_{K-1}, e_K] -> K.
    grades = np.clip(grades, 1, edges.size - 1)
    return grades.astype(np.int32), bad


def bin_labels(values: Sequence[float] | np.ndarray | pa.Array, edges: Sequence[float]) -> np.ndarray:
    """Float scores to integer grades 1..K using K+1 increasing `edges`.

    Bins are half-open [e_i, e_{i+1}) except the last, which is closed, so the top of the scale (e.g. a
    similarity of exactly 5.0) gets the top grade.  Values outside [e_0, e_K] and NaN are errors.
    """
    e = _check_edges(edges)
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_pylist()
    try:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise RecordsError(f"values to bin must be numbers, got {values!r:.80}") from None
    if np.isnan(v).any():
        i = int(np.argmax(np.isnan(v)))
        raise RecordsError(f"cannot bin a missing or NaN value (index {i})")
    grades, bad = _bin(v, e)
    if bad is not None:
        raise RecordsError(f"value {v[bad]!r} at index {bad} is outside the bin range [{e[0]}, {e[-1]}]")
    return grades


def _resolve_bins(label_bins: Sequence[float] | str | None, grades: int | None) -> np.ndarray | None:
    if label_bins is None:
        return None
    if isinstance(label_bins, str):
        return np.asarray(parse_label_bins(label_bins, grades))
    try:
        values = list(label_bins)
    except TypeError:
        raise TypeError(f"label_bins: expected edges, a (lo, hi) pair or text, got {label_bins!r}") from None
    if len(values) == 2:
        # Two numbers cannot be edges (that would be one grade), so they are a range to cut equally.
        return np.asarray(
            equal_width_edges(
                float(values[0]), float(values[1]), DEFAULT_GRADES if grades is None else grades
            )
        )
    e = _check_edges(values)
    if grades is not None and e.size - 1 != grades:
        raise RecordsError(f"{e.size} label bin edges make {e.size - 1} grades but grades={grades}")
    return e


# ------------------------------------------------------------------------------------------ coercion


def _first(mask: pa.Array | np.ndarray) -> int | None:
    if isinstance(mask, np.ndarray):
        return int(np.argmax(mask)) if mask.any() else None
    mask = mask.fill_null(False)
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def _as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _is_textual(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_textual(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _checked_utf8(arr: pa.Array, name: str, source: str) -> pa.Array:
    try:
        arr = pc.cast(arr, pa.string())
        arr.validate(full=True)
    except pa.ArrowInvalid as e:
        raise RecordsError(f"{source}: column {name!r} is not valid UTF-8 text ({e})") from None
    return arr


def _text_column(col: _Column | None, n: int, name: str, source: str, row_name: _RowName) -> pa.Array:
    if col is None:
        return pa.nulls(n, pa.string())
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        arr = _as_array(col)
        t = arr.type
        if _is_textual(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return _checked_utf8(arr, name, source)
        if pa.types.is_floating(t):
            # NaN is a missing value (pandas writes one for a missing id), as in the Python path.
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, t), arr)
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return pc.cast(arr, pa.string())  # numeric ids are common (ESCI query_id, CSV exports)
        if pa.types.is_null(t):
            return pa.nulls(n, pa.string())
        raise RecordsError(f"{source}: column {name!r} should hold text, but its type is {t}")
    out: list[str | None] = []
    for i, v in enumerate(col):
        if v is None or isinstance(v, str):
            out.append(v)
        elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out.append(None if isinstance(v, float) and math.isnan(v) else str(v))
        else:
            raise RecordsError(f"{source}: {row_name(i)}: {name!r} should be text, got {type(v).__name__}")
    return _utf8_array(out, pa.string(), name, source, row_name)


def _parse_list_text(s: str, name: str, where: str) -> list[str]:
    t = s.strip()
    if not t:
        return []
    if not t.startswith("["):
        return [s]
    try:
        value = json.loads(t)
    except json.JSONDecodeError as e:
        raise RecordsError(
            f"{where}: {name!r} looks like a JSON array but is not valid JSON ({e.msg})"
        ) from None
    except RecursionError:
        raise RecordsError(f"{where}: {name!r} is a JSON array nested too deeply") from None
    if not isinstance(value, list):
        raise RecordsError(f"{where}: {name!r} should be a JSON array of strings")
    return _list_items(value, name, where)


def _list_items(values: Iterable[Any], name: str, where: str) -> list[str]:
    out: list[str] = []
    for x in values:
        if x is None:
            continue  # a hole in a list carries no text
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool):
            out.append(str(x))
        else:
            raise RecordsError(f"{where}: {name!r} should be a list of strings, found {type(x).__name__}")
    return out


def _list_column(col: _Column | None, n: int, name: str, source: str, row_name: _RowName) -> pa.Array:
    if col is None:
        return pa.array([[] for _ in range(n)], _STR_LIST)
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        arr = _as_array(col)
        t = arr.type
        if is_list_type(t):
            vt = t.value_type
            if not (_is_textual(vt) or pa.types.is_null(vt)):
                raise RecordsError(
                    f"{source}: column {name!r} should hold lists of strings, but its type is {t}"
                )
            try:
                arr = pc.cast(arr, _STR_LIST)
                arr.validate(full=True)
            except pa.ArrowInvalid as e:
                raise RecordsError(f"{source}: column {name!r} is not valid UTF-8 text ({e})") from None
            if arr.null_count == 0 and pc.list_flatten(arr).null_count == 0:
                return arr
            col = arr.to_pylist()  # rare: null lists or null elements; normalise row by row
        elif _is_textual(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            col = _checked_utf8(arr, name, source).to_pylist()
        elif pa.types.is_null(t):
            return pa.array([[] for _ in range(n)], _STR_LIST)
        else:
            raise RecordsError(f"{source}: column {name!r} should hold lists of strings, but its type is {t}")
    out: list[list[str]] = []
    for i, v in enumerate(col):
        if v is None:
            out.append([])
        elif isinstance(v, str):
            out.append(_parse_list_text(v, name, f"{source}: {row_name(i)}"))
        elif isinstance(v, (list, tuple, np.ndarray)):
            out.append(_list_items(v, name, f"{source}: {row_name(i)}"))
        else:
            raise RecordsError(
                f"{source}: {row_name(i)}: {name!r} should be a list of strings, got {type(v).__name__}"
            )
    return _utf8_array(out, _STR_LIST, name, source, row_name)


def _utf8_array(values: list[Any], t: pa.DataType, name: str, source: str, row_name: _RowName) -> pa.Array:
    """`pa.array(values, t)`; a string that is not valid Unicode (a lone surrogate such as "\\ud800",
    from a bad decode upstream) is reported by row and field rather than by Arrow's encoder."""
    try:
        return pa.array(values, t)
    except UnicodeEncodeError:
        for i, v in enumerate(values):
            for s in [v] if isinstance(v, str) else v or []:
                try:
                    s.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise RecordsError(
                        f"{source}: {row_name(i)}: {name!r} is not valid Unicode ({e.reason} at {e.start})"
                    ) from None
        raise


def _number_values(
    col: _Column, n: int, source: str, row_name: _RowName, name: str = "label"
) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column as float64 values plus a missing mask (values under the mask are meaningless)."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        arr = _as_array(col)
        t = arr.type
        if pa.types.is_null(t):
            return np.zeros(n), np.ones(n, dtype=bool)
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            missing = arr.is_null().to_numpy(zero_copy_only=False)
            values = pc.cast(arr, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
            return values.astype(np.float64), missing
        if _is_textual(t):
            col = pc.cast(arr, pa.string()).to_pylist()
        else:
            raise RecordsError(f"{source}: column {name!r} should hold numbers, but its type is {t}")
    values = np.zeros(n, dtype=np.float64)
    missing = np.zeros(n, dtype=bool)
    v: Any
    for i, v in enumerate(col):
        if isinstance(v, str):
            v = v.strip()
            if not v:
                missing[i] = True
                continue
            try:
                # float() also reads Python literals ("2_0" is 20) and any script's digits; a data
                # file's numbers are ASCII, and anything else is more likely a typo than a grade.
                if not v.isascii() or "_" in v:
                    raise ValueError(v)
                values[i] = float(v)
            except ValueError:
                raise RecordsError(f"{source}: {row_name(i)}: {name} {v!r} is not a number") from None
        elif v is None:
            missing[i] = True
        elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
            values[i] = float(v)
        else:
            raise RecordsError(f"{source}: {row_name(i)}: {name} should be a number, got {type(v).__name__}")
    return values, missing


def _label_column(
    col: _Column | None,
    n: int,
    source: str,
    row_name: _RowName,
    edges: np.ndarray | None,
    k: int,
    k_known: bool,
) -> pa.Array:
    if col is None:
        return pa.nulls(n, pa.int32())
    values, missing = _number_values(col, n, source, row_name)
    present = ~missing
    i = _first(present & np.isnan(values))
    if i is not None:
        raise RecordsError(
            f"{source}: {row_name(i)}: label is NaN (leave it empty/null for an unlabeled pair)"
        )
    if edges is not None:
        grades, _ = _bin(np.where(present, values, edges[0]), edges)
        i = _first(present & ~((values >= edges[0]) & (values <= edges[-1])))
        if i is not None:
            raise RecordsError(
                f"{source}: {row_name(i)}: label {float(values[i])!r} is outside the bin range "
                f"[{edges[0]}, {edges[-1]}]"
            )
    else:
        i = _first(present & np.isfinite(values) & (values != np.floor(values)))
        if i is not None:
            raise RecordsError(
                f"{source}: {row_name(i)}: label {float(values[i])!r} is not an integer grade "
                "(pass label_bins to bin float scores into grades)"
            )
        i = _first(present & ~((values >= 1) & (values <= k)))
        if i is not None:
            hint = "" if k_known else f" (the default scale; pass grades=K for a {k}+ grade scale)"
            shown = int(values[i]) if np.isfinite(values[i]) else values[i]
            raise RecordsError(f"{source}: {row_name(i)}: label {shown} is outside 1..{k}{hint}")
        grades = np.where(present, values, 1).astype(np.int32)
    return pa.array(grades, pa.int32(), mask=missing)


def _weight_column(col: _Column | None, n: int, source: str, row_name: _RowName) -> pa.Array:
    if col is None:
        return pa.nulls(n, pa.float64())
    values, missing = _number_values(col, n, source, row_name, "weight")
    # A weight of 0 or below would drop or invert a pair's loss; NaN or inf would poison every batch.
    i = _first(~missing & ~(np.isfinite(values) & (values > 0)))
    if i is not None:
        raise RecordsError(
            f"{source}: {row_name(i)}: weight {float(values[i])!r} should be a finite number > 0 "
            "(leave it empty/null for weight 1)"
        )
    return pa.array(values, pa.float64(), mask=missing)


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for name in names:
        if name in seen and name not in dups:
            dups.append(name)
        seen.add(name)
    return dups


def _apply_mapping(
    columns: list[tuple[str, _Column]], mapping: Mapping[str, str], source: str
) -> dict[str, _Column]:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"mapping must be a dict of source column -> field, got {type(mapping).__name__}")
    names = [name for name, _ in columns]
    fields = SCHEMA.names
    for src, dst in mapping.items():
        if src not in names:
            raise RecordsError(
                f"{source}: mapping source column {src!r} is not in the data (columns: {', '.join(names)})"
            )
        if dst not in fields:
            raise RecordsError(
                f"mapping target {dst!r} (from {src!r}) is not a record field; fields: {', '.join(fields)}"
            )
    by_target: dict[str, str] = {}
    for src, dst in mapping.items():
        if dst in by_target:
            raise RecordsError(f"columns {by_target[dst]!r} and {src!r} are both mapped to {dst!r}")
        by_target[dst] = src
    out: dict[str, _Column] = {}
    for name, col in columns:
        if name in mapping:
            continue
        if name in by_target:
            raise RecordsError(
                f"{source}: column {name!r} exists and column {by_target[name]!r} is also mapped to it; "
                "map or drop one of them"
            )
        out[name] = col
    lookup = dict(columns)
    for src, dst in mapping.items():
        out[dst] = lookup[src]
    return out


def _build(
    columns: list[tuple[str, _Column]],
    *,
    source: str,
    row_name: _RowName,
    mapping: Mapping[str, str] | None,
    label_bins: Sequence[float] | str | None,
    grades: int | None,
    stored_grades: int | None,
) -> pa.Table:
    names = [name for name, _ in columns]
    dups = _duplicates(names)
    if dups:
        raise RecordsError(f"{source}: duplicate column(s) {', '.join(repr(d) for d in dups)}")
    cols = _apply_mapping(columns, mapping, source) if mapping else dict(columns)
    if "query" not in cols:
        raise RecordsError(
            f"{source}: no 'query' column (columns: {', '.join(names) or 'none'}); "
            "map one with mapping={'your_column': 'query'} (CLI: --map your_column=query)"
        )
    n = len(cols["query"])
    if grades is not None:
        grades = _check_grades(grades)
    edges = _resolve_bins(label_bins, grades)
    if grades is not None:
        k_known: int | None = grades
    elif edges is not None:
        k_known = edges.size - 1
    else:
        k_known = stored_grades
    arrays: list[pa.Array] = []
    for field in SCHEMA:
        name = field.name
        col = cols.get(name)
        if col is not None and len(col) != n:
            raise RecordsError(f"{source}: column {name!r} has {len(col)} rows but 'query' has {n}")
        if name == "label":
            k = k_known or DEFAULT_GRADES
            arrays.append(_label_column(col, n, source, row_name, edges, k, k_known is not None))
        elif name == "weight":
            arrays.append(_weight_column(col, n, source, row_name))
        elif name in LIST_FIELDS:
            arrays.append(_list_column(col, n, name, source, row_name))
        else:
            arr = _text_column(col, n, name, source, row_name)
            if name in TEXT_FIELDS:
                arr = arr.fill_null("")
            elif name in ID_FIELDS:
                arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
            arrays.append(arr)
    table = pa.Table.from_arrays(arrays, schema=SCHEMA)
    _check_queries(table, source, row_name)
    return with_grades(table, k_known)


def _check_queries(table: pa.Table, source: str, row_name: _RowName) -> None:
    q = _as_array(table.column("query"))
    i = _first(q.is_null())
    if i is not None:
        raise RecordsError(f"{source}: {row_name(i)}: query is missing")
    i = _first(pc.equal(pc.utf8_trim_whitespace(q), ""))
    if i is not None:
        raise RecordsError(f"{source}: {row_name(i)}: query is empty")


# --------------------------------------------------------------------------------------------- readers


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
        dups = _duplicates(names)
        if dups:
            raise RecordsError(f"{p}: duplicate column(s) {', '.join(repr(d) for d in dups)} in the header")
    width = len(names) if names is not None else (len(rows[0]) if rows else 0)
    for row, line in zip(rows, lines, strict=True):
        if len(row) != width:
            what = "the header has" if names is not None else "the first row has"
            raise RecordsError(f"{p}: line {line} has {len(row)} fields but {what} {width}")
    return names, rows, lines


def _read_csv(path: Path, delimiter: str) -> tuple[list[tuple[str, _Column]], _RowName]:
    names, rows, lines = read_delimited(path, delimiter=delimiter, header=True)
    assert names is not None
    columns: list[tuple[str, _Column]] = [(name, [row[j] for row in rows]) for j, name in enumerate(names)]
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


def _read_jsonl(path: Path) -> tuple[list[tuple[str, _Column]], _RowName]:
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
    columns: list[tuple[str, _Column]] = [(name, [obj.get(name) for obj in objects]) for name in names]
    return columns, lambda i: f"line {lines[i]}"


def _table_columns(table: pa.Table) -> list[tuple[str, _Column]]:
    return [(name, table.column(i)) for i, name in enumerate(table.column_names)]


def _read_parquet(path: Path) -> tuple[list[tuple[str, _Column]], int | None]:
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
        row_name: _RowName = lambda i: f"row {i + 1}"  # noqa: E731
    elif kind == "jsonl":
        columns, row_name = _read_jsonl(p)
    else:
        columns, row_name = _read_csv(p, "\t" if kind == "tsv" else ",")
    return _build(
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
        dups = _duplicates(names)
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

    return _build(
        columns,
        source=source,
        row_name=row_name,
        mapping=mapping,
        label_bins=label_bins,
        grades=grades,
        stored_grades=stored,
    )


# --------------------------------------------------------------------------------------------- checks


def is_list_type(t: pa.DataType) -> bool:
    """Whether an Arrow type is one of the three list kinds (list, large_list, fixed_size_list)."""
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def list_lengths(arr: pa.Array) -> np.ndarray:
    """Every row's length of a list array as int64, a fixed-size list's included."""
    if pa.types.is_fixed_size_list(arr.type):
        return np.full(len(arr), arr.type.list_size, dtype=np.int64)
    return arr.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def first_bad_weight(weights: pa.Array | pa.ChunkedArray) -> int | None:
    """The first row whose weight is not a finite number > 0 (nulls count as 1), or None."""
    w = _as_array(pc.cast(weights, pa.float64()))
    return _first(pc.invert(pc.and_(pc.is_finite(w), pc.greater(w, 0))))


def validate_records(table: pa.Table, grades: int | None = None, require_labels: bool = False) -> None:
    """Raise RecordsError unless `table` is a well-formed records table.

    Checks the schema (fields, types), that every query is present, that labels lie in 1..K (K from
    `grades`, else the table's metadata, else 5) and, with `require_labels`, that no pair is unlabeled.
    """
    _check_table(table)
    names = table.column_names
    dups = _duplicates(names)
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

    _check_queries(table, "records", row_name)
    k = _check_grades(grades) if grades is not None else (num_grades(table) or DEFAULT_GRADES)
    labels = _as_array(table.column("label"))
    i = _first(pc.or_(pc.less(labels, 1), pc.greater(labels, k)))
    if i is not None:
        raise RecordsError(f"records: {row_name(i)}: label {labels[i].as_py()} is outside 1..{k}")
    weights = _as_array(table.column("weight"))
    i = first_bad_weight(weights)
    if i is not None:
        raise RecordsError(
            f"records: {row_name(i)}: weight {weights[i].as_py()} should be a finite number > 0"
        )
    if require_labels and labels.null_count:
        i = _first(labels.is_null())
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


# --------------------------------------------------------------------------------------------- writers


def _conform(table: pa.Table) -> pa.Table:
    _check_table(table)
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


# --------------------------------------------------------------------------------------- splits, items


def split_by_query(table: pa.Table, fractions: Sequence[float] = (0.8, 0.2), seed: int = 0) -> list[pa.Table]:
    """Split pairs into len(fractions) tables so that no query (by `query_key`) is in two of them.

    Fractions are of distinct queries, must be positive and sum to 1; every split gets at least one query.
    The assignment depends only on the set of queries and the seed, not on row order; rows keep their
    order within each split, and the schema metadata (K) is kept.
    """
    _check_table(table, ["query"])
    if table.column("query").null_count:
        raise RecordsError("records: the 'query' column has missing values; every pair needs its query")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed: expected an integer >= 0, got {seed!r}")
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Iterable):
        raise TypeError(f"split fractions: expected a sequence of numbers, got {fractions!r}")
    try:
        fr = np.asarray([float(f) for f in fractions], dtype=np.float64)
    except (TypeError, ValueError):
        raise RecordsError(f"split fractions must be positive numbers, got {list(fractions)}") from None
    if fr.size < 1 or not np.isfinite(fr).all() or (fr <= 0).any():
        raise RecordsError(f"split fractions must be positive numbers, got {list(fractions)}")
    if abs(fr.sum() - 1.0) > 1e-6:
        raise RecordsError(f"split fractions must sum to 1, got {list(fractions)} (sum {fr.sum():g})")
    keys = [query_key(q) for q in table.column("query").to_pylist()]
    unique = sorted(set(keys))
    n, m = len(unique), fr.size
    if n < m:
        raise RecordsError(f"cannot split {n} distinct queries into {m} non-empty parts")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum(fr) * n).astype(int)
    part_of: dict[str, int] = {}
    start = 0
    for part in range(m):
        # Keep every part non-empty and leave at least one query for each later part.
        end = n if part == m - 1 else min(max(int(bounds[part]), start + 1), n - (m - 1 - part))
        for j in order[start:end]:
            part_of[unique[j]] = part
        start = end
    assign = np.fromiter((part_of[k] for k in keys), dtype=np.int64, count=len(keys))
    return [table.take(pa.array(np.flatnonzero(assign == part))) for part in range(m)]


def item_columns(table: pa.Table, with_lang: bool = True) -> dict[str, list[Any]]:
    """Item fields (and `lang`) as a dict of columns, the cheapest input for `pinrel.assemble`."""
    fields = list(ITEM_FIELDS if with_lang else ITEM_TEXT_FIELDS)
    _check_table(table, fields)
    return {name: table.column(name).to_pylist() for name in fields}


def items_of(table: pa.Table, with_lang: bool = True, with_ids: bool = False) -> list[dict[str, Any]]:
    """One dict per row with the item fields (plus `lang`, and `item_id` if asked), for `pinrel.assemble`."""
    fields = list(ITEM_FIELDS if with_lang else ITEM_TEXT_FIELDS)
    if with_ids:
        fields.append("item_id")
    _check_table(table, fields)
    return table.select(fields).to_pylist()
