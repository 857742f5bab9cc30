"""pinrel.records: the record schema, its three file formats, mapping, binning, splits and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pinrel.records.checks as records_checks
from pinrel.records import (
    GRADES_KEY,
    ITEM_FIELDS,
    ITEM_TEXT_FIELDS,
    SCHEMA,
    RecordsError,
    RecordsFileNotFoundError,
    bin_labels,
    detect_format,
    equal_width_edges,
    item_columns,
    items_of,
    make_records,
    num_grades,
    parse_label_bins,
    parse_mapping,
    query_key,
    read_records,
    records_digest,
    split_by_query,
    text_id,
    validate_records,
    with_grades,
    write_records,
)

ROWS = [
    {
        "query": "red mug",
        "title": 'Red "Morning" Mug, 350 ml',
        "description": "Line one\nline two, with a comma",
        "captions": ["a red mug on a table", 'quote " and, comma'],
        "boards": ["kitchen ideas"],
        "queries": ["mug", "red mug"],
        "link_title": "Shop | Mugs",
        "link_description": "Free shipping",
        "lang": "en",
        "query_id": "q1",
        "item_id": "i1",
        "label": 5,
    },
    {
        "query": "красная кружка",
        "title": "Кружка",
        "description": "",
        "captions": [],
        "boards": [],
        "queries": [],
        "link_title": "",
        "link_description": "",
        "lang": "ru",
        "query_id": "q2",
        "item_id": "i2",
        "label": None,
    },
    {
        "query": "赤いマグカップ",
        "title": "赤いセラミックマグカップ",
        "description": "<p>HTML stays &amp; raw</p>",
        "captions": ["[not json] but a caption"],
        "boards": ["キッチン"],
        "queries": ["マグカップ"],
        "link_title": "",
        "link_description": "",
        "lang": None,
        "query_id": None,
        "item_id": None,
        "label": 1,
    },
]


@pytest.fixture
def table() -> pa.Table:
    return make_records(ROWS, grades=5)


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("window", [1, 2, 65_536])
def test_records_digest_is_about_content(
    tmp_path: Path, table: pa.Table, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small hashing windows make batches cross the source's chunk boundaries.
    monkeypatch.setattr(records_checks, "_DIGEST_ROWS", window)
    digest = records_digest(table)
    assert len(digest) == 64
    # The same rows read back, rechunked or with other schema metadata: the same digest.
    write_records(table, tmp_path / "r.parquet")
    assert records_digest(read_records(tmp_path / "r.parquet")) == digest
    assert records_digest(pa.concat_tables([table.slice(0, 1), table.slice(1)])) == digest
    assert records_digest(table.replace_schema_metadata({GRADES_KEY: "9"})) == digest
    # A slice (offsets into its parent's buffers) digests like the same rows built afresh.
    assert records_digest(table.slice(1)) == records_digest(make_records(ROWS[1:]))
    # Any change in a row, the row order or the weights: another digest.
    weighted = make_records([{**r, "weight": 2.0} if r["query"] == "red mug" else r for r in ROWS])
    others = [
        table.slice(1),
        table.take([1, 0, 2]),
        weighted,
        make_records([*ROWS[:2], {**ROWS[2], "label": 2}]),
    ]
    assert len({digest, *(records_digest(t) for t in others)}) == 1 + len(others)
    with pytest.raises(RecordsError, match="lacks field"):
        records_digest(table.drop_columns(["title"]))
    with pytest.raises(TypeError, match=r"pyarrow\.Table"):
        records_digest(ROWS)  # type: ignore[arg-type]


@pytest.mark.parametrize("ext", ["parquet", "csv", "tsv", "jsonl"])
def test_round_trip(tmp_path: Path, table: pa.Table, ext: str) -> None:
    path = write_records(table, tmp_path / f"pairs.{ext}")
    back = read_records(path, grades=5)
    assert back.schema.remove_metadata().equals(SCHEMA)
    assert back.to_pylist() == table.to_pylist()
    assert num_grades(back) == 5


def test_parquet_keeps_grades_csv_does_not(tmp_path: Path, table: pa.Table) -> None:
    t4 = make_records([{"query": "q", "label": 4}], grades=4)
    assert num_grades(read_records(write_records(t4, tmp_path / "a.parquet"))) == 4
    assert num_grades(read_records(write_records(t4, tmp_path / "a.csv"))) is None
    # Without K, validation falls back to the default scale of 5 and records nothing.
    assert num_grades(read_records(write_records(table, tmp_path / "b.jsonl"))) is None


def test_csv_layout_lists_are_json(tmp_path: Path, table: pa.Table) -> None:
    path = write_records(table, tmp_path / "pairs.csv")
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(SCHEMA.names)
    assert '"[""mug"", ""red mug""]"' in text


def test_jsonl_layout(tmp_path: Path, table: pa.Table) -> None:
    path = write_records(table, tmp_path / "pairs.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[1])["query"] == "красная кружка"
    assert json.loads(lines[1])["label"] is None


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path, table: pa.Table) -> None:
    target = tmp_path / "out" / "pairs.parquet"
    write_records(table, target)
    before = target.read_bytes()
    bad = table.set_column(table.schema.get_field_index("label"), "label", pa.array([9, None, 1], pa.int32()))
    with pytest.raises(RecordsError, match=r"outside 1..5"):
        write_records(bad, target)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["pairs.parquet"]


text_st = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=text_st.filter(lambda s: s.strip() != ""),
    title=text_st,
    captions=st.lists(text_st, max_size=3),
    label=st.none() | st.integers(1, 5),
)
def test_round_trip_any_text(
    tmp_path: Path, query: str, title: str, captions: list[str], label: int | None
) -> None:
    t = make_records([{"query": query, "title": title, "captions": captions, "label": label}])
    for ext in ("csv", "jsonl", "parquet"):
        back = read_records(write_records(t, tmp_path / f"h.{ext}"))
        assert back.to_pylist() == t.to_pylist(), ext


# ----------------------------------------------------------------------------------- normalisation


def test_missing_fields_get_defaults() -> None:
    t = make_records([{"query": "lamp"}])
    row = t.to_pylist()[0]
    assert row["title"] == "" and row["captions"] == [] and row["label"] is None
    assert row["lang"] is None and row["item_id"] is None


def test_csv_list_cells_plain_text_and_empty(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.csv", "query,captions,boards\nlamp,a lamp on a desk,\n")
    row = read_records(path).to_pylist()[0]
    assert row["captions"] == ["a lamp on a desk"]
    assert row["boards"] == []


def test_numeric_ids_become_text(tmp_path: Path) -> None:
    pq.write_table(pa.table({"query": ["a"], "item_id": [17], "query_id": [3]}), tmp_path / "n.parquet")
    row = read_records(tmp_path / "n.parquet").to_pylist()[0]
    assert (row["item_id"], row["query_id"]) == ("17", "3")


def test_float_integral_labels_accepted(tmp_path: Path) -> None:
    pq.write_table(pa.table({"query": ["a", "b"], "label": [3.0, None]}), tmp_path / "f.parquet")
    assert read_records(tmp_path / "f.parquet").column("label").to_pylist() == [3, None]


def test_make_records_inputs() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"query": ["a", "b"], "label": [1, 2]})
    assert make_records(df).column("label").to_pylist() == [1, 2]
    assert make_records({"query": ["a"], "title": ["t"]}).column("title").to_pylist() == ["t"]
    assert make_records(pa.table({"query": ["a"]})).num_rows == 1
    with pytest.raises(TypeError):
        make_records(42)


def test_grades_metadata_helpers(table: pa.Table) -> None:
    assert num_grades(table) == 5
    assert num_grades(with_grades(table, None)) is None
    assert table.schema.metadata[GRADES_KEY] == b"5"
    assert num_grades(with_grades(table, 7)) == 7
    with pytest.raises(RecordsError):
        with_grades(table, 1)
    with pytest.raises(TypeError):
        with_grades(table, 2.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- mapping


def test_mapping(tmp_path: Path) -> None:
    path = write_text(tmp_path / "m.csv", "search,name,grade,extra\nmug,Red mug,3,x\n")
    t = read_records(path, mapping={"search": "query", "name": "title", "grade": "label"}, grades=4)
    row = t.to_pylist()[0]
    assert (row["query"], row["title"], row["label"]) == ("mug", "Red mug", 3)
    assert num_grades(t) == 4


def test_parse_mapping() -> None:
    assert parse_mapping(["a=query", " b = title ", "c=d=description"]) == {
        "a": "query",
        "b": "title",
        "c=d": "description",
    }
    with pytest.raises(RecordsError, match=r"SOURCE_COLUMN=FIELD"):
        parse_mapping(["nonsense"])
    with pytest.raises(RecordsError, match=r"mapped twice"):
        parse_mapping(["a=query", "a=title"])


def test_mapping_errors(tmp_path: Path) -> None:
    path = write_text(tmp_path / "m.csv", "search,name,title\nmug,Red mug,x\n")
    with pytest.raises(RecordsError, match=r"mapping source column 'nope' is not in the data"):
        read_records(path, mapping={"nope": "query"})
    with pytest.raises(RecordsError, match=r"mapping target 'headline' .* is not a record field"):
        read_records(path, mapping={"search": "query", "name": "headline"})
    with pytest.raises(RecordsError, match=r"both mapped to 'query'"):
        read_records(path, mapping={"search": "query", "name": "query"})
    with pytest.raises(RecordsError, match=r"column 'title' exists"):
        read_records(path, mapping={"search": "query", "name": "title"})
    with pytest.raises(TypeError):
        read_records(path, mapping=[("search", "query")])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- binning


def test_bin_labels_edges_and_boundaries() -> None:
    edges = [0, 1, 2, 3, 4, 5]
    got = bin_labels([0.0, 0.99, 1.0, 2.5, 3.999, 4.0, 5.0], edges)
    assert got.tolist() == [1, 1, 2, 3, 4, 5, 5]
    assert got.dtype == np.int32
    with pytest.raises(RecordsError, match=r"outside the bin range"):
        bin_labels([5.01], edges)
    with pytest.raises(RecordsError, match=r"outside the bin range"):
        bin_labels([-0.1], edges)
    with pytest.raises(RecordsError, match=r"NaN"):
        bin_labels([math.nan], edges)
    with pytest.raises(RecordsError, match=r"strictly increasing"):
        bin_labels([1.0], [0, 2, 1])
    with pytest.raises(RecordsError, match=r"at least 3"):
        bin_labels([1.0], [0, 1])


def test_equal_width_and_parse_bins() -> None:
    assert equal_width_edges(0, 1, 4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_label_bins("0:5") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert parse_label_bins("0:1", grades=2) == [0.0, 0.5, 1.0]
    assert parse_label_bins("0,0.5,1") == [0.0, 0.5, 1.0]
    with pytest.raises(RecordsError, match=r"bad label bins"):
        parse_label_bins("zero:five")
    with pytest.raises(RecordsError, match=r"make 2 grades but grades=3"):
        parse_label_bins("0,0.5,1", grades=3)


def test_read_with_label_bins(tmp_path: Path) -> None:
    path = write_text(tmp_path / "s.csv", "query,label\na,0.2\nb,2.5\nc,5.0\nd,\n")
    assert read_records(path, label_bins=[0, 1, 2, 3, 4, 5]).column("label").to_pylist() == [1, 3, 5, None]
    assert read_records(path, label_bins=(0, 5), grades=2).column("label").to_pylist() == [1, 2, 2, None]
    t = read_records(path, label_bins="0:5")
    assert num_grades(t) == 5
    with pytest.raises(RecordsError, match=r"line 2: label 0.2 is not an integer grade"):
        read_records(path)
    with pytest.raises(RecordsError, match=r"make 5 grades but grades=4"):
        read_records(path, label_bins=[0, 1, 2, 3, 4, 5], grades=4)
    with pytest.raises(RecordsError, match=r"outside the bin range \[0.0, 1.0\]"):
        read_records(path, label_bins=[0, 0.5, 1])


# ---------------------------------------------------------------------------------------------- splits


def _many(n_queries: int = 50, per: int = 3) -> pa.Table:
    rows = [
        {"query": f"query {q}", "title": f"item {q}-{j}", "label": 1 + (q + j) % 5}
        for q in range(n_queries)
        for j in range(per)
    ]
    return make_records(rows, grades=5)


def _queries(t: pa.Table) -> set[str]:
    return {query_key(q) for q in t.column("query").to_pylist()}


def test_split_disjoint_and_complete() -> None:
    t = _many()
    parts = split_by_query(t, (0.8, 0.1, 0.1), seed=3)
    assert [len(_queries(p)) for p in parts] == [40, 5, 5]
    assert sum(p.num_rows for p in parts) == t.num_rows
    for i in range(3):
        for j in range(i + 1, 3):
            assert not (_queries(parts[i]) & _queries(parts[j]))
    assert all(num_grades(p) == 5 for p in parts)


def test_split_groups_case_and_space_variants() -> None:
    t = make_records([{"query": "Red Mug"}, {"query": "red  mug"}, {"query": "lamp"}, {"query": "sofa"}])
    for seed in range(5):
        parts = split_by_query(t, (0.5, 0.5), seed=seed)
        keys = [{query_key(q) for q in p.column("query").to_pylist()} for p in parts]
        assert not (keys[0] & keys[1])


def test_split_deterministic_and_order_independent() -> None:
    t = _many()
    a = split_by_query(t, (0.7, 0.3), seed=11)
    b = split_by_query(t, (0.7, 0.3), seed=11)
    assert [p.to_pylist() for p in a] == [p.to_pylist() for p in b]
    shuffled = t.take(pa.array(np.random.default_rng(0).permutation(t.num_rows)))
    c = split_by_query(shuffled, (0.7, 0.3), seed=11)
    assert [_queries(p) for p in a] == [_queries(p) for p in c]
    d = split_by_query(t, (0.7, 0.3), seed=12)
    assert _queries(a[1]) != _queries(d[1])


def test_split_errors() -> None:
    t = _many(n_queries=2)
    with pytest.raises(RecordsError, match=r"sum to 1"):
        split_by_query(t, (0.5, 0.4))
    with pytest.raises(RecordsError, match=r"positive"):
        split_by_query(t, (1.2, -0.2))
    with pytest.raises(RecordsError, match=r"2 distinct queries into 3"):
        split_by_query(t, (0.4, 0.3, 0.3))
    with pytest.raises(TypeError):
        split_by_query(t.to_pylist(), (0.5, 0.5))  # type: ignore[arg-type]
    # Tiny fractions still get one query each.
    parts = split_by_query(_many(n_queries=10), (0.98, 0.01, 0.01))
    assert [len(_queries(p)) for p in parts] == [8, 1, 1]


# ------------------------------------------------------------------------------------------ items, ids


def test_items_of_and_item_columns(table: pa.Table) -> None:
    items = items_of(table)
    assert len(items) == 3
    assert set(items[0]) == set(ITEM_FIELDS) == {*ITEM_TEXT_FIELDS, "lang"}
    assert items[0]["captions"] == ROWS[0]["captions"]
    assert "item_id" in items_of(table, with_ids=True)[0]
    assert set(items_of(table, with_lang=False)[0]) == set(ITEM_TEXT_FIELDS)
    cols = item_columns(table)
    assert cols["title"] == [r["title"] for r in ROWS]


def test_text_id_and_query_key() -> None:
    assert query_key("  Red\tMUG ") == "red mug"
    assert text_id("Red Mug") == text_id("red  mug")
    assert text_id("red mug") != text_id("blue mug")
    assert text_id("x", prefix="item-").startswith("item-")
    # Not text: named, instead of unicodedata's "normalize() argument 2 must be str".
    for bad in (None, 7):
        with pytest.raises(TypeError, match="query: expected text, got"):
            query_key(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="query: expected text, got int 1"):
        split_by_query(pa.table({"query": [1, 2]}), (0.5, 0.5))


def test_bad_bins_and_values_are_named() -> None:
    with pytest.raises(RecordsError, match=r"values to bin must be numbers, got \['a'\]"):
        bin_labels(["a"], [0, 1, 2])
    with pytest.raises(RecordsError, match="grades must be >= 2"):
        parse_label_bins("0:5", grades=0)
    with pytest.raises(TypeError, match="label_bins: expected edges, a \\(lo, hi\\) pair or text, got 5"):
        make_records([{"query": "q", "title": "t", "label": 1.0}], label_bins=5)  # type: ignore[arg-type]


def test_detect_format() -> None:
    assert detect_format("a.PARQUET") == "parquet"
    assert detect_format("a.ndjson") == "jsonl"
    assert detect_format("a.txt", "csv") == "csv"
    with pytest.raises(RecordsError, match=r"cannot tell the format"):
        detect_format("a.txt")
    with pytest.raises(RecordsError, match=r"unknown records format 'xlsx'"):
        detect_format("a.csv", "xlsx")


# ------------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope.csv"):
        read_records(tmp_path / "nope.csv")
    with pytest.raises(RecordsFileNotFoundError):
        read_records(tmp_path / "nope.parquet")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(RecordsError, match=r"is a directory"):
        read_records(tmp_path / "d.csv")


@pytest.mark.parametrize("name", ["e.csv", "e.jsonl", "e.parquet", "e.tsv"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(RecordsError, match=r"empty"):
        read_records(tmp_path / name)


def test_blank_jsonl_is_empty(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match=r"empty"):
        read_records(write_text(tmp_path / "b.jsonl", "\n  \n"))


def test_header_only_csv_is_zero_records(tmp_path: Path) -> None:
    assert read_records(write_text(tmp_path / "h.csv", "query,title\n")).num_rows == 0


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match=r"cannot tell the format .*'.xlsx'"):
        read_records(write_text(tmp_path / "a.xlsx", "query\nx\n"))
    assert read_records(tmp_path / "a.xlsx", fmt="csv").num_rows == 1


def test_missing_query_column(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match=r"no 'query' column .*columns: q, title.*--map"):
        read_records(write_text(tmp_path / "a.csv", "q,title\nx,y\n"))


def test_missing_or_empty_query_value(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match=r"line 3: query is empty"):
        read_records(write_text(tmp_path / "a.csv", "query,title\nx,y\n  ,z\n"))
    with pytest.raises(RecordsError, match=r"line 2: query is missing"):
        read_records(write_text(tmp_path / "a.jsonl", '{"query": "x"}\n{"query": null}\n'))


def test_label_out_of_range(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.csv", "query,label\nx,2\ny,6\n")
    with pytest.raises(RecordsError, match=r"line 3: label 6 is outside 1..5"):
        read_records(path)
    assert read_records(path, grades=6).column("label").to_pylist() == [2, 6]
    with pytest.raises(RecordsError, match=r"outside 1..4"):
        read_records(path, grades=4)
    with pytest.raises(RecordsError, match=r"label 0 is outside"):
        read_records(write_text(tmp_path / "z.csv", "query,label\nx,0\n"))


def test_label_not_integer_or_not_number(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match=r"line 2: label 2.5 is not an integer grade"):
        read_records(write_text(tmp_path / "a.csv", "query,label\nx,2.5\n"))
    with pytest.raises(RecordsError, match=r"line 2: label 'good' is not a number"):
        read_records(write_text(tmp_path / "b.csv", "query,label\nx,good\n"))
    with pytest.raises(RecordsError, match=r"label should be a number, got bool"):
        read_records(write_text(tmp_path / "c.jsonl", '{"query": "x", "label": true}\n'))


def test_nan_labels(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match=r"line 3: label is NaN"):
        read_records(write_text(tmp_path / "a.csv", "query,label\nx,1\ny,nan\n"))
    with pytest.raises(RecordsError, match=r"line 1: label is NaN"):
        read_records(write_text(tmp_path / "a.jsonl", '{"query": "x", "label": NaN}\n'))
    pq.write_table(pa.table({"query": ["x", "y"], "label": [1.0, float("nan")]}), tmp_path / "n.parquet")
    with pytest.raises(RecordsError, match=r"row 2: label is NaN"):
        read_records(tmp_path / "n.parquet")
    with pytest.raises(RecordsError, match=r"label is NaN"):
        read_records(tmp_path / "n.parquet", label_bins="0:5")


def test_bad_json_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.jsonl", '{"query": "x"}\n\n{"query": "y",}\n')
    with pytest.raises(RecordsError, match=r"a.jsonl: line 3: invalid JSON"):
        read_records(path)
    with pytest.raises(RecordsError, match=r"line 2: expected a JSON object, got list"):
        read_records(write_text(tmp_path / "b.jsonl", '{"query": "x"}\n["y"]\n'))


def test_invalid_utf8_names_file(tmp_path: Path) -> None:
    (tmp_path / "latin1.csv").write_bytes("query\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(RecordsError, match=r"latin1.csv: invalid UTF-8 at byte 9 \(line 2\)"):
        read_records(tmp_path / "latin1.csv")
    (tmp_path / "bad.jsonl").write_bytes(b'{"query": "\xff"}\n')
    with pytest.raises(RecordsError, match=r"bad.jsonl: invalid UTF-8"):
        read_records(tmp_path / "bad.jsonl")
    bad = pa.array([b"ok", b"\xff\xfe"], pa.binary())
    pq.write_table(pa.table({"query": ["a", "b"], "title": bad}), tmp_path / "bad.parquet")
    with pytest.raises(RecordsError, match=r"bad.parquet: column 'title' is not valid UTF-8"):
        read_records(tmp_path / "bad.parquet")


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes("\ufeffquery,title\nx,y\n".encode())
    assert read_records(tmp_path / "bom.csv").column("query").to_pylist() == ["x"]


def test_duplicate_columns(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match=r"duplicate column.*'title'"):
        read_records(write_text(tmp_path / "a.csv", "query,title,title\nx,y,z\n"))
    with pytest.raises(RecordsError, match=r"line 1: duplicate key 'query'"):
        read_records(write_text(tmp_path / "a.jsonl", '{"query": "x", "query": "y"}\n'))
    t = pa.table({"query": ["x"], "a": ["y"]}).rename_columns(["query", "query"])
    pq.write_table(t, tmp_path / "d.parquet")
    with pytest.raises(RecordsError, match=r"duplicate column.*'query'"):
        read_records(tmp_path / "d.parquet")


def test_ragged_and_malformed_csv(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match=r"line 3 has 3 fields but the header has 2"):
        read_records(write_text(tmp_path / "a.csv", "query,title\nx,y\nx,y,z\n"))
    with pytest.raises(RecordsError, match=r"malformed CSV"):
        read_records(write_text(tmp_path / "b.csv", 'query,title\n"x"y,z\n'))


def test_bad_list_and_text_values(tmp_path: Path) -> None:
    with pytest.raises(
        RecordsError, match=r"line 2: 'captions' looks like a JSON array but is not valid JSON"
    ):
        read_records(write_text(tmp_path / "a.csv", 'query,captions\nx,"[""a"""\n'))
    with pytest.raises(RecordsError, match=r"'boards' should be a list of strings"):
        read_records(write_text(tmp_path / "b.jsonl", '{"query": "x", "boards": [{"a": 1}]}\n'))
    with pytest.raises(RecordsError, match=r"'title' should be text, got list"):
        read_records(write_text(tmp_path / "c.jsonl", '{"query": "x", "title": ["a"]}\n'))
    pq.write_table(pa.table({"query": ["x"], "title": [[1, 2]]}), tmp_path / "d.parquet")
    with pytest.raises(RecordsError, match=r"column 'title' should hold text"):
        read_records(tmp_path / "d.parquet")


