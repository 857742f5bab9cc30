"""Relevance-tuned embeddings: pooled hidden states of the teacher for queries or items.

A fine-tuned teacher's encoder has learned what makes an item relevant to a query, so its pooled
states make better retrieval and student features than a generic sentence encoder. Output is either
Parquet (`id` string + `embedding` fixed_size_list<float32>[D], with the model and pooling in the
schema metadata) or `.npy` (a float32 `[n, D]` matrix in input row order, no ids).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .assembly import ITEM_TEXT_FIELDS, AssemblySpec, assemble
from .io import atomic_path, check_output_file
from .predictor import MANIFEST, ModelDirError, read_manifest
from .records import RecordsError, read_table

__all__ = ["ITEM_COLUMN", "EmbedSummary", "embed_file", "embed_texts", "resolve_model", "texts_of"]

# `--column item` embeds the assembled item text (title, description, ...) instead of one column.
ITEM_COLUMN = "item"
_POOLINGS = ("auto", "mean", "cls", "last")
_CHUNK_ROWS = 65_536


@dataclass
class EmbedSummary:
    rows: int
    dim: int
    column: str
    id_column: str | None
    out: str
    seconds: float
    padding_waste: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_model(model: str | os.PathLike[str]) -> tuple[Path, AssemblySpec]:
    """The HF checkpoint folder and assembly spec of a teacher dir, or of a plain HF model folder."""
    path = Path(model)
    if (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        if manifest["kind"] != "teacher":
            raise ModelDirError(f"model: {path} holds a {manifest['kind']!r}; embeddings come from a teacher")
        spec = manifest.get("assembly_spec")
        return path / "model", AssemblySpec.from_dict(spec) if spec else AssemblySpec()
    if (path / "config.json").is_file():
        return path, AssemblySpec()
    raise ModelDirError(f"model: {path} is neither a pinrel teacher dir (pinrel.json) nor a HF model folder")


def _read_table(path: Path) -> pa.Table:
    return read_table(path, what="texts")


def _pick_column(names: list[str], column: str | None) -> str:
    if column is not None:
        if column == ITEM_COLUMN:
            if not any(n in ITEM_TEXT_FIELDS for n in names):
                raise RecordsError(
                    f"--column item needs item fields {list(ITEM_TEXT_FIELDS)}; columns: {names}"
                )
            return column
        if column not in names:
            raise RecordsError(f"column {column!r} is not in the texts file (columns: {names})")
        return column
    for candidate in ("text", "query"):
        if candidate in names:
            return candidate
    if any(n in ITEM_TEXT_FIELDS for n in names):
        return ITEM_COLUMN
    raise RecordsError(f"no 'text' or 'query' column and no item fields to embed (columns: {names})")


def _pick_id(names: list[str], column: str, id_column: str | None) -> str | None:
    if id_column is not None:
        if id_column not in names:
            raise RecordsError(f"id column {id_column!r} is not in the texts file (columns: {names})")
        return id_column
    preferred = {"query": ("query_id", "id"), ITEM_COLUMN: ("item_id", "id")}.get(column, ("id",))
    return next((n for n in preferred if n in names), None)


def texts_of(table: pa.Table, column: str, spec: AssemblySpec | None = None) -> list[str]:
    """The strings to embed: one column (nulls become ""), or the assembled item text for `item`."""
    if column == ITEM_COLUMN:
        return assemble(table, spec)
    values = table.column(column).to_pylist()
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, str):
            raise RecordsError(f"column {column!r}, row {i + 1}: expected text, got {type(v).__name__}")
    return [v or "" for v in values]


def embed_texts(backend: Any, texts: list[str], pooling: str = "auto") -> np.ndarray:
    """`[n, D]` float32 pooled embeddings of `texts` from an `HFBackend`."""
    if isinstance(texts, str) or not isinstance(texts, list):
        raise TypeError(f"texts: expected a list of strings, got {type(texts).__name__}")
    if pooling not in _POOLINGS:
        raise ValueError(f"pooling: expected one of {list(_POOLINGS)}, got {pooling!r}")
    return np.asarray(backend.embed(texts, pooling=pooling), dtype=np.float32)


def _chunks(path: Path, chunk_rows: int) -> Iterator[pa.Table]:
    if path.suffix.lower() in (".parquet", ".pq"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield pa.Table.from_batches([batch])
        return
    table = _read_table(path)
    for start in range(0, table.num_rows, chunk_rows):
        yield table.slice(start, chunk_rows)


def _names(path: Path) -> tuple[list[str], int]:
    if not path.is_file():
        raise FileNotFoundError(f"texts: file not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            f = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise RecordsError(f"texts: {path} is not a readable Parquet file ({e})") from None
        return f.schema_arrow.names, f.metadata.num_rows
    table = _read_table(path)
    return table.column_names, table.num_rows


def embed_file(
    model: str | os.PathLike[str],
    texts: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    column: str | None = None,
    id_column: str | None = None,
    pooling: str = "auto",
    max_tokens: int = 16_384,
    device: str | None = None,
    progress: bool = True,
) -> EmbedSummary:
    """Embed one column of `texts` (or its items, `column="item"`) with `model` into `out`.

    `column` defaults to `text`, else `query`, else the assembled item fields; ids come from
    `id_column`, else `query_id`/`item_id`/`id`, else the row number. `out` ending in `.npy` gets the
    bare matrix; anything else must be `.parquet`. Written atomically, streamed in row chunks.
    """
    from .backends.hf import HFBackend

    t0 = time.perf_counter()
    src, dst = Path(texts), Path(out)
    if dst.suffix.lower() not in (".parquet", ".pq", ".npy"):
        raise ValueError(f"out: {dst} must end in .parquet or .npy")
    check_output_file(dst, {"texts": src})
    if pooling not in _POOLINGS:
        raise ValueError(f"pooling: expected one of {list(_POOLINGS)}, got {pooling!r}")
    names, n = _names(src)
    col = _pick_column(names, column)
    ids = _pick_id(names, col, id_column)
    model_dir, spec = resolve_model(model)
    backend = HFBackend(model_dir, device=device, max_tokens=max_tokens, progress=progress)
    dim = int(backend.model.config.hidden_size)
    chunks = (
        (embed_texts(backend, texts_of(t, col, spec), pooling), _ids(t, ids, start))
        for start, t in _numbered(_chunks(src, _CHUNK_ROWS))
    )
    meta = {"model": str(Path(model).resolve()), "pooling": pooling, "column": col, "dim": dim}
    if dst.suffix.lower() == ".npy":
        _write_npy(dst, n, dim, chunks)
    else:
        _write_parquet(dst, dim, chunks, meta)
    return EmbedSummary(n, dim, col, ids, str(dst), time.perf_counter() - t0, backend.stats.padding_waste)


def _numbered(tables: Iterator[pa.Table]) -> Iterator[tuple[int, pa.Table]]:
    start = 0
    for t in tables:
        yield start, t
        start += t.num_rows


def _ids(table: pa.Table, id_column: str | None, start: int) -> list[str]:
    if id_column is None:
        return [str(i) for i in range(start, start + table.num_rows)]
    return [
        str(v) if v is not None else str(start + i) for i, v in enumerate(table.column(id_column).to_pylist())
    ]


def _write_npy(dst: Path, n: int, dim: int, chunks: Iterator[tuple[np.ndarray, list[str]]]) -> None:
    with atomic_path(dst) as tmp:
        # open_memmap appends no suffix to an explicit path, so the temp name is kept.
        mat = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        row = 0
        for emb, _ in chunks:
            mat[row : row + len(emb)] = emb
            row += len(emb)
        mat.flush()
        del mat


def _write_parquet(
    dst: Path, dim: int, chunks: Iterator[tuple[np.ndarray, list[str]]], meta: dict[str, Any]
) -> None:
    schema = pa.schema(
        [pa.field("id", pa.string()), pa.field("embedding", pa.list_(pa.float32(), dim))],
        metadata={b"pinrel.embedding": json.dumps(meta).encode()},
    )
    with atomic_path(dst) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for emb, ids in chunks:
            values = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim)
            writer.write_table(pa.Table.from_arrays([pa.array(ids, pa.string()), values], schema=schema))
