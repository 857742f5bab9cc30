"""Label shards as distillation input: validated on the driver without loading them whole (errors
name file and row), and the query-disjoint dev split held out of them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import labelset
from ..assembly import ITEM_FIELDS, ITEM_TEXT_FIELDS
from ..records import is_list_type, list_lengths

_PROB_TOLERANCE = 1e-3  # float32 soft labels written by another process sum to 1 only approximately


@dataclass(frozen=True)
class LabelSet:
    """Validated label shards: files, K, the columns to read, row counts and the labeler's manifest."""

    files: list[str]
    grades: int
    columns: list[str]
    rows: int
    labeled: int
    manifest: dict[str, Any]
    extra_dim: int = 0


def _columns(schema: pa.Schema, where: str, extra: str | None) -> list[str]:
    names = schema.names
    required = ["query", "probs"]
    missing = [c for c in required if c not in names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; label shards need query, item fields, probs")
    if "probs" in names and not is_list_type(schema.field("probs").type):
        raise ValueError(f"{where}: column 'probs' should be list<float>, got {schema.field('probs').type}")
    items = [c for c in ITEM_FIELDS if c in names]
    if not any(c in ITEM_TEXT_FIELDS for c in items):
        raise ValueError(f"{where}: none of the item fields {list(ITEM_TEXT_FIELDS)} is present")
    if extra is not None and extra not in names:
        raise ValueError(f"{where}: the embedding column {extra!r} is missing")
    optional = [c for c in ("label", "query_id", "weight") if c in names]
    return required + items + optional + ([extra] if extra else [])


def _row_width(
    arr: pa.Array, width: int | None, where: str, offset: int, what: str, expected: str, minimum: int
) -> int | None:
    """The one length of a list column's rows (`width` when earlier batches fixed it), after refusing
    null rows, a length under `minimum` and rows of another length; None for an empty batch."""
    if arr.null_count:
        raise ValueError(f"{where}: row {offset + _first_true(arr.is_null())}: {what} is null")
    lengths = list_lengths(arr)
    if len(arr) == 0:
        return None
    want = int(lengths[0]) if width is None else width
    if want < minimum:
        raise ValueError(f"{where}: row {offset}: {what} has {want} values; expected at least {minimum}")
    if (lengths != want).any():
        i = int(np.argmax(lengths != want))
        raise ValueError(
            f"{where}: row {offset + i}: {what} has {lengths[i]} values, expected {expected}{want}"
        )
    return want


def _check_probs(col: pa.ChunkedArray, k: int | None, where: str, offset: int) -> int:
    """K of this batch's soft labels, after checking lengths, finiteness and that rows sum to 1."""
    arr = col.combine_chunks()
    want = _row_width(arr, k, where, offset, "probs", "K=", minimum=2)
    if want is None:
        return k or 0
    p = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(arr), want)
    bad = ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1) | (np.abs(p.sum(axis=1) - 1) > _PROB_TOLERANCE)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{where}: row {offset + i}: probs {p[i].tolist()} is not a probability vector "
            "(NaN, negative or not summing to 1)"
        )
    return want


