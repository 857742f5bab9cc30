"""Property tests on random Unicode: invariants of assembly, hashing and batching, and no panics.

A Rust panic reaches Python as `pyo3_runtime.PanicException`, a BaseException; every call below goes
through `call`, which lets only TypeError/ValueError out and turns anything else into a failure.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pinrel
from pinrel import AssemblySpec, FeatureHasher, _native

from .test_features import reference_row, row_dict

T = TypeVar("T")

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# Private-use markers never occur in the generated text (category Co is excluded below) and NFKC never
# produces them, so they delimit the fields of an assembled text unambiguously.
FIELDS = ("title", "description", "captions", "boards", "queries", "link_title", "link_description")
LABELS = {f: f"\ue000{i}\ue001" for i, f in enumerate(FIELDS)}
SEP, LIST_SEP = "\ue002", "\ue003"
LIST_FIELDS = {"captions", "boards", "queries"}

# Any scalar value but surrogates and private use. `&#` is kept out of field text because a numeric
# character reference could decode into one of the markers.
unicode_text = st.text(st.characters(exclude_categories=("Cs", "Co")), max_size=80).filter(
    lambda s: "&#" not in s
)
# Text biased towards the hard cases: combining marks, ZWJ sequences, flags, skin tones, Indic and
# Thai clusters, CR LF, markup and entities.
PIECES = [
    "e\u0301",
    "\u0301",
    "👨\u200d👩\u200d👧\u200d👦",
    "🇯🇵",
    "🇫",
    "👍🏽",
    "🏿",
    "\u200d",
    "नमस्ते",
    "क्ष",
    "สวัสดี",
    "ำ",
    "\r\n",
    "한국",
    "ᄀ",
    "ᅡ",
    "東京",
    "שלום",
    "مرحبا",
    "ΟΔΟΣ",
    "ﬁ",
    "Ａ",
    " ",
    "\t",
    "\u00a0",
    "<b>",
    "</p>",
    "&amp;",
    "&nbsp;",
    "<script>x</script>",
    "a",
    "Z",
    "1",
    "\u0000",
    "\u200b",
    "\u202e",
    "\ufeff",
    "\u00ad",
]
tricky_text = st.lists(st.sampled_from(PIECES) | unicode_text, max_size=12).map("".join)
field_text = unicode_text | tricky_text


def is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Result of `fn`, or None where it raised TypeError/ValueError; a panic or anything else fails."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    except BaseException as e:
        assert not is_panic(e), f"Rust panic: {e}"
        raise


def boundaries(s: str) -> set[int]:
    """Code point offsets of extended grapheme cluster boundaries (regex's \\X approximates UAX #29)."""
    return {0} | {m.end() for m in regex.finditer(r"\X", s)}


def cleaned_list(entries: list[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for e in entries:
        c = pinrel.clean_text(e)
        if c and c.lower() not in seen:
            seen.add(c.lower())
            out.append(c)
    return out


items_strategy = st.fixed_dictionaries(
    {},
    optional={
        "title": st.none() | field_text,
        "description": field_text,
        "captions": st.lists(field_text, max_size=4),
        "boards": st.lists(field_text, max_size=4),
        "queries": st.lists(field_text, max_size=3),
        "link_title": field_text,
        "link_description": field_text,
    },
)


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    before = pinrel.get_num_threads()
    yield
    pinrel.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    items=st.lists(items_strategy, min_size=1, max_size=4),
    max_chars=st.integers(1, 200),
    caps=st.dictionaries(st.sampled_from(FIELDS), st.integers(1, 60), max_size=3),
)
def test_assemble_budget_prefixes_and_whole_graphemes(
    items: list[dict[str, Any]], max_chars: int, caps: dict[str, int]
) -> None:
    spec = AssemblySpec(
        labels=LABELS, separator=SEP, list_separator=LIST_SEP, max_chars=max_chars, field_max_chars=caps
    )
    out = call(pinrel.assemble, items, spec)
    assert out is not None
    assert len(out) == len(items)
    for item, text in zip(items, out, strict=True):
        assert len(text) <= max_chars  # code points
        full: dict[str, str] = {}
        for f in FIELDS:
            value = item.get(f)
            if f in LIST_FIELDS:
                full[f] = LIST_SEP.join(cleaned_list(value or []))
            else:
                full[f] = pinrel.clean_text(value) if value else ""
        seen_order: list[int] = []
        for segment in text.split(SEP) if text else []:
            m = regex.fullmatch(r"\ue000(\d)\ue001(.*)", segment, flags=regex.DOTALL)
            assert m, segment
            index, content = int(m.group(1)), m.group(2)
            field = FIELDS[index]
            seen_order.append(index)
            whole = full[field]
            assert content, field
            assert whole.startswith(content), (field, content, whole)
            assert len(content) in boundaries(whole), (field, content, whole)
            assert len(content) <= caps.get(field, 10**9)
            if len(content) < len(whole):
                assert not content[-1].isspace()
                assert not content.endswith(LIST_SEP)
        assert seen_order == sorted(set(seen_order)), "fields out of order or repeated"
        # When every field fits whole, nothing may be cut or dropped.
        present = [f for f in FIELDS if full[f]]
        wants = sum(min(len(full[f]), caps.get(f, 10**9)) for f in present)
        overhead = sum(len(LABELS[f]) for f in present) + max(len(present) - 1, 0) * len(SEP)
        if wants + overhead <= max_chars and all(len(full[f]) <= caps.get(f, 10**9) for f in present):
            assert text == SEP.join(LABELS[f] + full[f] for f in present)


@SETTINGS
@given(st.lists(items_strategy, min_size=1, max_size=3), st.integers(1, 64), st.lists(field_text, max_size=3))
def test_assemble_pairs_budget(items: list[dict[str, Any]], max_query_chars: int, queries: list[str]) -> None:
    spec = AssemblySpec(max_chars=50, max_query_chars=max_query_chars)
    queries = (queries + ["q"] * len(items))[: len(items)]
    out = call(pinrel.assemble_pairs, queries, items, spec)
    assert out is not None
    for q, item, pair in zip(queries, items, out, strict=True):
        prefix, sep, _ = pair.partition(" [SEP] ")
        assert sep and prefix.startswith("query: ")
        query = prefix[len("query: ") :]
        assert len(query) <= max_query_chars
        assert pinrel.clean_text(q).startswith(query)
        assert len(query) in boundaries(pinrel.clean_text(q))
        (alone,) = pinrel.assemble([item], spec)
        assert pair.endswith(" [SEP] " + alone)


@SETTINGS
@given(field_text)
def test_clean_text_output_is_one_normalized_line(text: str) -> None:
    out = pinrel.clean_text(text)
    assert out == out.strip(" ")
    assert "  " not in out
    assert not any(c.isspace() and c != " " for c in out)
    assert not any(unicodedata.category(c) == "Cc" for c in out)
    assert "\u200b" not in out and "\ufeff" not in out
    assert unicodedata.is_normalized("NFKC", out) or not out.isascii()


@SETTINGS
@given(st.text(st.characters(max_codepoint=0x7F, exclude_characters="<&"), max_size=200))
def test_clean_text_of_plain_ascii(text: str) -> None:
    # Without markup or entities, cleaning ASCII only drops control characters and collapses
    # whitespace (including the information separators U+001C..U+001F, as str.split does).
    kept = "".join(c for c in text if c.isspace() or c.isprintable())
    assert pinrel.clean_text(text) == " ".join(kept.split())


# Values a caller might wrongly put anywhere: every one must give TypeError/ValueError or work.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(categories=["Cs", "Ll", "Zs"]), max_size=5),
    st.binary(max_size=4),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@SETTINGS
@given(
    st.one_of(
        junk, st.lists(st.dictionaries(st.sampled_from([*FIELDS, "lang", "x"]), junk, max_size=4), max_size=3)
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "max_chars",
                "max_query_chars",
                "separator",
                "fields",
                "labels",
                "field_max_chars",
                "include_lang",
            ]
        ),
        junk,
        max_size=2,
    ),
)
def test_bad_assemble_input_never_panics(items: Any, spec_kwargs: dict[str, Any]) -> None:
    spec = call(AssemblySpec, **spec_kwargs)
    call(pinrel.assemble, items, spec)
    call(pinrel.assemble_pairs, ["q"] * (len(items) if isinstance(items, list) else 1), items, spec)
    call(pinrel.clean_text, items)


