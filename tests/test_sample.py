"""pinrel.datasets.sample: the embedded multilingual sample dataset."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinrel.datasets import sample
from pinrel.records import (
    ITEM_FIELDS,
    ITEM_TEXT_FIELDS,
    LIST_FIELDS,
    num_grades,
    query_key,
    read_records,
    validate_records,
)

PAIR_FILES = ("train", "dev", "test", "unlabeled")

# Unicode blocks of the scripts the sample promises.
SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "Latin": ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F)),
    "Greek": ((0x370, 0x3FF),),
    "Cyrillic": ((0x400, 0x4FF),),
    "Arabic": ((0x600, 0x6FF),),
    "Devanagari": ((0x900, 0x97F),),
    "Thai": ((0xE00, 0xE7F),),
    "Kana": ((0x3040, 0x30FF),),
    "Han": ((0x4E00, 0x9FFF),),
}


def scripts_of(text: str) -> set[str]:
    found = set()
    for ch in text:
        cp = ord(ch)
        for name, ranges in SCRIPTS.items():
            if any(lo <= cp <= hi for lo, hi in ranges):
                found.add(name)
    return found


@pytest.fixture(scope="module")
def default_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], float]:
    out = tmp_path_factory.mktemp("sample")
    start = time.perf_counter()
    manifest = sample.generate(out)
    return out, manifest, time.perf_counter() - start


def test_files_sizes_and_speed(default_sample: tuple[Path, dict[str, Any], float]) -> None:
    out, manifest, seconds = default_sample
    assert seconds < 10, f"generation took {seconds:.1f}s"
    for name in sample.FILES:
        assert (out / name).is_file(), name
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert "pinrel sample dataset" in (out / "README.md").read_text(encoding="utf-8")
    files = manifest["files"]
    assert files["catalog.parquet"]["rows"] == 2000
    labeled = sum(files[f"{s}.parquet"]["rows"] for s in ("train", "dev", "test"))
    assert labeled == 3000
    assert files["unlabeled.parquet"]["rows"] == 30000
    assert files["unlabeled.parquet"]["rows"] >= 9 * labeled


def test_pair_files_are_valid_records(default_sample: tuple[Path, dict[str, Any], float]) -> None:
    out, _, _ = default_sample
    for split in PAIR_FILES:
        t = read_records(out / f"{split}.parquet")
        assert num_grades(t) == 5
        validate_records(t, require_labels=split != "unlabeled")
        if split == "unlabeled":
            assert t.column("label").null_count == t.num_rows


def test_catalog_fields_all_filled(default_sample: tuple[Path, dict[str, Any], float]) -> None:
    out, _, _ = default_sample
    catalog = pq.read_table(out / "catalog.parquet")
    assert catalog.column_names == ["item_id", *ITEM_FIELDS]
    ids = catalog.column("item_id").to_pylist()
    assert len(set(ids)) == len(ids)
    for row in catalog.to_pylist():
        for field in ITEM_FIELDS:
            value = row[field]
            assert value, (row["item_id"], field)
            if field in LIST_FIELDS:
                assert all(isinstance(v, str) and v for v in value)


def test_languages_and_scripts(default_sample: tuple[Path, dict[str, Any], float]) -> None:
    out, _, _ = default_sample
    catalog = pq.read_table(out / "catalog.parquet")
    langs = Counter(catalog.column("lang").to_pylist())
    assert len(langs) >= 8
    assert min(langs.values()) >= 50  # every language has a real share of the catalog
    scripts: set[str] = set()
    for title in catalog.column("title").to_pylist():
        scripts |= scripts_of(title)
    assert len(scripts) >= 6
    assert {"Latin", "Cyrillic", "Greek", "Arabic", "Devanagari", "Thai", "Han", "Kana"} <= scripts
    # Each language writes in its own script.
    expected = {
        "ru": "Cyrillic",
        "el": "Greek",
        "ar": "Arabic",
        "hi": "Devanagari",
        "th": "Thai",
        "zh": "Han",
    }
    for row in catalog.slice(0, 500).to_pylist():
        script = expected.get(row["lang"])
        if script:
            assert script in scripts_of(row["description"]), row
    queries = pq.read_table(out / "queries.parquet")
    assert len(set(queries.column("lang").to_pylist())) >= 8


def test_splits_are_query_disjoint(default_sample: tuple[Path, dict[str, Any], float]) -> None:
    out, _, _ = default_sample
    keys = {
        s: {query_key(q) for q in read_records(out / f"{s}.parquet").column("query").to_pylist()}
        for s in PAIR_FILES
    }
    assert not keys["train"] & keys["dev"]
    assert not keys["train"] & keys["test"]
    assert not keys["dev"] & keys["test"]
    # Unlabeled pairs never touch a dev or test query.
    assert not keys["unlabeled"] & (keys["dev"] | keys["test"])
    assert keys["unlabeled"] & keys["train"]
    queries = pq.read_table(out / "queries.parquet").to_pylist()
    texts = [q["query"] for q in queries]
    assert len(set(texts)) == len(texts)
    by_split = Counter(q["split"] for q in queries)
    assert set(by_split) == {"train", "dev", "test", "unlabeled"}
    for s in ("train", "dev", "test"):
        assert {query_key(q["query"]) for q in queries if q["split"] == s} == keys[s]


def test_labels_cover_all_grades_and_are_learnable(
    default_sample: tuple[Path, dict[str, Any], float],
) -> None:
    out, manifest, _ = default_sample
    train = read_records(out / "train.parquet")
    counts = Counter(train.column("label").to_pylist())
    assert set(counts) == {1, 2, 3, 4, 5}
    assert all(counts[g] >= 50 for g in range(1, 6))
    assert manifest["files"]["train.parquet"]["label_counts"] == {str(g): counts[g] for g in range(1, 6)}
    # A crude lexical signal (the query is one of the item's engaged queries or in its title) must
    # already separate the grades: the data is learnable.
    hit, miss = [], []
    for row in train.to_pylist():
        text = row["query"]
        matched = text in row["queries"] or text in row["title"].lower()
        (hit if matched else miss).append(row["label"])
    assert hit and miss
    assert sum(hit) / len(hit) > sum(miss) / len(miss) + 1.0
    # ...but noisy: even exact matches are sometimes graded down.
    assert 0.02 < sum(g < 5 for g in hit) / len(hit) < 0.5


def test_cross_lingual_pairs_are_a_minority(default_sample: tuple[Path, dict[str, Any], float]) -> None:
    out, _, _ = default_sample
    catalog = pq.read_table(out / "catalog.parquet")
    item_lang = dict(
        zip(catalog.column("item_id").to_pylist(), catalog.column("lang").to_pylist(), strict=True)
    )
    train = read_records(out / "train.parquet")
    langs = zip(train.column("lang").to_pylist(), train.column("item_id").to_pylist(), strict=True)
    cross = sum(item_lang[item] != lang for lang, item in langs)
    assert 0.05 * train.num_rows < cross < 0.5 * train.num_rows


def test_deterministic(tmp_path: Path) -> None:
    sizes = {"n_items": 200, "n_queries": 30, "n_labeled": 200, "n_unlabeled": 1000}
    sample.generate(tmp_path / "a", seed=7, **sizes)
    sample.generate(tmp_path / "b", seed=7, **sizes)
    sample.generate(tmp_path / "c", seed=8, **sizes)
    for name in sample.FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a = pq.read_table(tmp_path / "a" / "train.parquet")
    c = pq.read_table(tmp_path / "c" / "train.parquet")
    assert a.to_pylist() != c.to_pylist()


def test_ensure_reuses_or_regenerates(tmp_path: Path) -> None:
    sizes = {"n_items": 100, "n_queries": 12, "n_labeled": 60, "n_unlabeled": 300}
    first = sample.ensure(tmp_path, seed=1, **sizes)
    stamp = (tmp_path / "train.parquet").stat().st_mtime_ns
    assert sample.ensure(tmp_path, seed=1, **sizes) == first
    assert (tmp_path / "train.parquet").stat().st_mtime_ns == stamp
    second = sample.ensure(tmp_path, seed=2, **sizes)
    assert second["params"]["seed"] == 2
    with pytest.raises(TypeError, match="unknown size"):
        sample.ensure(tmp_path, n_things=3)


def test_size_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_queries: expected an integer from 3 to"):
        sample.generate(tmp_path, n_queries=2)
    with pytest.raises(ValueError, match="n_labeled: expected an integer from 30 to"):
        sample.generate(tmp_path, n_queries=30, n_labeled=10)
    with pytest.raises(ValueError, match="n_items: expected an integer"):
        sample.generate(tmp_path, n_items=1.5)  # type: ignore[arg-type]
    # Sizes that ran for hours, or promised pairs that cannot exist, are refused before any work.
    with pytest.raises(ValueError, match="n_items: expected an integer from 1 to 1000000, got 1000000000000"):
        sample.generate(tmp_path, n_items=10**12)
    with pytest.raises(
        ValueError, match="3 queries x 5 items make at most 15 distinct pairs, fewer than 1000"
    ):
        sample.generate(tmp_path, n_items=5, n_queries=3, n_labeled=1000, n_unlabeled=0)
    assert not any(tmp_path.iterdir())


def test_vocabulary_complete() -> None:
    tables: list[dict[str, str]] = [
        *(nouns for _, _, nouns in sample.CATEGORIES.values()),
        *sample.COLORS.values(),
        *sample.MATERIALS.values(),
    ]
    for table in tables:
        assert set(sample.LANGS) <= set(table)
    for _, materials, _ in sample.CATEGORIES.values():
        assert set(materials) <= set(sample.MATERIALS)
    for forms in sample.COLORS.values():
        for lang, text in forms.items():
            genders = {"de": 3, "ru": 3, "el": 3, "fr": 2, "es": 2, "ar": 2, "hi": 2}.get(lang, 1)
            assert len(text.split("|")) == genders, (lang, text)


@pytest.mark.parametrize(
    ("lang", "category", "color", "material", "expected"),
    [
        ("en", "lamp", "red", "wood", "red wooden lamp"),
        ("de", "chair", "red", "wood", "roter Stuhl aus Holz"),
        ("de", "cushion", "blue", None, "blaues Kissen"),
        ("fr", "chair", "white", "wood", "chaise blanche en bois"),
        ("es", "backpack", "black", "leather", "mochila negra de cuero"),
        ("ru", "lamp", "red", "wood", "красная лампа из дерева"),
        ("el", "mug", "red", "ceramic", "κόκκινη κούπα από κεραμικό"),
        ("ar", "lamp", "red", "wood", "مصباح أحمر من الخشب"),
        ("hi", "chair", "blue", "wood", "लकड़ी की नीली कुर्सी"),
        ("ja", "lamp", "red", "wood", "赤い木製ランプ"),
        ("zh", "lamp", "red", "wood", "红色木质台灯"),
        ("th", "lamp", "red", "wood", "โคมไฟไม้สีแดง"),
        ("en", "vase", None, None, "vase"),
    ],
)
def test_phrase_grammar(
    lang: str, category: str, color: str | None, material: str | None, expected: str
) -> None:
    assert sample.phrase(lang, category, color, material) == expected


def test_items_feed_assemble_shape(default_sample: tuple[Path, dict[str, Any], float]) -> None:
    # The pair files carry every item field, so pinrel.assemble can read them directly.
    out, _, _ = default_sample
    t = read_records(out / "dev.parquet")
    assert isinstance(t, pa.Table)
    assert all(t.column(f).null_count == 0 for f in ITEM_TEXT_FIELDS)
