"""`pinrel.FeatureHasher`: the hash contract, CSR output, match features, threads and bad input."""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import regex
import scipy.sparse as sp

import pinrel
from pinrel import FeatureHasher, _native

from .test_assemble import SCRIPTS, expect_error

# Golden columns of the default hasher (n_features=2**20, seed=0, signed), computed once with an
# independent xxh3 implementation (the `xxhash` package) from the definition in core/hashing.rs:
# h = xxh3_64_with_seed(kind_byte + utf8(gram), seed), column h % n_features, sign from bit 63.
# A changed value here means every saved model silently reads the wrong columns.
GOLDEN_DEFAULT: list[tuple[str, str, int, float]] = [
    ("word", "hello", 64713, 1.0),
    ("word", "hello world", 823550, -1.0),
    ("word", "東", 862094, -1.0),
    ("word", "👍🏽", 30173, -1.0),
    ("word", "οδος", 712971, -1.0),
    ("word", "สวัสดี", 275921, 1.0),
    ("word", "a" * 40, 316198, -1.0),
    ("char", "<he", 555705, 1.0),
    ("char", "llo>", 1015693, 1.0),
    ("char", "<東>", 170936, -1.0),
    ("char", "<ab>", 750843, 1.0),
    ("char", "<" + "x" * 30, 906516, -1.0),
    # The same vectors as rust/tests/golden.rs, so both layers pin one contract.
    ("char", "<hello>", 70242, 1.0),
    ("word", "🙂", 178211, -1.0),
    ("char", "<🙂>", 395211, 1.0),
    ("word", "สวัสดีครับ", 991116, 1.0),
    ("char", "café>", 573365, 1.0),
    ("word", "", 605737, -1.0),
]
# Whole rows of the default hasher as (column, sign), also from rust/tests/golden.rs.
GOLDEN_ROWS: list[tuple[str, list[str], list[tuple[int, float]]]] = [
    (
        "hello",
        ["hello"],
        [(41797, 1.0), (64713, 1.0), (212667, 1.0), (247913, 1.0), (289442, 1.0), (470824, 1.0),
         (479399, 1.0), (548311, -1.0), (555705, 1.0), (590158, 1.0), (684733, 1.0), (750419, -1.0),
         (1015693, 1.0)],
    ),
    ("🙂", ["🙂"], [(178211, -1.0), (395211, 1.0)]),
    (
        "東京タワー",
        ["東", "京", "タワー"],
        [(7558, -1.0), (92488, -1.0), (170936, -1.0), (194118, -1.0), (316606, 1.0), (323722, 1.0),
         (339387, -1.0), (466528, 1.0), (646688, -1.0), (664838, 1.0), (787664, -1.0), (862094, -1.0),
         (998550, -1.0)],
    ),
]  # fmt: skip
# n_features=1000, seed=42, signed=False: the modulo path (not a power of two) and a non-zero seed.
GOLDEN_SEEDED: list[tuple[str, str, int, float]] = [
    ("word", "hello", 314, 1.0),
    ("word", "hello world", 767, 1.0),
    ("word", "東", 464, 1.0),
    ("word", "👍🏽", 938, 1.0),
]


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = pinrel.get_num_threads()
    yield
    pinrel.set_num_threads(before)


def graphemes(s: str) -> list[str]:
    return regex.findall(r"\X", s)


def reference_row(text: str, hasher: FeatureHasher) -> dict[int, float]:
    """The hash definition spelled out gram by gram, through `feature_index` only."""
    p = hasher.get_params()
    toks = _native.words(text, p["lowercase"])
    acc: dict[int, float] = defaultdict(float)

    def add(kind: str, gram: str) -> None:
        col, sign = hasher.feature_index(kind, gram)
        acc[col] += sign

    if p["word_ngrams"]:
        lo, hi = p["word_ngrams"]
        for n in range(lo, hi + 1):
            for i in range(len(toks) - n + 1):
                add("word", " ".join(toks[i : i + n]))
    if p["char_ngrams"]:
        lo, hi = p["char_ngrams"]
        for t in toks:
            g = graphemes(f"<{t}>")
            if len(g) < lo:
                add("char", "".join(g))
            for n in range(lo, hi + 1):
                for i in range(len(g) - n + 1):
                    add("char", "".join(g[i : i + n]))
    row = {c: v for c, v in acc.items() if v != 0}
    if p["norm"] == "l2":
        z = math.sqrt(sum(v * v for v in row.values()))
    elif p["norm"] == "l1":
        z = sum(abs(v) for v in row.values())
    else:
        z = 1.0
    return {c: v / z for c, v in row.items()}