def _first_true(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(np.argmax(mask.to_numpy(zero_copy_only=False)))


def _check_labels(col: pa.ChunkedArray, k: int, where: str, offset: int) -> int:
    if not (pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
        raise ValueError(f"{where}: column 'label' should hold integer grades, got {col.type}")
    if pa.types.is_null(col.type):
        return 0
    bad = pc.fill_null(pc.or_(pc.less(col, 1), pc.greater(col, k)), False)
    if pc.any(bad).as_py():
        i = _first_true(bad)
        raise ValueError(f"{where}: row {offset + i}: label {col[i].as_py()} is outside 1..{k}")
    return len(col) - col.null_count


def _check_weights(col: pa.ChunkedArray, where: str, offset: int) -> None:
    if pa.types.is_null(col.type):
        return
    from ..records import first_bad_weight

    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise ValueError(f"{where}: column 'weight' should hold numbers, got {col.type}")
    i = first_bad_weight(col)
    if i is not None:
        value = float(col[i].as_py())
        raise ValueError(f"{where}: row {offset + i}: weight {value} should be a finite number > 0")


def _check_queries_col(col: pa.ChunkedArray, where: str, offset: int) -> None:
    if col.null_count:
        raise ValueError(f"{where}: row {offset + _first_true(col.is_null())}: query is null")


def _check_extra(col: pa.ChunkedArray, dim: int | None, where: str, offset: int) -> int:
    arr = col.combine_chunks()
    if not is_list_type(arr.type):
        raise ValueError(f"{where}: embedding column should be list<float>, got {arr.type}")
    want = _row_width(arr, dim, where, offset, "embedding", "", minimum=1)
    if want is None:
        return dim or 0
    v = arr.flatten().to_numpy(zero_copy_only=False)
    if not np.isfinite(v.astype(np.float64)).all():
        raise ValueError(f"{where}: the embedding column holds NaN or infinite values")
    return want


def scan_labels(labels_dir: str | os.PathLike[str], embedding_column: str | None = None) -> LabelSet:
    """Validate a directory of label shards without loading it whole; errors name file and row."""
    d = Path(labels_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"labels dir {str(d)!r} does not exist or is not a directory")
    manifest = labelset.read_manifest(d) or {}
    files = [str(p) for p in labelset.shard_files(d, manifest)]
    k: int | None = manifest.get("grades")
    first_cols: list[str] | None = None
    rows = labeled = 0
    extra_dim: int | None = None
    for f in files:
        pf = pq.ParquetFile(f)
        cols = _columns(pf.schema_arrow, f, embedding_column)
        if first_cols is None:
            first_cols = cols
        elif set(cols) != set(first_cols):
            raise ValueError(f"{f}: has columns {cols}, but {files[0]} has {first_cols}; shards must agree")
        for batch in pf.iter_batches(batch_size=65536, columns=cols):
            t = pa.Table.from_batches([batch])
            _check_queries_col(t.column("query"), f, rows)
            k = _check_probs(t.column("probs"), k, f, rows) or k
            if "label" in cols and k is not None:
                labeled += _check_labels(t.column("label"), k, f, rows)
            if "weight" in cols:
                _check_weights(t.column("weight"), f, rows)
            if embedding_column is not None:
                extra_dim = _check_extra(t.column(embedding_column), extra_dim, f, rows)
            rows += t.num_rows
    if rows == 0:
        raise ValueError(f"labels dir {str(d)!r}: the shards hold no rows")
    assert first_cols is not None and k is not None  # rows > 0, so probs fixed K
    return LabelSet(files, k, first_cols, rows, labeled, manifest, extra_dim or 0)


def scan_dev_records(path: Path, grades: int, embedding_column: str | None) -> pa.Table:
    """A records file (CSV, JSONL, Parquet) as a dev set: human labels only, no teacher probs."""
    from ..records import read_records, validate_records

    if embedding_column is not None:
        raise ValueError(
            f"dev: records files carry no {embedding_column!r} column; pass a label-shard dir instead"
        )
    table = read_records(path)
    validate_records(table, grades=grades)
    if table.num_rows == 0:
        raise ValueError(f"dev records {str(path)!r} hold no rows")
    return table


def dev_fraction_mask(queries: list[str], fraction: float) -> npt.NDArray[np.bool_]:
    """Which rows belong to the held-out queries: a hash of the query key, so splits are query-disjoint
    and the same on every worker, run and machine."""
    from ..records import query_key

    cut = int(fraction * 2**64)
    keys = (
        int.from_bytes(hashlib.blake2b(query_key(q).encode("utf-8"), digest_size=8).digest(), "little")
        for q in queries
    )
    return np.fromiter((k < cut for k in keys), dtype=np.bool_, count=len(queries))


def keep_split(batch: pa.Table, fraction: float, dev: bool) -> pa.Table:
    mask = dev_fraction_mask(batch.column("query").to_pylist(), fraction)
    return batch.filter(pa.array(mask if dev else ~mask))


def count_dev(files: list[str], fraction: float) -> tuple[int, int]:
    """Rows of the held-out queries, and how many of them carry a human grade."""
    n = labeled = 0
    for f in files:
        shard = pq.ParquetFile(f)
        graded = "label" in shard.schema_arrow.names
        columns = ["query", "label"] if graded else ["query"]
        for batch in shard.iter_batches(batch_size=65536, columns=columns):
            mask = dev_fraction_mask(batch.column("query").to_pylist(), fraction)
            n += int(mask.sum())
            if graded:
                labeled += int((mask & batch.column("label").is_valid().to_numpy(zero_copy_only=False)).sum())
    return n, labeled
