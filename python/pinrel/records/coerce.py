"""Column coercion: any reader's columns (Arrow data or Python values) into `SCHEMA`, with errors
that name the source, the column and the row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .binning import bin_values, resolve_bins
from .schema import (
    DEFAULT_GRADES,
    ID_FIELDS,
    LIST_FIELDS,
    SCHEMA,
    STR_LIST,
    TEXT_FIELDS,
    Column,
    RecordsError,
    RowName,
    check_grades,
    is_list_type,
    with_grades,
)


def first_index(mask: pa.Array | np.ndarray) -> int | None:
    if isinstance(mask, np.ndarray):
        return int(np.argmax(mask)) if mask.any() else None
    mask = mask.fill_null(False)
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
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


def _text_column(col: Column | None, n: int, name: str, source: str, row_name: RowName) -> pa.Array:
    if col is None:
        return pa.nulls(n, pa.string())
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        arr = as_array(col)
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


def _list_column(col: Column | None, n: int, name: str, source: str, row_name: RowName) -> pa.Array:
    if col is None:
        return pa.array([[] for _ in range(n)], STR_LIST)
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        arr = as_array(col)
        t = arr.type
        if is_list_type(t):
            vt = t.value_type
            if not (_is_textual(vt) or pa.types.is_null(vt)):
                raise RecordsError(
                    f"{source}: column {name!r} should hold lists of strings, but its type is {t}"
                )
            try:
                arr = pc.cast(arr, STR_LIST)
                arr.validate(full=True)
            except pa.ArrowInvalid as e:
                raise RecordsError(f"{source}: column {name!r} is not valid UTF-8 text ({e})") from None
            if arr.null_count == 0 and pc.list_flatten(arr).null_count == 0:
                return arr
            col = arr.to_pylist()  # rare: null lists or null elements; normalise row by row
        elif _is_textual(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            col = _checked_utf8(arr, name, source).to_pylist()
        elif pa.types.is_null(t):
            return pa.array([[] for _ in range(n)], STR_LIST)
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
    return _utf8_array(out, STR_LIST, name, source, row_name)


def _utf8_array(values: list[Any], t: pa.DataType, name: str, source: str, row_name: RowName) -> pa.Array:
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
    col: Column, n: int, source: str, row_name: RowName, name: str = "label"
) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column as float64 values plus a missing mask (values under the mask are meaningless)."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        arr = as_array(col)
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
    col: Column | None,
    n: int,
    source: str,
    row_name: RowName,
    edges: np.ndarray | None,
    k: int,
    k_known: bool,
) -> pa.Array:
    if col is None:
        return pa.nulls(n, pa.int32())
    values, missing = _number_values(col, n, source, row_name)
    present = ~missing
    i = first_index(present & np.isnan(values))
    if i is not None:
        raise RecordsError(
            f"{source}: {row_name(i)}: label is NaN (leave it empty/null for an unlabeled pair)"
        )
    if edges is not None:
        grades, _ = bin_values(np.where(present, values, edges[0]), edges)
        i = first_index(present & ~((values >= edges[0]) & (values <= edges[-1])))
        if i is not None:
            raise RecordsError(
                f"{source}: {row_name(i)}: label {float(values[i])!r} is outside the bin range "
                f"[{edges[0]}, {edges[-1]}]"
            )
    else:
        i = first_index(present & np.isfinite(values) & (values != np.floor(values)))
        if i is not None:
            raise RecordsError(
                f"{source}: {row_name(i)}: label {float(values[i])!r} is not an integer grade "
                "(pass label_bins to bin float scores into grades)"
            )
        i = first_index(present & ~((values >= 1) & (values <= k)))
        if i is not None:
            hint = "" if k_known else f" (the default scale; pass grades=K for a {k}+ grade scale)"
            shown = int(values[i]) if np.isfinite(values[i]) else values[i]
            raise RecordsError(f"{source}: {row_name(i)}: label {shown} is outside 1..{k}{hint}")
        grades = np.where(present, values, 1).astype(np.int32)
    return pa.array(grades, pa.int32(), mask=missing)


def _weight_column(col: Column | None, n: int, source: str, row_name: RowName) -> pa.Array:
    if col is None:
        return pa.nulls(n, pa.float64())
    values, missing = _number_values(col, n, source, row_name, "weight")
    # A weight of 0 or below would drop or invert a pair's loss; NaN or inf would poison every batch.
    i = first_index(~missing & ~(np.isfinite(values) & (values > 0)))
    if i is not None:
        raise RecordsError(
            f"{source}: {row_name(i)}: weight {float(values[i])!r} should be a finite number > 0 "
            "(leave it empty/null for weight 1)"
        )
    return pa.array(values, pa.float64(), mask=missing)


def duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for name in names:
        if name in seen and name not in dups:
            dups.append(name)
        seen.add(name)
    return dups


def _apply_mapping(
    columns: list[tuple[str, Column]], mapping: Mapping[str, str], source: str
) -> dict[str, Column]:
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
    out: dict[str, Column] = {}
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


def build_table(
    columns: list[tuple[str, Column]],
    *,
    source: str,
    row_name: RowName,
    mapping: Mapping[str, str] | None,
    label_bins: Sequence[float] | str | None,
    grades: int | None,
    stored_grades: int | None,
) -> pa.Table:
    names = [name for name, _ in columns]
    dups = duplicates(names)
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
        grades = check_grades(grades)
    edges = resolve_bins(label_bins, grades)
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
    check_queries(table, source, row_name)
    return with_grades(table, k_known)


def check_queries(table: pa.Table, source: str, row_name: RowName) -> None:
    q = as_array(table.column("query"))
    i = first_index(q.is_null())
    if i is not None:
        raise RecordsError(f"{source}: {row_name(i)}: query is missing")
    i = first_index(pc.equal(pc.utf8_trim_whitespace(q), ""))
    if i is not None:
        raise RecordsError(f"{source}: {row_name(i)}: query is empty")