def row_dict(X: sp.csr_matrix, r: int) -> dict[int, float]:
    a, b = X.indptr[r], X.indptr[r + 1]
    return dict(zip(X.indices[a:b].tolist(), X.data[a:b].tolist(), strict=True))


def config_id(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


CONFIGS: list[dict[str, Any]] = [
    {},
    {"n_features": 1000, "seed": 42, "signed": False, "norm": "l1"},
    {"n_features": 16, "word_ngrams": (1, 3), "char_ngrams": None, "norm": None},
    {"word_ngrams": None, "char_ngrams": (1, 4), "lowercase": False},
    {"n_features": 7, "char_ngrams": (6, 8)},
]


# ---------------------------------------------------------------------------------------------
# The hash contract
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "gram", "col", "sign"), GOLDEN_DEFAULT)
def test_golden_columns_default(kind: str, gram: str, col: int, sign: float) -> None:
    assert FeatureHasher().feature_index(kind, gram) == (col, sign)


@pytest.mark.parametrize(("kind", "gram", "col", "sign"), GOLDEN_SEEDED)
def test_golden_columns_seeded(kind: str, gram: str, col: int, sign: float) -> None:
    hasher = FeatureHasher(n_features=1000, seed=42, signed=False)
    assert hasher.feature_index(kind, gram) == (col, sign)


@pytest.mark.parametrize(("text", "tokens", "row"), GOLDEN_ROWS, ids=[r[0] for r in GOLDEN_ROWS])
def test_golden_rows(text: str, tokens: list[str], row: list[tuple[int, float]]) -> None:
    assert _native.words(text) == tokens
    X = FeatureHasher().transform([text])
    assert list(zip(X.indices.tolist(), np.sign(X.data).tolist(), strict=True)) == row
    assert np.abs(X.data) == pytest.approx(1 / math.sqrt(len(row)))


def test_hash_definition_against_independent_xxh3() -> None:
    xxhash = pytest.importorskip("xxhash")
    hasher = FeatureHasher(n_features=12345, seed=7)
    grams = [*SCRIPTS.values(), "", "x", "a b", "🇯🇵" * 9, "é" * 100, "<" + "q" * 300]
    for kind in ("word", "char"):
        for gram in grams:
            h = xxhash.xxh3_64_intdigest(kind[0].encode() + gram.encode(), 7)
            assert hasher.feature_index(kind, gram) == (h % 12345, -1.0 if h >> 63 else 1.0)


def test_golden_row_hello_world() -> None:
    # Unnormalised, unsigned counts make the expected row readable: every gram of "hello world".
    hasher = FeatureHasher(word_ngrams=(1, 2), char_ngrams=(3, 3), norm=None, signed=False)
    X = hasher.transform(["Hello, WORLD"])
    expected: dict[int, float] = defaultdict(float)
    grams = [("word", "hello"), ("word", "world"), ("word", "hello world")]
    grams += [("char", g) for g in ("<he", "hel", "ell", "llo", "lo>", "<wo", "wor", "orl", "rld", "ld>")]
    for kind, gram in grams:
        expected[hasher.feature_index(kind, gram)[0]] += 1.0
    assert row_dict(X, 0) == expected
    col, _ = FeatureHasher().feature_index("word", "hello")
    assert col in row_dict(FeatureHasher().transform(["hello"]), 0)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_transform_matches_the_gram_by_gram_definition(config: dict[str, Any]) -> None:
    hasher = FeatureHasher(**config)
    texts = [*SCRIPTS.values(), "", "!!! ...", "a", "The quick brown fox, the FOX!", "İstanbul ΟΔΟΣ ß"]
    X = hasher.transform(texts)
    for r, text in enumerate(texts):
        got, want = row_dict(X, r), reference_row(text, hasher)
        assert got.keys() == want.keys(), text
        for c, v in want.items():
            assert got[c] == pytest.approx(v, abs=1e-6), text


