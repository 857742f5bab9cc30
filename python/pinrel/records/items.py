"""Query-disjoint splits and the item fields of a records table, as `pinrel.assemble` takes them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..assembly import ITEM_FIELDS, ITEM_TEXT_FIELDS
from .schema import RecordsError, check_table, query_key


def split_by_query(table: pa.Table, fractions: Sequence[float] = (0.8, 0.2), seed: int = 0) -> list[pa.Table]:
    """Split pairs into len(fractions) tables so that no query (by `query_key`) is in two of them.

    Fractions are of distinct queries, must be positive and sum to 1; every split gets at least one query.
    The assignment depends only on the set of queries and the seed, not on row order; rows keep their
    order within each split, and the schema metadata (K) is kept.
    """
    check_table(table, ["query"])
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
    check_table(table, fields)
    return {name: table.column(name).to_pylist() for name in fields}


def items_of(table: pa.Table, with_lang: bool = True, with_ids: bool = False) -> list[dict[str, Any]]:
    """One dict per row with the item fields (plus `lang`, and `item_id` if asked), for `pinrel.assemble`."""
    fields = list(ITEM_FIELDS if with_lang else ITEM_TEXT_FIELDS)
    if with_ids:
        fields.append("item_id")
    check_table(table, fields)
    return table.select(fields).to_pylist()
