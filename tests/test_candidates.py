"""Candidate pairs: BM25 top-k (single index and streamed chunks) against brute force, negatives, output."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pinrel
from pinrel.candidates import (
    CandidateStats,
    bm25_top_k,
    build_candidates,
    random_negatives,
    write_candidates,
)
from pinrel.records import SCHEMA, RecordsError, read_records

K = 8


@pytest.fixture(scope="module")
def catalog() -> pa.Table:
    """Items sorted by topic, with topics of very different text lengths, so that each chunk's BM25
    statistics (idf, average length) are far from the whole catalog's."""
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(1200)]
    titles, descs, ids = [], [], []
    for i in range(1500):
        topic = i // 300
        words = vocab[topic * 150 : (topic + 1) * 150]
        n = rng.randint(20, 60) if topic % 2 else rng.randint(2, 8)
        titles.append(" ".join(rng.choices(words, k=n // 2 + 1)))
        descs.append(" ".join(rng.choices(vocab, k=n)))
        ids.append(f"it{i}")
    titles[10] = descs[10] = ""  # an item without text
    return pa.table({"item_id": ids, "title": titles, "description": descs})


@pytest.fixture(scope="module")
def queries() -> list[str]:
    rng = random.Random(8)
    qs = [" ".join(rng.choices([f"w{i}" for i in range(800)], k=rng.randint(1, 4))) for _ in range(60)]
    return [*qs, "w3 w3 w17", "nothing matches this"]


def brute_force(catalog: pa.Table, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    index = pinrel.Bm25Index(pinrel.assemble(catalog))
    n = len(index)
    scores = index.score([q for q in queries for _ in range(n)], np.tile(np.arange(n), len(queries)))
    scores = scores.reshape(len(queries), n)
    order = np.lexsort((np.tile(np.arange(n), (len(queries), 1)), -scores), axis=-1)[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    return np.where(top > 0, order, -1), np.where(top > 0, top, 0.0)


def test_single_index_equals_brute_force(catalog: pa.Table, queries: list[str]) -> None:
    ids, scores = bm25_top_k(queries, catalog, K)
    want_ids, want_scores = brute_force(catalog, queries, K)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    assert (ids[-1] == -1).all(), "a query matching nothing gets only padding"


@pytest.mark.parametrize("chunk_rows", [400, 333, 1499])
def test_streamed_chunks_keep_corpus_wide_bm25(
    catalog: pa.Table, queries: list[str], tmp_path: Path, chunk_rows: int
) -> None:
    path = tmp_path / "catalog.parquet"
    pq.write_table(catalog, path, row_group_size=250)  # row groups straddle the chunks
    stats = CandidateStats()
    ids, scores = bm25_top_k(queries, path, K, chunk_rows=chunk_rows, stats=stats)
    want_ids, want_scores = brute_force(catalog, queries, K)
    assert stats.chunks == -(-catalog.num_rows // chunk_rows) and stats.uncertified_queries == 0
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    # Every returned item really has its score under the whole catalog's statistics ...
    index = pinrel.Bm25Index(pinrel.assemble(catalog))
    hit = ids >= 0
    rows = np.nonzero(hit)[0]
    true = index.score([queries[i] for i in rows], ids[hit])
    np.testing.assert_allclose(scores[hit], true, rtol=1e-5, atol=1e-6)
    # ... and the lists are the brute-force ones (equal scores may swap places).
    assert (ids == want_ids).mean() > 0.99
    assert stats.empty_items == 1


def test_random_negatives_are_distinct_disjoint_and_seeded() -> None:
    positives = np.array([[0, 1, 2, -1], [5, -1, -1, -1], [-1, -1, -1, -1]])
    neg = random_negatives(positives, 50, 10, seed=3)
    assert neg.shape == (3, 10)
    for pos, row in zip(positives, neg, strict=True):
        assert len(set(row.tolist())) == 10 and not set(row.tolist()) & set(pos.tolist())
        assert ((row >= 0) & (row < 50)).all()
    np.testing.assert_array_equal(neg, random_negatives(positives, 50, 10, seed=3))
    assert not np.array_equal(neg, random_negatives(positives, 50, 10, seed=4))
    small = random_negatives(np.array([[0, 1, 2]]), 5, 4, seed=0)
    assert sorted(small[0, :2].tolist()) == [3, 4] and (small[0, 2:] == -1).all()
    with pytest.raises(ValueError, match="negatives"):
        random_negatives(positives, 50, -1, seed=0)


def test_build_candidates_writes_records_with_a_source(
    catalog: pa.Table, queries: list[str], tmp_path: Path
) -> None:
    qtable = pa.table({"query": queries, "query_id": [f"q{i}" for i in range(len(queries))]})
    table, stats = build_candidates(qtable, catalog, k=K, negatives=3, seed=1)
    assert table.column_names == [*SCHEMA.names, "source"]
    assert table.column("label").null_count == table.num_rows
    assert stats.bm25_pairs + stats.random_pairs == table.num_rows
    assert stats.random_pairs == 3 * len(queries) and stats.queries_without_hits == 1
    want_ids, _ = brute_force(catalog, queries, K)
    first = table.filter(pa.compute.equal(table.column("query_id"), "q0"))
    bm25 = [s == "bm25" for s in first.column("source").to_pylist()]
    assert first.column("item_id").to_pylist()[: sum(bm25)] == [f"it{i}" for i in want_ids[0] if i >= 0]
    for qid in ("q0", "q5", f"q{len(queries) - 1}"):
        rows = table.filter(pa.compute.equal(table.column("query_id"), qid))
        assert len(set(rows.column("item_id").to_pylist())) == rows.num_rows, "no item twice per query"
    again, _ = build_candidates(qtable, catalog, k=K, negatives=3, seed=1)
    assert again.equals(table)
    other, _ = build_candidates(qtable, catalog, k=K, negatives=3, seed=2)
    assert not other.equals(table)
    path = tmp_path / "catalog.parquet"
    pq.write_table(catalog, path)
    chunked, _ = build_candidates(qtable, path, k=K, negatives=3, seed=1, chunk_rows=500)
    assert chunked.column("item_id").to_pylist() == table.column("item_id").to_pylist()
    out = write_candidates(table, tmp_path / "pairs.parquet")
    assert pq.read_table(out).column("source").to_pylist() == table.column("source").to_pylist()
    assert read_records(out).num_rows == table.num_rows  # the records reader ignores `source`


def test_bad_input_is_named(catalog: pa.Table, tmp_path: Path) -> None:
    q = pa.table({"query": ["red mug"]})
    with pytest.raises(ValueError, match="k: expected an integer >= 1"):
        build_candidates(q, catalog, k=0)
    with pytest.raises(ValueError, match="negatives"):
        build_candidates(q, catalog, negatives=-2)
    with pytest.raises(RecordsError, match="no 'query' column"):
        build_candidates(pa.table({"text": ["x"]}), catalog)
    with pytest.raises(RecordsError, match="row 2: query is missing or blank"):
        build_candidates(pa.table({"query": ["ok", "  "]}), catalog)
    with pytest.raises(RecordsError, match="none of the item fields"):
        build_candidates(q, pa.table({"price": [1.0]}))
    # A language is not an item: a catalog of languages only has nothing to retrieve.
    with pytest.raises(RecordsError, match="none of the item fields"):
        build_candidates(q, pa.table({"lang": ["en"]}))
    csv = tmp_path / "catalog.csv"
    csv.write_text("title\nmug\n")
    with pytest.raises(ValueError, match="must be a Parquet file"):
        build_candidates(q, csv)
    with pytest.raises(FileNotFoundError, match="catalog"):
        build_candidates(q, tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match=r"must end in \.parquet"):
        write_candidates(pa.table({"query": ["x"]}), tmp_path / "pairs.csv")


def test_query_files_are_read_as_records_are(tmp_path: Path) -> None:
    """pyarrow's CSV reader typed a query "2024" as a number and refused it as blank; the records
    readers keep CSV cells as text, and name the row of a value that is not."""
    from pinrel.candidates import read_queries

    (tmp_path / "q.csv").write_text("query,query_id\n2024,1\nred mug,2\n")
    assert read_queries(tmp_path / "q.csv").to_pydict()["query"] == ["2024", "red mug"]
    (tmp_path / "q.jsonl").write_text('{"query": 5}\n')
    with pytest.raises(RecordsError, match="row 1: query should be text, got int 5"):
        read_queries(tmp_path / "q.jsonl")
    (tmp_path / "q.jsonl").write_text('{"query": "a"}\n{"query": 5}\n')
    with pytest.raises(RecordsError, match="column 'query' mixes value types"):
        read_queries(tmp_path / "q.jsonl")
    (tmp_path / "bad.csv").write_text('query\n"red mug\n')
    with pytest.raises(RecordsError, match=r"queries: .*bad\.csv: line \d: malformed CSV"):
        read_queries(tmp_path / "bad.csv")


def test_an_in_memory_catalog_with_languages() -> None:
    """`lang` was picked twice from an in-memory catalog (a KeyError: the field existed 2 times)."""
    catalog = pa.table({"item_id": ["a", "b"], "title": ["Red mug", "Desk lamp"], "lang": ["en", "de"]})
    pairs, _ = build_candidates(pa.table({"query": ["red mug", "lamp"], "lang": [None, "fr"]}), catalog, k=2)
    # The pair's language is the query's where it has one, else the item's.
    langs = {
        (q, i): lang
        for q, i, lang in zip(
            *(pairs.column(c).to_pylist() for c in ("query", "item_id", "lang")), strict=True
        )
    }
    assert langs == {("red mug", "a"): "en", ("lamp", "b"): "fr"}  # BM25 finds the items sharing a word


def test_cli(catalog: pa.Table, queries: list[str], tmp_path: Path) -> None:
    from pinrel.cli import main

    pq.write_table(catalog, tmp_path / "catalog.parquet")
    pq.write_table(pa.table({"query": queries}), tmp_path / "queries.parquet")
    code = main(
        [
            "candidates",
            "--queries",
            str(tmp_path / "queries.parquet"),
            "--catalog",
            str(tmp_path / "catalog.parquet"),
            "--k",
            "5",
            "--negatives",
            "2",
            "--chunk-rows",
            "700",
            "--out",
            str(tmp_path / "pairs.parquet"),
        ]
    )
    assert code == 0
    pairs = pq.read_table(tmp_path / "pairs.parquet")
    assert set(pairs.column("source").to_pylist()) == {"bm25", "random"}
    pq.write_table(pa.table({"query": queries[:3]}), tmp_path / "test.parquet")
    args = [
        "candidates",
        "--queries",
        str(tmp_path / "queries.parquet"),
        "--catalog",
        str(tmp_path / "catalog.parquet"),
    ]
    assert (
        main([*args, "--exclude", str(tmp_path / "test.parquet"), "--out", str(tmp_path / "held.parquet")])
        == 0
    )
    held = set(pq.read_table(tmp_path / "held.parquet").column("query").to_pylist())
    assert held == set(queries[3:]) - {"nothing matches this"} and held.isdisjoint(queries[:3])
    assert (
        main(
            [
                "candidates",
                "--queries",
                str(tmp_path / "queries.parquet"),
                "--catalog",
                str(tmp_path / "catalog.parquet"),
                "--k",
                "0",
                "--out",
                str(tmp_path / "x.parquet"),
            ]
        )
        == 2
    )


def test_excluded_queries_get_no_candidates(catalog: pa.Table, queries: list[str], tmp_path: Path) -> None:
    qtable = pa.table({"query": queries[:10], "query_id": [f"q{i}" for i in range(10)]})
    full, _ = build_candidates(qtable, catalog, k=K, negatives=1)
    # A records file (one row per pair, so a query repeats) and a table; matched by query_key, so
    # case and spacing do not let a test query through.
    dev = tmp_path / "dev.jsonl"
    dev.write_text(
        "".join(f'{{"query": "{q.upper()}", "title": "x", "label": 2}}\n' for q in [queries[1], queries[1]]),
        encoding="utf-8",
    )
    test = pa.table({"query": ["  " + queries[4].replace(" ", "   ")]})
    table, stats = build_candidates(qtable, catalog, k=K, negatives=1, exclude=[dev, test])
    assert stats.excluded_queries == 2 and stats.queries == 8
    ids = table.column("query_id").to_pylist()
    assert set(ids) == set(full.column("query_id").to_pylist()) - {"q1", "q4"}
    # The other queries keep their BM25 candidates (random negatives are drawn anew for fewer queries).
    gone = pa.compute.is_in(full.column("query_id"), pa.array(["q1", "q4"]))
    same = full.filter(
        pa.compute.and_(pa.compute.invert(gone), pa.compute.equal(full.column("source"), "bm25"))
    )
    bm25 = table.filter(pa.compute.equal(table.column("source"), "bm25"))
    assert bm25.column("item_id").to_pylist() == same.column("item_id").to_pylist()
    with pytest.raises(RecordsError, match="all 10 queries are in the excluded sets"):
        build_candidates(qtable, catalog, exclude=[qtable])
    with pytest.raises(TypeError, match="exclude: expected a list of files or tables, got PosixPath"):
        build_candidates(qtable, catalog, exclude=dev)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        build_candidates(qtable, catalog, exclude=[tmp_path / "missing.parquet"])


def test_top_k_is_bounded_by_the_index() -> None:
    index = pinrel.Bm25Index(["red mug", "blue cup", "red cup"])
    ids, scores = index.top_k(["red", "cup"], 3)
    assert ids.shape == scores.shape == (2, 3)
    # A k past the index's size used to allocate k slots per query: 2^40 aborted the process, and
    # 2^62 wrapped n_queries * k into a panic.
    for k in (4, 2**40, 2**62, 2**64 - 1):
        with pytest.raises(ValueError, match=r"k: must be in 1\.\.=3"):
            index.top_k(["red"] * 4, k)
    # The streaming helper still answers [n_queries, k], padding what a small catalog cannot fill.
    catalog = pa.table({"title": ["red mug", "blue cup"]})
    ids, scores = bm25_top_k(["red", "cup"], catalog, 5)
    assert ids.shape == (2, 5) and (ids[:, 2:] == -1).all() and ids[0, 0] == 0 and ids[1, 0] == 1


def test_score_reads_strided_doc_ids() -> None:
    index = pinrel.Bm25Index(["red mug", "blue cup", "red cup"])
    ids = np.array([0, 9, 1, 9, 2], dtype=np.int64)[::2]  # a view, as bucket_batches also accepts
    np.testing.assert_array_equal(index.score(["red"] * 3, ids), index.score(["red"] * 3, ids.copy()))


def test_bm25_arguments_are_named() -> None:
    """pyo3's own conversions said `type mismatch: from=int32, to=int64` or `must be real number,
    not str`, naming no argument; int32 ids and lists of ints are now read as ids."""
    index = pinrel.Bm25Index(["red mug", "blue cup", "red cup"])
    want = index.score(["red", "cup"], np.array([0, 1], dtype=np.int64))
    np.testing.assert_array_equal(index.score(["red", "cup"], np.array([0, 1], dtype=np.int32)), want)
    np.testing.assert_array_equal(index.score(["red", "cup"], [0, 1]), want)
    for call, kind, message in (
        (lambda: index.score(["red"], np.array([[0]])), TypeError, "doc_ids: expected a 1-D array"),
        (lambda: index.score(["red"], [-1]), ValueError, r"doc_ids\[0\]: must be >= 0, got -1"),
        (lambda: index.score(["red"], [3]), ValueError, r"doc_ids\[0\]: 3 is out of range for 3 documents"),
        (lambda: pinrel.Bm25Index(["a"], b="x"), TypeError, "b: expected a number, got str"),
        (lambda: pinrel.Bm25Index(["a"], b=1.5), ValueError, r"b: must be in \[0, 1\], got 1.5"),
        (lambda: pinrel.Bm25Index(["a"], k1=1e40), ValueError, "k1: must be >= 0 and fit in float32, got 1"),
        (lambda: pinrel.Bm25Index(["a"], k1=float("nan")), ValueError, "k1: must be finite, got NaN"),
        (lambda: pinrel.Bm25Index(["a"], lowercase=1), TypeError, "lowercase: expected bool, got int"),
        (lambda: pinrel.FeatureHasher().feature_index(None, "x"), TypeError, "kind: expected str"),
    ):
        with pytest.raises(kind, match=message):
            call()