def test_tokens_of_every_script() -> None:
    assert _native.words("Hello, World!") == ["hello", "world"]
    assert _native.words("Hello, World!", lowercase=False) == ["Hello", "World"]
    assert _native.words("東京タワー") == ["東", "京", "タワー"]
    assert _native.words("I like 🍕🍕!") == ["i", "like", "🍕", "🍕"]
    assert _native.words("👍🏽 ok") == ["👍🏽", "ok"]
    assert _native.words("... --- ©") == []
    for name, text in SCRIPTS.items():
        assert _native.words(text), name


# ---------------------------------------------------------------------------------------------
# CSR output
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_hashes_to_a_unit_row(script: str) -> None:
    hasher = FeatureHasher()
    X = hasher.transform([SCRIPTS[script], pinrel.assemble([{"title": SCRIPTS[script]}])[0]])
    assert X.shape == (2, 2**20)
    for r in range(2):
        a, b = X.indptr[r], X.indptr[r + 1]
        assert b - a > 5
        assert np.linalg.norm(X.data[a:b]) == pytest.approx(1.0, abs=1e-5)


def test_csr_layout_and_dtypes() -> None:
    hasher = FeatureHasher(n_features=1000)
    texts = ["red mug", "", "!!!", "東京タワー", "red mug"]
    X = hasher.transform(texts)
    assert isinstance(X, sp.csr_matrix)
    assert X.shape == (5, 1000)
    assert X.dtype == np.float32
    # scipy picks one index dtype for the matrix (int32 while it fits); the native parts are fixed.
    assert X.indices.dtype.kind == X.indptr.dtype.kind == "i"
    data, indices, indptr = hasher._native.transform_csr(texts)
    assert (data.dtype, indices.dtype, indptr.dtype) == (np.float32, np.int32, np.int64)
    assert X.has_sorted_indices
    assert (X.indices < 1000).all() and (X.indices >= 0).all()
    assert (X.data != 0).all()
    assert X.indptr[2] == X.indptr[1] == X.indptr[3], "empty rows stay empty"
    assert (X[0] != X[4]).nnz == 0
    # Sorted, unique indices per row: scipy agrees after canonicalising.
    Y = X.copy()
    Y.sum_duplicates()
    assert Y.nnz == X.nnz


def test_norms_sign_and_case() -> None:
    text = ["Red red RED mug, mug"]
    l2 = FeatureHasher(norm="l2").transform(text)
    l1 = FeatureHasher(norm="l1").transform(text)
    raw = FeatureHasher(norm=None, signed=False).transform(text)
    assert np.linalg.norm(l2.data) == pytest.approx(1.0, abs=1e-6)
    assert np.abs(l1.data).sum() == pytest.approx(1.0, abs=1e-6)
    assert (raw.data > 0).all() and (raw.data == np.round(raw.data)).all()
    # "red" occurs 3 times (after lowercasing), "mug" twice.
    words_only = FeatureHasher(word_ngrams=(1, 1), char_ngrams=None, norm=None, signed=False)
    row = row_dict(words_only.transform(text), 0)
    assert row == {
        words_only.feature_index("word", "red")[0]: 3.0,
        words_only.feature_index("word", "mug")[0]: 2.0,
    }
    cased = FeatureHasher(word_ngrams=(1, 1), char_ngrams=None, norm=None, signed=False, lowercase=False)
    assert len(row_dict(cased.transform(text), 0)) == 4  # Red, red, RED, mug