def test_not_parquet(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(RecordsError, match=r"not a readable Parquet file"):
        read_records(tmp_path / "x.parquet")


# ---------------------------------------------------------------------------------------- validation


def test_validate_records(table: pa.Table) -> None:
    validate_records(table)
    with pytest.raises(TypeError):
        validate_records(table.to_pylist())  # type: ignore[arg-type]
    with pytest.raises(RecordsError, match=r"1 of 3 pairs are unlabeled"):
        validate_records(table, require_labels=True)
    with pytest.raises(RecordsError, match=r"lacks field"):
        validate_records(table.drop_columns(["boards"]))
    with pytest.raises(RecordsError, match=r"unknown column"):
        validate_records(table.append_column("extra", pa.array([1, 2, 3])))
    wrong = table.set_column(0, "query", table.column("query").cast(pa.large_string()))
    with pytest.raises(RecordsError, match=r"'query' has type large_string"):
        validate_records(wrong)
    with pytest.raises(RecordsError, match=r"label 5 is outside 1..4"):
        validate_records(table, grades=4)
    with pytest.raises(RecordsError, match=r"grades must be >= 2"):
        validate_records(table, grades=1)


def test_write_with_grades(tmp_path: Path) -> None:
    t = make_records([{"query": "q", "label": 7}], grades=7)
    plain = with_grades(t, None)
    with pytest.raises(RecordsError, match=r"label 7 is outside 1\.\.5"):
        write_records(plain, tmp_path / "a.parquet")
    assert num_grades(read_records(write_records(plain, tmp_path / "a.parquet", grades=7))) == 7


# ------------------------------------------------------------------------------------------------ weight


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_weight_round_trips_and_null_means_unweighted(tmp_path: Path, ext: str) -> None:
    t = make_records({"query": ["a", "b", "c"], "label": [1, 2, 3], "weight": ["0.25", "", None]})
    assert t.column("weight").to_pylist() == [0.25, None, None]
    back = read_records(write_records(t, tmp_path / f"w.{ext}"))
    assert back.column("weight").to_pylist() == [0.25, None, None]
    # mapped from a source column like any other field
    mapped = make_records({"query": ["a"], "agreement": [2]}, mapping={"agreement": "weight"})
    assert mapped.column("weight").to_pylist() == [2.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, r"row 2: weight 0\.0 should be a finite number > 0"),
        (-1.5, r"row 2: weight -1\.5 should be a finite number > 0"),
        (float("nan"), r"row 2: weight nan should be"),
        (float("inf"), r"row 2: weight inf should be"),
        ("heavy", r"row 2: weight 'heavy' is not a number"),
        (True, r"row 2: weight should be a number, got bool"),
    ],
)
def test_bad_weights_are_refused(value: object, message: str) -> None:
    with pytest.raises(RecordsError, match=message):
        make_records([{"query": "a", "weight": 1}, {"query": "b", "weight": value}])


