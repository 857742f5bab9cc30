"""The teacher's training data: graded records read and checked on the driver, their pair texts, query
groups, weights and labels, and the batches each worker takes in each epoch."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..assembly import AssemblySpec, assemble_pairs
from ..batching import bucket_batches
from .config import TeacherError

# Training batches are bucketed by length inside windows of this many batches of shuffled pairs: wide enough
# that neighbours in length share a batch, narrow enough that every epoch still mixes the data.
BUCKET_WINDOW_BATCHES = 32


def load_records(
    data: pa.Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    name: str,
    grades: int,
    mapping: Mapping[str, str] | None = None,
) -> pa.Table:
    """Read and validate graded records; every problem is reported here, before Ray starts."""
    from ..records import RecordsError, make_records, read_records, validate_records

    try:
        stored = _stored_grades(data)
        if stored is not None and stored != grades:
            raise TeacherError(
                f"{name}: the records are graded 1..{stored} but the teacher has grades={grades}"
            )
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            if path.is_file() and path.stat().st_size == 0:
                raise TeacherError(f"{name}: {str(path)!r} is empty")
            table = read_records(path, mapping=mapping, grades=grades)
        else:
            table = make_records(data, mapping=mapping, grades=grades, source=name)
        validate_records(table, grades=grades, require_labels=True)
    except RecordsError as e:
        # Messages from pinrel.records already name the file (or `name` as the source), column and row.
        raise TeacherError(str(e)) from e
    if table.num_rows == 0:
        raise TeacherError(f"{name}: no records")
    return table


def _stored_grades(data: Any) -> int | None:
    """K recorded with the data (Arrow/Parquet schema metadata), looked up before labels are checked against
    the teacher's K, so a mismatch is reported as such rather than as out-of-range labels."""
    from ..records import GRADES_KEY, detect_format, num_grades

    if isinstance(data, pa.Table):
        return num_grades(data)
    if isinstance(data, (str, os.PathLike)) and Path(data).is_file() and Path(data).stat().st_size:
        try:
            if detect_format(data) != "parquet":
                return None
            import pyarrow.parquet as pq

            raw = (pq.read_schema(data).metadata or {}).get(GRADES_KEY)
        except (ValueError, OSError, pa.ArrowException):
            return None  # the reader reports unreadable files with a better message
        return int(raw) if raw is not None and raw.isdigit() else None
    return None


def pair_texts(table: pa.Table, spec: AssemblySpec) -> list[str]:
    return assemble_pairs(table.column("query").to_pylist(), table, spec)


def query_groups(table: pa.Table) -> np.ndarray:
    """One integer per row naming its query, by the same identity the evaluation ranks within."""
    from ..baselines import query_keys

    _, inverse = np.unique(query_keys(table), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def train_weights(table: pa.Table) -> np.ndarray | None:
    """Per-pair loss weights scaled to mean 1 (so the learning rate means what it does unweighted), or
    None when no pair carries a `weight`."""
    from ..baselines import record_weights

    w = record_weights(table)
    return None if w is None else w / w.mean()


def label_indices(table: pa.Table) -> np.ndarray:
    """Grades 1..K as class indices 0..K-1."""
    return table.column("label").to_numpy(zero_copy_only=False).astype(np.int64) - 1


def _shuffled_buckets(
    chunks: Iterable[np.ndarray], lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Length-bucketed batches within each chunk of indices, in a shuffled order."""
    batches: list[np.ndarray] = []
    for idx in chunks:
        widest = int(lengths[idx].max())
        for b in bucket_batches(
            lengths[idx], max_tokens=batch_size * max(widest, 1), max_batch_size=batch_size
        ):
            batches.append(idx[b])
    return [batches[i] for i in rng.permutation(len(batches))]


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled, length-bucketed batches; the same on every worker and on a resumed run (seeded by epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * BUCKET_WINDOW_BATCHES
    chunks = (order[start : start + window] for start in range(0, len(order), window))
    return _shuffled_buckets(chunks, lengths, batch_size, rng)


def query_batches(
    lengths: np.ndarray, groups: np.ndarray, batch_size: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """Shuffled batches that each hold pairs of one query only (length-bucketed within the query), for
    the pairwise loss; like `epoch_batches`, the same on every worker and on a resumed run."""
    if len(groups) != len(lengths):
        raise ValueError(f"groups: expected {len(lengths)} entries, one per pair, got {len(groups)}")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    # a stable sort keeps each query's pairs in their shuffled order
    order = order[np.argsort(groups[order], kind="stable")]
    ends = np.flatnonzero(np.diff(groups[order])) + 1
    return _shuffled_buckets(np.split(order, ends), lengths, batch_size, rng)


def plan_batches(
    lengths: np.ndarray, groups: np.ndarray, plan: Mapping[str, Any], epoch: int
) -> list[np.ndarray]:
    batch_size, seed = int(plan["batch_size"]), int(plan["seed"])
    if float(plan["pairwise_weight"]) > 0:
        return query_batches(lengths, groups, batch_size, seed, epoch)
    return epoch_batches(lengths, batch_size, seed, epoch)


def worker_batches(batches: list[np.ndarray], rank: int, world: int) -> list[np.ndarray]:
    """Every worker takes the same number of batches; DDP hangs if one does an extra step."""
    per_worker = len(batches) // world
    return batches[rank::world][:per_worker]