def test_disabled_ngram_kinds() -> None:
    text = ["hello world"]
    words_only = FeatureHasher(char_ngrams=None).transform(text)
    chars_only = FeatureHasher(word_ngrams=None).transform(text)
    both = FeatureHasher().transform(text)
    assert words_only.nnz == 3  # hello, world, "hello world"
    assert chars_only.nnz > 3
    assert both.nnz <= words_only.nnz + chars_only.nnz
    assert FeatureHasher(word_ngrams=None).get_params()["word_ngrams"] is None
    assert FeatureHasher(char_ngrams=None).get_params()["char_ngrams"] is None


def test_deterministic_across_calls_instances_and_threads(restore_threads: None) -> None:
    texts = [f"{SCRIPTS[k]} item {i} " * (1 + i % 5) for i in range(400) for k in sorted(SCRIPTS)[i % 3 :: 3]]
    hasher = FeatureHasher()
    pinrel.set_num_threads(1)
    one = hasher.transform(texts)
    pinrel.set_num_threads(2)
    two = hasher.transform(texts)
    again = FeatureHasher.from_params(hasher.get_params()).transform(texts)
    for other in (two, again):
        assert np.array_equal(one.indptr, other.indptr)
        assert np.array_equal(one.indices, other.indices)
        assert np.array_equal(one.data, other.data)


def test_results_kept_alive_stay_intact_while_dropped_ones_are_recycled(restore_threads: None) -> None:
    # Large outputs are handed back to the hasher when Python drops them and written into by the next
    # call (one thread writes straight into them). A matrix still referenced must never be touched,
    # and results written into recycled buffers must equal fresh ones.
    import gc

    hasher = FeatureHasher()
    batches = [[f"{SCRIPTS[k]} item {i} {j} " * 3 for i in range(1200) for k in SCRIPTS] for j in range(3)]
    assert sum(len(t.encode()) for t in batches[0]) >= 1 << 18  # large enough to be recycled
    pinrel.set_num_threads(2)
    fresh = [hasher.transform(b) for b in batches]
    snapshots = [(m.indices.copy(), m.data.copy()) for m in fresh]
    pinrel.set_num_threads(1)
    for _ in range(2):
        for b, (indices, data) in zip(batches, snapshots, strict=True):
            m = hasher.transform(b)
            assert np.array_equal(m.indices, indices)
            assert np.array_equal(m.data, data)
            m.data[:] = np.nan  # a caller may scribble on its own result before dropping it
            del m
            gc.collect()
    for m, (indices, data) in zip(fresh, snapshots, strict=True):
        assert np.array_equal(m.indices, indices)
        assert np.array_equal(m.data, data)
        assert m.indices.base is not None  # a view over the Rust buffer, no copy