def test_bad_weight_in_a_file_names_the_line_and_leaves_the_target(tmp_path: Path) -> None:
    target = write_records(make_records([{"query": "kept", "label": 1}]), tmp_path / "out.csv")
    before = target.read_bytes()
    src = write_text(tmp_path / "in.csv", "query,label,weight\na,1,1\nb,2,-3\n")
    with pytest.raises(RecordsError, match=r"in\.csv: line 3: weight -3\.0"):
        write_records(read_records(src), target)
    assert target.read_bytes() == before
    table = make_records([{"query": "a", "weight": 1.0}])
    bad = table.set_column(table.schema.get_field_index("weight"), "weight", pa.array([-1.0]))
    with pytest.raises(RecordsError, match=r"records: row 1: weight -1\.0 should be a finite number > 0"):
        validate_records(bad)


def test_in_memory_input_errors_name_the_field() -> None:
    # A string is a sequence: {"query": "abc"} used to become the three rows "a", "b", "c".
    for bad in ("abc", 5, {"x": 1}):
        with pytest.raises(TypeError, match="column 'query' should be a list of values"):
            make_records({"query": bad})
    # A lone surrogate (a bad decode upstream) failed in Arrow's encoder without row or field.
    for field, value in (("query", "\ud800"), ("title", "a\udcffb"), ("captions", ["\ud800"])):
        with pytest.raises(RecordsError, match=rf"row 1: '{field}' is not valid Unicode"):
            make_records([{"query": "q", field: value}])
    with pytest.raises(ValueError, match="text: not valid Unicode"):
        text_id("\ud800")
    # Nested JSON deep enough to exhaust the recursion limit is refused, not a RecursionError.
    with pytest.raises(RecordsError, match="'captions' is a JSON array nested too deeply"):
        make_records([{"query": "q", "captions": "[" * 100_000}])
    # K is bounded: 2^40 grades used to store labels wrapped through int32.
    with pytest.raises(RecordsError, match="grades must be <= 1000"):
        make_records([{"query": "a", "label": 2**40}], grades=2**40)