# ---------------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------------

ngram_range = st.none() | st.tuples(st.integers(1, 4), st.integers(0, 3)).map(lambda t: (t[0], t[0] + t[1]))
hasher_params = st.fixed_dictionaries(
    {
        "n_features": st.sampled_from([1, 7, 1000, 2**10, 2**20, 2**31 - 1]),
        "word_ngrams": ngram_range,
        "char_ngrams": ngram_range,
        "seed": st.integers(0, 2**64 - 1),
        "signed": st.booleans(),
        "norm": st.sampled_from(["l2", "l1", None]),
        "lowercase": st.booleans(),
    }
).filter(lambda p: p["word_ngrams"] is not None or p["char_ngrams"] is not None)


@SETTINGS
@given(hasher_params, st.lists(field_text, min_size=1, max_size=6))
def test_hashing_invariants(params: dict[str, Any], texts: list[str]) -> None:
    hasher = FeatureHasher(**params)
    assert FeatureHasher.from_params(hasher.get_params()) == hasher
    pinrel.set_num_threads(1)
    X = hasher.transform(texts)
    pinrel.set_num_threads(2)
    Y = hasher.transform(texts)
    assert np.array_equal(X.indptr, Y.indptr)
    assert np.array_equal(X.indices, Y.indices)
    assert np.array_equal(X.data, Y.data)
    assert X.shape == (len(texts), params["n_features"])
    assert ((X.indices >= 0) & (X.indices < params["n_features"])).all()
    assert np.isfinite(X.data).all() and (X.data != 0).all()
    for r in range(len(texts)):
        a, b = X.indptr[r], X.indptr[r + 1]
        row = X.data[a:b]
        assert (np.diff(X.indices[a:b]) > 0).all(), "indices sorted and unique"
        if b > a and params["norm"] == "l2":
            assert np.linalg.norm(row.astype(np.float64)) == pytest.approx(1.0, abs=1e-5)
        if b > a and params["norm"] == "l1":
            assert np.abs(row.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)
        if not params["signed"]:
            assert (row > 0).all()
    M = hasher.transform_pairs(texts, texts[::-1])
    assert M.shape == (len(texts), len(pinrel.MATCH_FEATURE_NAMES)) and np.isfinite(M).all()