def test_transform_releases_the_gil_and_stays_correct_under_concurrency(restore_threads: None) -> None:
    pinrel.set_num_threads(2)
    hasher = FeatureHasher()
    inputs = [[f"{SCRIPTS[k]} {k} {i} {j}" for i in range(1500) for k in SCRIPTS] for j in range(2)]
    serial = [hasher.transform(t) for t in inputs]
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def work(j: int) -> None:
        try:
            for _ in range(3):
                results[j] = hasher.transform(inputs[j])
        except BaseException as e:  # re-raised below: an exception in a thread cannot fail a test
            errors.append(e)

    threads = [threading.Thread(target=work, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for j in range(2):
        assert np.array_equal(results[j].indptr, serial[j].indptr)
        assert np.array_equal(results[j].indices, serial[j].indices)
        assert np.array_equal(results[j].data, serial[j].data)


def test_ten_megabyte_text() -> None:
    hasher = FeatureHasher()
    big = ("word " * 2_000_000, "東京タワー👍🏽 " * 500_000)
    X = hasher.transform(list(big))
    assert X.shape[0] == 2
    assert X[0].nnz == len(reference_row("word word", hasher))
    assert np.linalg.norm(X[1].data) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_params_round_trip(config: dict[str, Any]) -> None:
    hasher = FeatureHasher(**config)
    params = hasher.get_params()
    assert set(params) == {"n_features", "word_ngrams", "char_ngrams", "seed", "signed", "norm", "lowercase"}
    again = FeatureHasher.from_params(params)
    assert again == hasher and hash(again) == hash(hasher)
    assert again.get_params() == params
    assert repr(again) == repr(hasher)
    for k, v in config.items():
        assert params[k] == (list(v) if isinstance(v, tuple) else v)
    texts = ["Red mug", "東京タワー"]
    assert (again.transform(texts) != hasher.transform(texts)).nnz == 0


def test_defaults() -> None:
    assert FeatureHasher().get_params() == {
        "n_features": 2**20,
        "word_ngrams": [1, 2],
        "char_ngrams": [3, 5],
        "seed": 0,
        "signed": True,
        "norm": "l2",
        "lowercase": True,
    }
    assert FeatureHasher(n_features=10).n_features == 10
    assert FeatureHasher() != FeatureHasher(seed=1)


def test_from_params_errors() -> None:
    expect_error(ValueError, "unknown", FeatureHasher.from_params, {"n_feature": 10})
    expect_error(TypeError, "params", FeatureHasher.from_params, [("n_features", 10)])
    expect_error(ValueError, "n_features", FeatureHasher.from_params, {"n_features": 0})


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragment"),
    [
        ({"n_features": 0}, ValueError, "n_features"),
        ({"n_features": -1}, ValueError, "n_features"),
        ({"n_features": 2**31}, ValueError, "n_features"),
        ({"n_features": 1.5}, TypeError, "n_features"),
        ({"n_features": float("nan")}, ValueError, "n_features"),
        ({"n_features": True}, TypeError, "n_features"),
        ({"word_ngrams": (0, 1)}, ValueError, "word_ngrams"),
        ({"word_ngrams": (2, 1)}, ValueError, "word_ngrams"),
        ({"word_ngrams": (1, 17)}, ValueError, "word_ngrams"),
        ({"word_ngrams": (1, 2, 3)}, ValueError, "word_ngrams"),
        ({"word_ngrams": (1, -2)}, ValueError, "word_ngrams[1]"),
        ({"word_ngrams": (1, 2.0)}, TypeError, "word_ngrams[1]"),
        ({"word_ngrams": "12"}, TypeError, "word_ngrams"),
        ({"char_ngrams": (3, float("nan"))}, ValueError, "char_ngrams[1]"),
        ({"word_ngrams": None, "char_ngrams": None}, ValueError, "word_ngrams"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**64}, ValueError, "seed"),
        ({"signed": 1}, TypeError, "signed"),
        ({"lowercase": "yes"}, TypeError, "lowercase"),
        ({"norm": "l3"}, ValueError, "norm"),
        ({"norm": 2}, TypeError, "norm"),
    ],
)
def test_hasher_rejects_bad_params(kwargs: dict[str, Any], exc: type[Exception], fragment: str) -> None:
    expect_error(exc, fragment, FeatureHasher, **kwargs)


@pytest.mark.parametrize(
    ("texts", "exc", "fragment"),
    [
        (None, TypeError, "texts"),
        ("a string", TypeError, "texts"),
        ([], ValueError, "texts"),
        ((), ValueError, "texts"),
        (["ok", None], TypeError, "texts[1]"),
        (["ok", "fine", 3], TypeError, "texts[2]"),
        (["ok", b"bytes"], TypeError, "texts[1]"),
        (["ok", "lone \ud800 surrogate"], ValueError, "texts[1]"),
        (iter(["a"]), TypeError, "texts"),
    ],
)
def test_transform_rejects_bad_texts(texts: Any, exc: type[Exception], fragment: str) -> None:
    expect_error(exc, fragment, FeatureHasher().transform, texts)