def test_deep_jsonl_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "deep.jsonl"
    f.write_text('{"query": "q", "captions": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(RecordsError, match="line 1: JSON nested too deeply"):
        read_records(f)


def test_split_by_query_checks_its_arguments() -> None:
    table = make_records([{"query": f"q{i}", "label": 1 + i % 2} for i in range(10)])
    with pytest.raises(RecordsError, match=r"missing column\(s\) query"):
        split_by_query(table.drop_columns(["query"]))
    with pytest.raises(RecordsError, match="'query' column has missing values"):
        split_by_query(pa.table({"query": ["a", None]}))
    for bad in (0.5, "0.5"):
        with pytest.raises(TypeError, match="split fractions: expected a sequence"):
            split_by_query(table, bad)  # type: ignore[arg-type]
    with pytest.raises(RecordsError, match="split fractions must be positive numbers"):
        split_by_query(table, ["x", 0.5])  # type: ignore[list-item]
    for seed in (-1, "x", True):
        with pytest.raises(TypeError, match="seed: expected an integer >= 0"):
            split_by_query(table, seed=seed)  # type: ignore[arg-type]


def test_bin_ranges_and_number_text_are_strict() -> None:
    # hi - lo overflowed into NaN/inf edges, and a tiny range gave duplicate edges, both silently.
    with pytest.raises(RecordsError, match="bin edges must be finite"):
        equal_width_edges(-1.7e308, 1.7e308)
    with pytest.raises(RecordsError, match="strictly increasing"):
        equal_width_edges(0.0, 5e-324)
    with pytest.raises(TypeError, match="bin range lo: expected a number"):
        equal_width_edges("0", 5)  # type: ignore[arg-type]
    # float() reads "2_0" as 20 (a Python literal); in a data file it is a typo.
    with pytest.raises(RecordsError, match="label '2_0' is not a number"):
        make_records({"query": ["a"], "label": ["2_0"]})
    assert make_records({"query": ["a"], "label": [" 2 "]}).column("label").to_pylist() == [2]


def test_helpers_name_what_is_wrong() -> None:
    table = make_records([{"query": "q", "title": "t", "label": 1}])
    for call in (
        lambda: num_grades(None),  # type: ignore[arg-type]
        lambda: with_grades({"query": ["q"]}, 5),  # type: ignore[arg-type]
        lambda: item_columns(None),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match=r"records must be a pyarrow\.Table"):
            call()
    with pytest.raises(RecordsError, match=r"missing column\(s\) .*lang"):
        items_of(table.drop_columns(["lang"]))
    for bad in (None, "a=title", [5]):
        with pytest.raises(TypeError, match="column mapping"):
            parse_mapping(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="label bins: expected text"):
        parse_label_bins(None)  # type: ignore[arg-type]
    # Line numbers that do not match the rows failed only when an error message needed one.
    with pytest.raises(ValueError, match=r"lines: expected one line number per row \(2\)"):
        make_records({"query": ["a", "b"]}, lines=[10])
    # A float id column's NaN is a missing id, as in the Python path, not the text "nan".
    ids = make_records(pa.table({"query": ["a", "b"], "query_id": [1.0, float("nan")]})).column("query_id")
    assert ids.to_pylist() == ["1", None]