@SETTINGS
@given(
    hasher_params,
    st.lists(
        st.sampled_from(PIECES) | st.text(st.characters(max_codepoint=0x17F), max_size=10), max_size=10
    ).map("".join),
)
def test_transform_equals_gram_by_gram_definition(params: dict[str, Any], text: str) -> None:
    hasher = FeatureHasher(**params)
    got = row_dict(hasher.transform([text]), 0)
    want = reference_row(text, hasher)
    assert got.keys() == want.keys()
    for c, v in want.items():
        assert got[c] == pytest.approx(v, abs=1e-5)


@SETTINGS
@given(st.lists(st.one_of(junk, field_text), min_size=0, max_size=4), junk)
def test_bad_hasher_input_never_panics(texts: list[Any], param: Any) -> None:
    hasher = FeatureHasher()
    call(hasher.transform, texts)
    call(hasher.transform_pairs, texts, texts)
    call(hasher.feature_index, "word", param)
    call(_native.words, param)
    for key in ("n_features", "seed", "word_ngrams", "char_ngrams", "norm", "signed"):
        call(FeatureHasher, **{key: param})


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    st.lists(st.integers(0, 600), min_size=1, max_size=300),
    st.integers(0, 5000),
    st.integers(1, 80),
)
def test_bucket_batches_cover_every_index_once_within_budget(
    lengths: list[int], extra_tokens: int, max_batch_size: int
) -> None:
    max_tokens = max(max(lengths), 1) + extra_tokens
    batches = pinrel.bucket_batches(lengths, max_tokens, max_batch_size)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= len(b) <= max_batch_size
        assert max(lengths[i] for i in b) * len(b) <= max_tokens
    # Longest first, and the same batches from numpy input of either dtype.
    assert max(lengths[i] for i in batches[0]) == max(lengths)
    for dtype in (np.int64, np.float64):
        again = pinrel.bucket_batches(np.array(lengths, dtype=dtype), max_tokens, max_batch_size)
        assert [a.tolist() for a in again] == [b.tolist() for b in batches]
    waste = pinrel.padding_waste(lengths, batches)
    assert 0.0 <= waste < 1.0


@SETTINGS
@given(st.lists(st.one_of(junk, st.integers(-5, 600)), max_size=6), junk, junk)
def test_bad_batching_input_never_panics(lengths: list[Any], max_tokens: Any, max_batch_size: Any) -> None:
    call(pinrel.bucket_batches, lengths, max_tokens, max_batch_size)
    call(pinrel.bucket_batches, lengths, 512)
    call(pinrel.padding_waste, lengths, [lengths])
    call(pinrel.pad, [lengths], pad_id=max_tokens)
    call(pinrel.set_num_threads, max_tokens)
    assert pinrel.get_num_threads() >= 1
    with np.errstate(all="ignore"):
        floats = np.array([x if isinstance(x, float) else 1.0 for x in lengths] or [1.0], dtype=np.float64)
    call(pinrel.bucket_batches, floats, 512)


@SETTINGS
@given(
    st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20), min_size=1, max_size=20),
    st.integers(-5, 5),
)
def test_pad_layout(rows: list[list[int]], pad_id: int) -> None:
    ids, mask = pinrel.pad(rows, pad_id=pad_id)
    width = max(max(len(r) for r in rows), 1)
    assert ids.shape == mask.shape == (len(rows), width)
    assert ids.dtype == mask.dtype == np.int64
    for i, r in enumerate(rows):
        assert ids[i, : len(r)].tolist() == r
        assert (ids[i, len(r) :] == pad_id).all()
        assert mask[i].tolist() == [1] * len(r) + [0] * (width - len(r))