def test_feature_index_errors() -> None:
    hasher = FeatureHasher()
    expect_error(ValueError, "kind", hasher.feature_index, "bigram", "x")
    expect_error(TypeError, "token", hasher.feature_index, "word", None)
    expect_error(ValueError, "token", hasher.feature_index, "word", "\udc80")


# ---------------------------------------------------------------------------------------------
# Match features
# ---------------------------------------------------------------------------------------------


def bm25_tf(tf: float, dl: float, k1: float = 1.2, b: float = 0.75, avgdl: float = 64.0) -> float:
    return tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))


def test_match_feature_names() -> None:
    assert pinrel.MATCH_FEATURE_NAMES == (
        "word_overlap",
        "word_overlap_item",
        "char3_jaccard",
        "bm25",
        "phrase_match",
        "bigram_overlap",
        "first_match_pos",
        "log_query_words",
        "log_item_words",
        "query_coverage_chars",
    )


@pytest.mark.parametrize(
    ("query", "text", "expected"),
    [
        # Identical two-word texts: everything matches; bm25 averages tf=1, dl=2 over both terms.
        ("red shoes", "Red shoes", [1, 1, 1, bm25_tf(1, 2), 1, 1, 1, math.log(3), math.log(3), 1]),
        # q unique {blue, shoes}; item {shoes} x3. Trigrams: q has <bl blu lue ue> plus the 5 of
        # <shoes>, the item only those 5, so 5/9. Coverage counts graphemes: shoes 5 of 4 + 5.
        (
            "blue shoes",
            "shoes shoes shoes",
            [0.5, 1, 5 / 9, bm25_tf(3, 3) / 2, 0, 0, 1, math.log(3), math.log(4), 5 / 9],
        ),
        # All query words occur but not as a phrase; "new york" is one of the two query bigrams; the
        # first shared word is the item's second (position 1) -> 1 / 2.
        (
            "new york pizza",
            "best pizza in new york",
            [1, 3 / 5, None, None, 0, 0.5, 0.5, math.log(4), math.log(6), 1],
        ),
        # Han ideographs are one token each, so the query is the item's first two words.
        ("東京", "東京タワー", [1, 2 / 3, None, None, 1, 1, 1, math.log(3), math.log(4), 1]),
        # No query words at all: every query-based feature is 0, only the item length remains.
        ("!!!", "some item", [0, 0, 0, 0, 0, 0, 0, 0, math.log(3), 0]),
    ],
)
def test_transform_pairs_hand_checked(query: str, text: str, expected: list[float | None]) -> None:
    (row,) = FeatureHasher().transform_pairs([query], [text])
    assert row.dtype == np.float32
    for name, got, want in zip(pinrel.MATCH_FEATURE_NAMES, row, expected, strict=True):
        if want is not None:
            assert got == pytest.approx(want, abs=1e-6), name


def test_transform_pairs_shape_and_case() -> None:
    hasher = FeatureHasher()
    queries = [*SCRIPTS.values(), "Shoe"]
    out = hasher.transform_pairs(queries, [*reversed(SCRIPTS.values()), "shoe"])
    assert out.shape == (len(queries), 10)
    assert np.isfinite(out).all()
    assert out[-1, 0] == 1.0
    assert FeatureHasher(lowercase=False).transform_pairs(["Shoe"], ["shoe"])[0, 0] == 0.0
    same = hasher.transform_pairs(list(SCRIPTS.values()), list(SCRIPTS.values()))
    assert (same[:, 0] == 1).all() and (same[:, 4] == 1).all()


def test_transform_pairs_errors() -> None:
    hasher = FeatureHasher()
    expect_error(ValueError, "queries", hasher.transform_pairs, ["a"], ["a", "b"])
    expect_error(ValueError, "queries", hasher.transform_pairs, [], [])
    expect_error(TypeError, "texts[0]", hasher.transform_pairs, ["a"], [None])
    expect_error(ValueError, "queries[1]", hasher.transform_pairs, ["a", "\ud800"], ["a", "b"])
    expect_error(TypeError, "texts", hasher.transform_pairs, ["a"], "a")
