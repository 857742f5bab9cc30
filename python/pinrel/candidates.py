"""Candidate (query, item) pairs to pseudo-label: BM25 top-k over the catalog plus seeded random negatives.

The teacher should grade pairs that look like what a search engine ranks, so the candidates are the
BM25 top-k of each query over the assembled item text, plus a few random items as easy negatives.

Catalogs are streamed from Parquet in chunks of `chunk_rows` rows; only the running top-k per query and
a few statistics are kept in memory. BM25 stays corpus-wide even when chunked, using only the Rust
`Bm25Index` API:

1. A first pass tokenises every item once (`words`, the index's own tokeniser) and collects, per chunk
   and in total, the document count, total length and the document frequency of every query word.
2. A second pass indexes one chunk at a time and retrieves an oversampled top-k' with the chunk's
   statistics, then rescores those candidates exactly with the corpus statistics: the per-term chunk
   score gives back tf (the BM25 saturation curve is invertible for a known doc length), from which the
   global term score follows.
3. A candidate list is *certified* when no unretrieved item of the chunk can beat the k-th global score
   (BM25 term scores are bounded by the ratio of global to chunk idf and avgdl). Uncertified queries
   retry with twice the depth, up to `max_depth`; the few that still fail are counted in the stats.

So the result equals one index over the whole catalog, up to float rounding and the order of tied
scores. A catalog that fits in one chunk skips all of this and uses one index directly.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import _native
from .assembly import ITEM_FIELDS, ITEM_TEXT_FIELDS, AssemblySpec, assemble
from .checks import check_int
from .io import atomic_path
from .records import RecordsError, make_records, query_key, read_table, text_id

__all__ = [
    "SOURCE_BM25",
    "SOURCE_RANDOM",
    "CandidateStats",
    "bm25_top_k",
    "build_candidates",
    "random_negatives",
    "read_queries",
    "read_table",
    "write_candidates",
]

SOURCE_BM25 = "bm25"
SOURCE_RANDOM = "random"
_CATALOG_COLUMNS = (*ITEM_FIELDS, "item_id")
# Relative slack when comparing a float upper bound with a float score: rounding must not
# turn a tie into a failed certificate (and an endless deepening).
_BOUND_SLACK = 1e-5
_ROW_GROUP_ROWS = 65_536


@dataclass
class CandidateStats:
    """What `build_candidates` did, for the CLI summary and for tests."""

    queries: int = 0
    excluded_queries: int = 0
    catalog_rows: int = 0
    chunks: int = 0
    bm25_pairs: int = 0
    random_pairs: int = 0
    queries_without_hits: int = 0
    empty_items: int = 0
    deepened_queries: int = 0
    uncertified_queries: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ inputs


class _Catalog:
    """A catalog that is read in fixed-size row chunks, from a Parquet file or an in-memory table."""

    def __init__(self, source: str | os.PathLike[str] | pa.Table) -> None:
        if isinstance(source, pa.Table):
            self._table: pa.Table | None = source
            self._file: pq.ParquetFile | None = None
            names = source.column_names
            self.name = "catalog"
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"catalog: file not found: {path}")
            if path.suffix.lower() not in (".parquet", ".pq"):
                raise ValueError(f"catalog: {path} must be a Parquet file (it is streamed in row chunks)")
            try:
                self._file = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as e:
                raise RecordsError(f"catalog: {path} is not a readable Parquet file ({e})") from None
            self._table = None
            names = self._file.schema_arrow.names
            self.name = str(path)
        else:
            raise TypeError(
                f"catalog: expected a Parquet path or a pyarrow.Table, got {type(source).__name__}"
            )
        self.columns = [c for c in _CATALOG_COLUMNS if c in names]
        if not any(c in ITEM_TEXT_FIELDS for c in self.columns):
            raise RecordsError(
                f"{self.name}: none of the item fields {list(ITEM_TEXT_FIELDS)} is a column "
                f"(columns: {names})"
            )

    @property
    def num_rows(self) -> int:
        if self._table is not None:
            return self._table.num_rows
        assert self._file is not None
        return self._file.metadata.num_rows

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, pa.Table]]:
        """(first row, table) for consecutive chunks of exactly `chunk_rows` rows (the last may be less)."""
        if self._table is not None:
            table = self._table.select(self.columns)
            for start in range(0, table.num_rows, chunk_rows):
                yield start, table.slice(start, chunk_rows)
            return
        assert self._file is not None
        pending: list[pa.RecordBatch] = []
        held, start = 0, 0
        # Parquet batches stop at row-group ends, so they are re-cut into exact chunks: both passes
        # must see the same chunks for the per-chunk statistics to apply.
        for batch in self._file.iter_batches(batch_size=chunk_rows, columns=self.columns):
            pending.append(batch)
            held += batch.num_rows
            while held >= chunk_rows:
                table = pa.Table.from_batches(pending).combine_chunks()
                yield start, table.slice(0, chunk_rows)
                rest = table.slice(chunk_rows)
                pending, held, start = rest.to_batches(), rest.num_rows, start + chunk_rows
        if held:
            yield start, pa.Table.from_batches(pending)

    def take(self, rows: np.ndarray, chunk_rows: int) -> pa.Table:
        """The catalog rows `rows` (sorted, unique), read in one streaming pass."""
        parts: list[pa.Table] = []
        for start, chunk in self.chunks(chunk_rows):
            lo, hi = np.searchsorted(rows, [start, start + chunk.num_rows])
            if hi > lo:
                parts.append(chunk.take(pa.array(rows[lo:hi] - start)))
        if not parts:
            return pa.table({c: pa.array([], pa.string()) for c in self.columns}).slice(0, 0)
        return pa.concat_tables(parts).combine_chunks()


def read_queries(source: str | os.PathLike[str] | pa.Table) -> pa.Table:
    """The queries to find candidates for: a table (or Parquet/CSV/JSONL file) with a `query` column.

    Optional `query_id` and `lang` columns are kept; a missing `query_id` is derived from the text.
    """
    if isinstance(source, pa.Table):
        table, name = source, "queries"
    elif isinstance(source, (str, os.PathLike)):
        table, name = read_table(source, "queries"), str(source)
    else:
        raise TypeError(f"queries: expected a file path or a pyarrow.Table, got {type(source).__name__}")
    if "query" not in table.column_names:
        raise RecordsError(f"{name}: no 'query' column (columns: {table.column_names})")
    queries = table.column("query").to_pylist()
    for i, q in enumerate(queries):
        if q is not None and not isinstance(q, str):
            raise RecordsError(f"{name}: row {i + 1}: query should be text, got {type(q).__name__} {q!r}")
        if q is None or not q.strip():
            raise RecordsError(f"{name}: row {i + 1}: query is missing or blank")
    ids = table.column("query_id").to_pylist() if "query_id" in table.column_names else [None] * len(queries)
    ids = [str(x) if x not in (None, "") else text_id(q) for x, q in zip(ids, queries, strict=True)]
    langs = table.column("lang").to_pylist() if "lang" in table.column_names else [None] * len(queries)
    return pa.table({"query": queries, "query_id": ids, "lang": pa.array(langs, pa.string())})


def _without_excluded(
    qtable: pa.Table, exclude: Sequence[str | os.PathLike[str] | pa.Table]
) -> tuple[pa.Table, int]:
    """The queries whose `query_key` appears in none of the `exclude` sources, and how many were dropped."""
    if isinstance(exclude, (str, os.PathLike, pa.Table)) or not isinstance(exclude, Sequence):
        raise TypeError(f"exclude: expected a list of files or tables, got {type(exclude).__name__}")
    if not exclude:
        return qtable, 0
    keys: set[str] = set()
    for source in exclude:
        keys.update(query_key(q) for q in read_queries(source).column("query").to_pylist())
    keep = np.array([query_key(q) not in keys for q in qtable.column("query").to_pylist()], dtype=bool)
    if not keep.any():
        raise RecordsError(
            f"queries: all {qtable.num_rows} queries are in the excluded sets; nothing is left to label"
        )
    return qtable.filter(pa.array(keep)), int((~keep).sum())


# ----------------------------------------------------------------------------------- BM25 statistics


@dataclass
class _ChunkStats:
    rows: int
    total_len: int
    df: Counter[str]
    doc_len: np.ndarray  # int32 words per item of the chunk


@dataclass
class _QueryTerms:
    """Each query's distinct words with their multiplicity (BM25 counts a repeated word each time)."""

    terms: list[list[str]]
    counts: list[np.ndarray]
    vocab: set[str]

    @classmethod
    def of(cls, queries: Sequence[str]) -> _QueryTerms:
        terms: list[list[str]] = []
        counts: list[np.ndarray] = []
        for q in queries:
            c = Counter(_native.words(q))
            terms.append(list(c))
            counts.append(np.fromiter(c.values(), dtype=np.float64, count=len(c)))
        return cls(terms, counts, {t for ts in terms for t in ts})


def _chunk_stats(texts: list[str], vocab: set[str]) -> _ChunkStats:
    df: Counter[str] = Counter()
    lengths = np.empty(len(texts), dtype=np.int32)
    for i, text in enumerate(texts):
        toks = _native.words(text)
        lengths[i] = len(toks)
        df.update(vocab.intersection(toks))
    return _ChunkStats(len(texts), int(lengths.sum()), df, lengths)


def _idf(n: float, df: np.ndarray) -> np.ndarray:
    # The index's own formula (rust/src/core/matching.rs), so rescored terms match it exactly.
    return np.log1p((n - df + 0.5) / (df + 0.5))


class _Rescorer:
    """Turns a chunk index's per-term scores into scores under the whole catalog's statistics."""

    def __init__(self, chunk: _ChunkStats, total: _ChunkStats, k1: float, b: float) -> None:
        self.chunk, self.k1, self.b = chunk, k1, b
        self.avgdl_c = chunk.total_len / chunk.rows if chunk.total_len else 1.0
        self.avgdl_g = total.total_len / total.rows if total.total_len else 1.0
        self.total = total
        # Global term scores exceed chunk ones by at most this factor times the idf ratio: tf
        # saturation differs only through avgdl, and the ratio of saturations is monotone in tf.
        self.sat_bound = max(1.0, self.avgdl_g / self.avgdl_c) if b > 0 and k1 > 0 else 1.0

    def idf_pair(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        df_c = np.array([self.chunk.df.get(t, 0) for t in terms], dtype=np.float64)
        df_g = np.array([self.total.df.get(t, 0) for t in terms], dtype=np.float64)
        return _idf(self.chunk.rows, df_c), np.where(df_c > 0, _idf(self.total.rows, df_g), 0.0)

    def saturation(self, tf: np.ndarray, dl: np.ndarray, avgdl: float) -> np.ndarray:
        norm = self.k1 * (1.0 - self.b + self.b * dl / avgdl)
        return tf * (self.k1 + 1.0) / (tf + norm)

    def global_term_scores(
        self, s_chunk: np.ndarray, idf_c: np.ndarray, idf_g: np.ndarray, dl: np.ndarray
    ) -> np.ndarray:
        sat_c = np.where(idf_c > 0, s_chunk / np.where(idf_c > 0, idf_c, 1.0), 0.0)
        if self.k1 == 0 or self.b == 0:
            return idf_g * sat_c  # saturation does not depend on avgdl
        norm_c = self.k1 * (1.0 - self.b + self.b * dl / self.avgdl_c)
        # sat = tf (k1 + 1) / (tf + norm)  =>  tf = sat * norm / (k1 + 1 - sat); tf is an integer.
        room = np.maximum(self.k1 + 1.0 - sat_c, 1e-12)
        tf = np.where(sat_c > 0, np.maximum(np.rint(sat_c * norm_c / room), 1.0), 0.0)
        return idf_g * self.saturation(tf, dl, self.avgdl_g)


# ------------------------------------------------------------------------------------------ top-k


def _merge(
    ids_a: np.ndarray, sc_a: np.ndarray, ids_b: np.ndarray, sc_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise best k of two (ids, scores) lists; -1 ids are padding; ties go to the lower id."""
    ids = np.concatenate([ids_a, ids_b], axis=1)
    sc = np.concatenate([sc_a, sc_b], axis=1)
    sc = np.where(ids < 0, -np.inf, sc)
    id_key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((id_key, -sc), axis=-1)[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_sc = np.take_along_axis(sc, order, axis=1)
    return out_ids, np.where(out_ids < 0, 0.0, out_sc).astype(np.float32)


def _rescore_rows(
    index: Any, qt: _QueryTerms, rows: np.ndarray, cand: np.ndarray, rescorer: _Rescorer
) -> tuple[np.ndarray, np.ndarray]:
    """Global scores of the chunk candidates `cand` [len(rows), depth] of queries `rows`; and per
    query the largest global/chunk idf ratio of its words, for the certificate."""
    scores = np.zeros(cand.shape, dtype=np.float64)
    ratio = np.ones(len(rows), dtype=np.float64)
    flat_terms: list[str] = []
    flat_docs: list[np.ndarray] = []
    flat_meta: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for r, qi in enumerate(rows):
        terms = qt.terms[qi]
        valid = np.flatnonzero(cand[r] >= 0)
        if not terms or not valid.size:
            continue
        idf_c, idf_g = rescorer.idf_pair(terms)
        present = idf_g > 0
        if present.any():
            ratio[r] = float(np.max(idf_g[present] / idf_c[present]))
        docs = cand[r, valid]
        for t in terms:
            flat_terms.extend([t] * docs.size)
            flat_docs.append(docs)
        flat_meta.append((r, valid, idf_c, idf_g, qt.counts[qi]))
    if not flat_terms:
        return scores, ratio
    s_all = index.score(flat_terms, np.concatenate(flat_docs)).astype(np.float64)
    pos = 0
    for r, valid, idf_c, idf_g, counts in flat_meta:
        n = valid.size
        s = s_all[pos : pos + n * idf_c.size].reshape(idf_c.size, n)
        pos += s.size
        dl = rescorer.chunk.doc_len[cand[r, valid]].astype(np.float64)
        g = rescorer.global_term_scores(s, idf_c[:, None], idf_g[:, None], dl[None, :])
        scores[r, valid] = counts @ g
    return scores, ratio


def _chunk_top_k(
    index: Any,
    queries: list[str],
    qt: _QueryTerms,
    rescorer: _Rescorer,
    k: int,
    best: tuple[np.ndarray, np.ndarray],
    first_depth: int,
    max_depth: int,
    stats: CandidateStats,
    offset: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge this chunk's certified top-k into `best`, deepening the retrieval where needed."""
    best_ids, best_sc = best
    todo = np.arange(len(queries))
    depth = min(first_depth, rescorer.chunk.rows)
    deepened: set[int] = set()
    while todo.size:
        ids, chunk_sc = index.top_k([queries[i] for i in todo], depth)
        g, ratio = _rescore_rows(index, qt, todo, ids, rescorer)
        glob = np.where(ids >= 0, ids + offset, -1)
        m_ids, m_sc = _merge(best_ids[todo], best_sc[todo], glob, g.astype(np.float32), k)
        # A full row may have left matching items behind, unless it holds the whole chunk.
        full = (ids[:, -1] >= 0) & (depth < rescorer.chunk.rows)
        kth = np.where(m_ids[:, -1] >= 0, m_sc[:, -1].astype(np.float64), 0.0)
        bound = ratio * rescorer.sat_bound * chunk_sc[:, -1].astype(np.float64)
        done = ~full | ((m_ids[:, -1] >= 0) & (bound <= kth * (1.0 + _BOUND_SLACK)))
        last_try = depth >= min(max_depth, rescorer.chunk.rows)
        keep = done | last_try
        best_ids[todo[keep]], best_sc[todo[keep]] = m_ids[keep], m_sc[keep]
        if last_try:
            stats.uncertified_queries += int((~done).sum())
            break
        todo = todo[~keep]
        deepened.update(todo.tolist())
        depth = min(depth * 2, max_depth, rescorer.chunk.rows)
    stats.deepened_queries += len(deepened)
    return best_ids, best_sc


def bm25_top_k(
    queries: Sequence[str],
    catalog: str | os.PathLike[str] | pa.Table,
    k: int,
    *,
    chunk_rows: int = 1_000_000,
    spec: AssemblySpec | None = None,
    k1: float = 1.2,
    b: float = 0.75,
    oversample: int = 2,
    max_oversample: int = 64,
    stats: CandidateStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` catalog rows per query by BM25 over the assembled item text, streamed in chunks.

    Returns `(rows, scores)`, each `[len(queries), k]`; rows are catalog row numbers, -1 pads queries
    with fewer than k matching items. Scores use the whole catalog's statistics (see the module doc).
    """
    if isinstance(queries, str) or not isinstance(queries, Sequence):
        raise TypeError(f"queries: expected a sequence of strings, got {type(queries).__name__}")
    k = check_int(k, "k")
    chunk_rows = check_int(chunk_rows, "chunk_rows")
    oversample = check_int(oversample, "oversample")
    max_oversample = max(check_int(max_oversample, "max_oversample"), oversample)
    stats = stats if stats is not None else CandidateStats()
    cat = catalog if isinstance(catalog, _Catalog) else _Catalog(catalog)
    queries = list(queries)
    nq = len(queries)
    best = (np.full((nq, k), -1, dtype=np.int64), np.zeros((nq, k), dtype=np.float32))
    if cat.num_rows == 0 or nq == 0:
        return best
    if cat.num_rows <= chunk_rows:
        # One chunk: the index's statistics are the catalog's, nothing to rescore.
        texts = assemble(next(iter(cat.chunks(chunk_rows)))[1], spec)
        stats.chunks, stats.empty_items = 1, sum(1 for t in texts if not t)
        return _single_index_top_k(texts, queries, k, k1, b)
    qt = _QueryTerms.of(queries)
    per_chunk: list[_ChunkStats] = []
    for _, chunk in cat.chunks(chunk_rows):
        texts = assemble(chunk, spec)
        stats.empty_items += sum(1 for t in texts if not t)
        per_chunk.append(_chunk_stats(texts, qt.vocab))
    total = _ChunkStats(
        sum(c.rows for c in per_chunk),
        sum(c.total_len for c in per_chunk),
        sum((c.df for c in per_chunk), Counter()),
        np.empty(0, dtype=np.int64),
    )
    stats.chunks = len(per_chunk)
    for (start, chunk), cstats in zip(cat.chunks(chunk_rows), per_chunk, strict=True):
        index = _native.Bm25Index(assemble(chunk, spec), k1, b)
        best = _chunk_top_k(
            index,
            queries,
            qt,
            _Rescorer(cstats, total, k1, b),
            k,
            best,
            k * oversample,
            k * max_oversample,
            stats,
            start,
        )
    return best


def _single_index_top_k(
    texts: list[str], queries: list[str], k: int, k1: float, b: float
) -> tuple[np.ndarray, np.ndarray]:
    index = _native.Bm25Index(texts, k1, b)
    # The index answers at most its size; the rest of a row is padding.
    found, found_scores = index.top_k(queries, min(k, len(index)))
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.zeros((len(queries), k), dtype=np.float32)
    ids[:, : found.shape[1]], scores[:, : found.shape[1]] = found, found_scores
    return ids, scores


# ----------------------------------------------------------------------------------- negatives


def random_negatives(positives: np.ndarray, n_items: int, m: int, seed: int) -> np.ndarray:
    """`[len(positives), m]` random catalog rows per query, distinct and not among its positives.

    `positives` is `[n_queries, k]` with -1 padding. One generator seeded with `seed` draws for the
    queries in order, so the result depends only on the inputs. Rows are -1 where a catalog has too
    few other items.
    """
    if positives.ndim != 2:
        raise ValueError(f"positives: expected a 2-d array [n_queries, k], got shape {positives.shape}")
    n_items = check_int(n_items, "n_items", 0)
    m = check_int(m, "negatives", 0)
    out = np.full((positives.shape[0], m), -1, dtype=np.int64)
    if m == 0 or n_items == 0:
        return out
    rng = np.random.default_rng(seed)
    for i, pos in enumerate(positives):
        taken = set(pos[pos >= 0].tolist())
        want = min(m, n_items - len(taken))
        picked: list[int] = []
        seen = set(taken)
        while len(picked) < want:
            # Rejection sampling: catalogs are far larger than k + m, so one draw almost always does.
            for r in rng.integers(0, n_items, size=2 * (want - len(picked)) + 8).tolist():
                if r not in seen:
                    seen.add(r)
                    picked.append(r)
                    if len(picked) == want:
                        break
        out[i, : len(picked)] = picked
    return out


# ------------------------------------------------------------------------------------------ output


def _pair_rows(top: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Flatten (query, item) pairs: per query its BM25 hits by rank, then its negatives."""
    q_idx: list[int] = []
    rows: list[int] = []
    sources: list[str] = []
    for qi in range(top.shape[0]):
        for block, source in ((top[qi], SOURCE_BM25), (neg[qi], SOURCE_RANDOM)):
            hits = block[block >= 0].tolist()
            q_idx.extend([qi] * len(hits))
            rows.extend(hits)
            sources.extend([source] * len(hits))
    return np.asarray(q_idx, dtype=np.int64), np.asarray(rows, dtype=np.int64), sources


def _pairs_table(
    queries: pa.Table,
    items: pa.Table,
    item_rows: np.ndarray,
    q_idx: np.ndarray,
    rows: np.ndarray,
    sources: list[str],
) -> pa.Table:
    at = pa.array(np.searchsorted(item_rows, rows))
    picked = items.take(at) if rows.size else items.slice(0, 0)
    qs = queries.take(pa.array(q_idx))
    cols: dict[str, Any] = {"query": qs.column("query"), "query_id": qs.column("query_id")}
    for name in ITEM_TEXT_FIELDS:
        if name in picked.column_names:
            cols[name] = picked.column(name)
    ids = picked.column("item_id").to_pylist() if "item_id" in picked.column_names else [None] * len(rows)
    cols["item_id"] = [
        str(x) if x not in (None, "") else f"item-{r}" for x, r in zip(ids, rows.tolist(), strict=True)
    ]
    item_lang = picked.column("lang").to_pylist() if "lang" in picked.column_names else [None] * len(rows)
    q_lang = qs.column("lang").to_pylist()
    # The pair's language is the user's, i.e. the query's, as in the labeled sets; else the item's.
    cols["lang"] = [a if a else b for a, b in zip(q_lang, item_lang, strict=True)]
    table = make_records(pa.table(cols), source="candidates")
    return table.append_column("source", pa.array(sources, pa.string()))


def build_candidates(
    queries: str | os.PathLike[str] | pa.Table,
    catalog: str | os.PathLike[str] | pa.Table,
    k: int = 50,
    negatives: int = 0,
    seed: int = 0,
    *,
    chunk_rows: int = 1_000_000,
    spec: AssemblySpec | None = None,
    k1: float = 1.2,
    b: float = 0.75,
    exclude: Sequence[str | os.PathLike[str] | pa.Table] = (),
) -> tuple[pa.Table, CandidateStats]:
    """Unlabeled pairs for the teacher: per query its BM25 top-`k` items, then `negatives` random ones.

    `exclude` holds query or records files (or tables) whose queries get no candidates, compared by
    `records.query_key`: pass the dev and test sets, so that the student is never distilled on the
    queries it is evaluated on. Returns a records table (`pinrel.records.SCHEMA`, `label` null) with
    one extra string column `source` ('bm25' or 'random'), and the run's `CandidateStats`. Item rows
    without an `item_id` get `item-<row>`; `lang` is the query's, else the item's.
    """
    t0 = time.perf_counter()
    stats = CandidateStats()
    qtable = read_queries(queries)
    qtable, stats.excluded_queries = _without_excluded(qtable, exclude)
    cat = _Catalog(catalog)
    negatives = check_int(negatives, "negatives", 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    stats.queries, stats.catalog_rows = qtable.num_rows, cat.num_rows
    if cat.num_rows == 0:
        raise RecordsError(f"{cat.name}: the catalog has no rows")
    top, _ = bm25_top_k(
        qtable.column("query").to_pylist(), cat, k, chunk_rows=chunk_rows, spec=spec, k1=k1, b=b, stats=stats
    )
    neg = random_negatives(top, cat.num_rows, negatives, seed)
    q_idx, rows, sources = _pair_rows(top, neg)
    item_rows = np.unique(rows)
    items = cat.take(item_rows, chunk_rows)
    table = _pairs_table(qtable, items, item_rows, q_idx, rows, sources)
    stats.bm25_pairs = int((top >= 0).sum())
    stats.random_pairs = int((neg >= 0).sum())
    stats.queries_without_hits = int((top[:, 0] < 0).sum())
    if stats.uncertified_queries:
        stats.notes.append(
            f"{stats.uncertified_queries} query/chunk top-k lists hit the retrieval depth cap and may "
            "differ slightly from a single index over the whole catalog"
        )
    stats.seconds = time.perf_counter() - t0
    return table, stats


def write_candidates(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write candidates atomically as Parquet, keeping the `source` column beside the record fields."""
    if not isinstance(table, pa.Table):
        raise TypeError(f"table: expected a pyarrow.Table, got {type(table).__name__}")
    target = Path(path)
    if target.suffix.lower() not in (".parquet", ".pq"):
        raise ValueError(f"out: {target} must end in .parquet (candidates keep a 'source' column)")
    with atomic_path(target) as tmp:
        # Row groups of 64k rows let `pinrel label` read one shard without decoding the whole file.
        pq.write_table(table, tmp, row_group_size=_ROW_GROUP_ROWS)
    return target
