"""`pinrel.assemble`, `assemble_pairs`, `clean_text` and `AssemblySpec`: rules, options and bad input."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
import regex

import pinrel
from pinrel import AssemblySpec

# One sample per script family the catalog carries; each is assembled and (in test_features) hashed.
SCRIPTS: dict[str, str] = {
    "latin": "Crème brûlée torch, façade naïve coöperate",
    "cyrillic": "Красная керамическая кружка для чая",
    "greek": "Κόκκινη κεραμική κούπα ΟΔΟΣ",
    "arabic": "كوب سيراميك أحمر للقهوة",
    "hebrew": "ספל קרמיקה אדום לקפה",
    "cjk": "東京タワーの赤いマグカップ 한국어 머그컵",
    "thai": "แก้วกาแฟเซรามิกสีแดง สวัสดีครับ",
    "devanagari": "लाल सिरेमिक मग नमस्ते दुनिया",
    "emoji": "family 👨\u200d👩\u200d👧\u200d👦 flags 🇯🇵🇫🇷 skin 👍🏽👋🏿 combining e\u0301 a\u0308 ok 🍕",
}


def graphemes(s: str) -> list[str]:
    return regex.findall(r"\X", s)


def is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


def expect_error(exc_type: type[Exception], fragment: str, fn: Any, *args: Any, **kwargs: Any) -> str:
    """Like pytest.raises, but also fails loudly (not as an error) if a Rust panic leaks through."""
    try:
        fn(*args, **kwargs)
    except BaseException as e:  # PanicException derives from BaseException, so catch that wide
        assert not is_panic(e), f"Rust panic: {e}"
        assert isinstance(e, exc_type), f"expected {exc_type.__name__}, got {type(e).__name__}: {e}"
        assert fragment in str(e), f"{fragment!r} not in {str(e)!r}"
        return str(e)
    raise AssertionError(f"no {exc_type.__name__} raised")


# ---------------------------------------------------------------------------------------------
# The documented behaviour
# ---------------------------------------------------------------------------------------------


def test_readme_example() -> None:
    items = [
        {
            "title": "Red ceramic mug",
            "description": "<p>Holds 350&nbsp;ml</p>",
            "captions": ["a red mug on a table"],
            "boards": ["Kitchen", "kitchen"],
            "lang": "en",
        }
    ]
    assert pinrel.assemble(items) == [
        "title: Red ceramic mug | description: Holds 350 ml | captions: a red mug on a table"
        " | boards: Kitchen"
    ]
    assert pinrel.assemble_pairs(["red mug"], items) == [
        "query: red mug [SEP] title: Red ceramic mug | description: Holds 350 ml"
        " | captions: a red mug on a table | boards: Kitchen"
    ]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<p>Hello <b>world</b></p>", "Hello world"),
        ("a<script>var x = '<b>';</script>b", "a b"),
        ("Tom &amp; Jerry &lt;3", "Tom & Jerry <3"),
        ("caf&eacute; &#233; &#xE9;", "café é é"),
        ("ＡＢＣ１２３ ﬁle", "ABC123 file"),  # NFKC folds full-width forms and ligatures
        ("e\u0301", "\u00e9"),
        ("a\u0000b\u0007c\u200bd\ufeffe", "abcde"),
        ("  many \t\n spaces\u3000here  ", "many spaces here"),
        ("I <3 you & a < b", "I <3 you & a < b"),
        ("👩\u200d💻 می\u200cخواهم", "👩\u200d💻 می\u200cخواهم"),  # ZWJ and ZWNJ carry meaning
    ],
)
def test_clean_text_rules(raw: str, clean: str) -> None:
    assert pinrel.clean_text(raw) == clean
    assert pinrel.clean_text([raw, raw]) == [clean, clean]


def test_list_fields_are_deduplicated_case_insensitively_and_empty_entries_dropped() -> None:
    item = {"boards": ["Kitchen", "KITCHEN", " kitchen ", "<b></b>", None, "Home"]}
    assert pinrel.assemble([item]) == ["boards: Kitchen; Home"]


def test_bare_string_in_a_list_field_is_one_entry() -> None:
    assert pinrel.assemble([{"captions": "one caption"}]) == ["captions: one caption"]


def test_missing_none_and_extra_keys() -> None:
    out = pinrel.assemble([{}, {"title": None, "id": 7, "price": 3.5}, {"title": "  "}])
    assert out == ["", "", ""]


def test_field_order_and_all_fields() -> None:
    item = {
        "link_description": "ld",
        "link_title": "lt",
        "queries": ["q1", "q2"],
        "boards": ["b"],
        "captions": ["c"],
        "description": "d",
        "title": "t",
    }
    assert pinrel.assemble([item]) == [
        "title: t | description: d | captions: c | boards: b | queries: q1; q2 | link title: lt"
        " | link description: ld"
    ]


def test_labels_separators_fields_and_caps() -> None:
    item = {"title": "Red ceramic mug", "boards": ["Kitchen", "Mugs"], "description": "desc"}
    spec = AssemblySpec(
        fields=["boards", "title"],
        labels={"title": "T: ", "boards": ""},
        separator=" / ",
        list_separator=", ",
        field_max_chars={"title": 9},
    )
    # The cap cuts "Red ceramic" to 9 chars and trailing whitespace never survives a cut.
    assert pinrel.assemble([item], spec) == ["Kitchen, Mugs / T: Red ceram"]
    assert spec.fields == ["boards", "title"]
    assert spec.separator == " / "
    # A partial label override keeps the other default labels.
    spec = AssemblySpec(labels={"title": ""})
    assert pinrel.assemble([item], spec) == ["Red ceramic mug | description: desc | boards: Kitchen; Mugs"]


def test_include_lang() -> None:
    item = {"title": "hello", "lang": " fr "}
    assert pinrel.assemble([item], AssemblySpec(include_lang=True)) == ["lang: fr | title: hello"]
    assert pinrel.assemble([item]) == ["title: hello"]
    assert pinrel.assemble([{"title": "x", "lang": None}], AssemblySpec(include_lang=True)) == ["title: x"]


def test_budget_flows_from_short_fields_to_long_ones() -> None:
    item = {"title": "short", "description": "x" * 5000}
    (out,) = pinrel.assemble([item], AssemblySpec(max_chars=300, field_max_chars={"description": 5000}))
    assert len(out) == 300
    assert out.startswith("title: short | description: xxx")
    # With both fields long, neither starves the other.
    item = {"title": "a" * 1000, "description": "b" * 1000}
    (out,) = pinrel.assemble([item], AssemblySpec(max_chars=100))
    assert len(out) <= 100
    assert out.count("a") >= 35 and out.count("b") >= 35


def test_budget_too_small_for_any_label_gives_empty_text() -> None:
    assert pinrel.assemble([{"title": "hello"}], AssemblySpec(max_chars=3)) == [""]
    assert pinrel.assemble([{"title": "hello"}], AssemblySpec(max_chars=8)) == ["title: h"]


def test_list_cut_never_leaves_a_dangling_separator() -> None:
    item = {"boards": ["abc", "def"]}
    spec = AssemblySpec(fields=["boards"], max_chars=len("boards: abc; "))
    assert pinrel.assemble([item], spec) == ["boards: abc"]


@pytest.mark.parametrize("budget", [1, 2, 3, 5, 8, 13, 21, 34])
def test_truncation_never_splits_a_grapheme(budget: int) -> None:
    text = "👨\u200d👩\u200d👧\u200d👦🇯🇵e\u0301👍🏽नमस्ते"
    spec = AssemblySpec(fields=["title"], labels={"title": ""}, max_chars=budget)
    (out,) = pinrel.assemble([{"title": text}], spec)
    cleaned = pinrel.clean_text(text)  # NFKC composes e + U+0301 into one char
    assert len(out) <= budget
    assert cleaned.startswith(out)
    assert "".join(graphemes(cleaned)[: len(graphemes(out))]) == out


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_assembles_within_budget(script: str) -> None:
    text = SCRIPTS[script]
    item = {"title": text, "description": f"<p>{text}</p> &amp; {text}", "captions": [text, text.upper()]}
    (full,) = pinrel.assemble([item])
    assert full.startswith("title: " + pinrel.clean_text(text))
    for budget in (10, 25, 40, 80):
        (out,) = pinrel.assemble([item], AssemblySpec(max_chars=budget))
        assert len(out) <= budget
        for segment in out.split(" | "):
            label, _, content = segment.partition(": ")
            cleaned = pinrel.clean_text(text)
            if label == "title":
                assert cleaned.startswith(content)
                assert len(graphemes(content)) == len(graphemes(cleaned[: len(content)]))


def test_assemble_pairs_query_options() -> None:
    items = [{"title": "Red mug"}, {"title": "Blue mug"}]
    spec = AssemblySpec(query_label="Q=", pair_separator=" || ", max_query_chars=3)
    assert pinrel.assemble_pairs(["  <b>red</b> mugs", "blue"], items, spec) == [
        "Q=red || title: Red mug",
        "Q=blu || title: Blue mug",
    ]
    assert pinrel.assemble_pairs(("red", "blue"), items) == [
        "query: red [SEP] title: Red mug",
        "query: blue [SEP] title: Blue mug",
    ]


def test_assemble_pairs_length_mismatch() -> None:
    msg = expect_error(ValueError, "queries", pinrel.assemble_pairs, ["a", "b"], [{"title": "x"}])
    assert "2" in msg and "1" in msg


# ---------------------------------------------------------------------------------------------
# Arrow input
# ---------------------------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "title": "Red mug",
        "description": "<p>Holds 350&nbsp;ml</p>",
        "captions": ["a red mug", "A RED MUG"],
        "boards": ["Kitchen"],
        "lang": "en",
    },
    {"id": 2, "title": None, "description": "Только описание", "captions": None, "boards": [], "lang": None},
    {
        "id": 3,
        "title": "東京タワー 👍🏽",
        "description": "",
        "captions": ["x", None],
        "boards": ["y"],
        "lang": "ja",
    },
]


def test_arrow_table_and_record_batch_match_list_of_dicts() -> None:
    table = pa.Table.from_pylist(ROWS)
    expected = pinrel.assemble(ROWS)
    assert pinrel.assemble(table) == expected
    assert pinrel.assemble(table.to_batches()[0]) == expected
    spec = AssemblySpec(max_chars=30, include_lang=True)
    assert pinrel.assemble(table, spec) == pinrel.assemble(ROWS, spec)
    queries = ["mug", "описание", "tower"]
    assert pinrel.assemble_pairs(queries, table) == pinrel.assemble_pairs(queries, ROWS)


def test_arrow_chunked_table() -> None:
    table = pa.concat_tables([pa.Table.from_pylist(ROWS[:1]), pa.Table.from_pylist(ROWS[1:])])
    assert table.column("title").num_chunks == 2
    assert pinrel.assemble(table) == pinrel.assemble(ROWS)


def test_arrow_errors_name_the_problem() -> None:
    expect_error(ValueError, "items", pinrel.assemble, pa.table({"id": [1, 2]}))
    expect_error(TypeError, 'items[1]["title"]', pinrel.assemble, pa.table({"title": [None, 5]}))
    expect_error(ValueError, "items", pinrel.assemble, pa.table({"title": pa.array([], pa.string())}))


# ---------------------------------------------------------------------------------------------
# AssemblySpec
# ---------------------------------------------------------------------------------------------


def test_spec_round_trip() -> None:
    spec = AssemblySpec(
        fields=["description", "title", "boards"],
        labels={"title": "T: "},
        separator=" / ",
        list_separator=", ",
        max_chars=77,
        field_max_chars={"boards": 5},
        query_label="Q: ",
        pair_separator=" <> ",
        max_query_chars=9,
        include_lang=True,
    )
    d = spec.to_dict()
    assert d["max_chars"] == 77 and d["labels"]["title"] == "T: " and d["field_max_chars"]["boards"] == 5
    again = AssemblySpec.from_dict(d)
    assert again == spec
    assert again.to_dict() == d
    assert AssemblySpec.from_dict(AssemblySpec().to_dict()) == AssemblySpec()
    assert AssemblySpec.from_dict({}) == AssemblySpec()
    item = {"title": "Red mug", "description": "desc", "boards": ["a board"], "lang": "en"}
    assert pinrel.assemble([item], again) == pinrel.assemble([item], spec)


def test_spec_equality_does_not_depend_on_override_order() -> None:
    a = AssemblySpec(labels={"title": "T", "boards": "B"}, field_max_chars={"title": 3, "boards": 4})
    b = AssemblySpec(labels={"boards": "B", "title": "T"}, field_max_chars={"boards": 4, "title": 3})
    assert a == b
    assert a != AssemblySpec()


def test_spec_from_dict_rejects_unknown_keys() -> None:
    msg = expect_error(ValueError, "max_char", AssemblySpec.from_dict, {"max_char": 100})
    assert "known keys" in msg
    expect_error(TypeError, "spec", AssemblySpec.from_dict, [("max_chars", 3)])
    expect_error(TypeError, "spec key", AssemblySpec.from_dict, {1: 3})


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragment"),
    [
        ({"max_chars": 0}, ValueError, "max_chars"),
        ({"max_chars": -5}, ValueError, "max_chars"),
        ({"max_chars": float("nan")}, ValueError, "max_chars"),
        ({"max_chars": 10.0}, TypeError, "max_chars"),
        ({"max_chars": True}, TypeError, "max_chars"),
        ({"max_chars": "100"}, TypeError, "max_chars"),
        ({"max_chars": 10**30}, ValueError, "max_chars"),
        ({"max_chars": 10**7}, ValueError, "max_chars"),
        ({"max_query_chars": 0}, ValueError, "max_query_chars"),
        ({"max_query_chars": -1}, ValueError, "max_query_chars"),
        ({"field_max_chars": {"title": 0}}, ValueError, "field_max_chars['title']"),
        ({"field_max_chars": {"title": -3}}, ValueError, "field_max_chars"),
        ({"field_max_chars": {"price": 3}}, ValueError, "price"),
        ({"field_max_chars": [("title", 3)]}, TypeError, "field_max_chars"),
        ({"fields": []}, ValueError, "fields"),
        ({"fields": "title"}, TypeError, "fields"),
        ({"fields": ["title", "title"]}, ValueError, "duplicate"),
        ({"fields": ["title", "Title"]}, ValueError, "fields[1]"),
        ({"fields": ["title", None]}, TypeError, "fields[1]"),
        ({"labels": {"title": 3}}, TypeError, "labels"),
        ({"labels": {"nope": "x"}}, ValueError, "nope"),
        ({"labels": "title"}, TypeError, "labels"),
        ({"separator": 3}, TypeError, "separator"),
        ({"separator": "\ud800"}, ValueError, "separator"),
        ({"list_separator": b"; "}, TypeError, "list_separator"),
        ({"query_label": "\udfff"}, ValueError, "query_label"),
        ({"include_lang": 1}, TypeError, "include_lang"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict[str, Any], exc: type[Exception], fragment: str) -> None:
    expect_error(exc, fragment, AssemblySpec, **kwargs)
    expect_error(exc, fragment, AssemblySpec.from_dict, kwargs)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument (and index), never a panic or a hang
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "exc", "fragment"),
    [
        (None, TypeError, "items"),
        ("title", TypeError, "items"),
        ({"title": "x"}, TypeError, "items"),
        ([], ValueError, "items"),
        ((), ValueError, "items"),
        ([None], TypeError, "items[0]"),
        ([{"title": "ok"}, "not a dict"], TypeError, "items[1]"),
        ([{"title": 3}], TypeError, 'items[0]["title"]'),
        ([{"title": b"bytes"}], TypeError, 'items[0]["title"]'),
        ([{"title": "ok"}, {"description": ["a list"]}], TypeError, 'items[1]["description"]'),
        ([{"captions": {"a": 1}}], TypeError, 'items[0]["captions"]'),
        ([{"captions": 5}], TypeError, 'items[0]["captions"]'),
        ([{"boards": ["ok", 5]}], TypeError, 'items[0]["boards"][1]'),
        ([{"lang": 5}], TypeError, 'items[0]["lang"]'),
        ([{"title": "a\ud800b"}], ValueError, 'items[0]["title"]'),
        ([{"title": "ok"}, {"queries": ["fine", "x\udc00"]}], ValueError, 'items[1]["queries"][1]'),
        ([{"link_description": "\udbff"}], ValueError, 'items[0]["link_description"]'),
    ],
)
def test_assemble_rejects_bad_items(items: Any, exc: type[Exception], fragment: str) -> None:
    expect_error(exc, fragment, pinrel.assemble, items)


def test_assemble_rejects_bad_spec() -> None:
    expect_error(TypeError, "spec", pinrel.assemble, [{"title": "x"}], {"max_chars": 3})


@pytest.mark.parametrize(
    ("queries", "exc", "fragment"),
    [
        (None, TypeError, "queries"),
        ("ab", TypeError, "queries"),
        ([], ValueError, "queries"),
        ([3], TypeError, "queries[0]"),
        (["ok", None], TypeError, "queries[1]"),
        (["ok", "\ud800"], ValueError, "queries[1]"),
    ],
)
def test_assemble_pairs_rejects_bad_queries(queries: Any, exc: type[Exception], fragment: str) -> None:
    items = [{"title": "x"}, {"title": "y"}]
    expect_error(exc, fragment, pinrel.assemble_pairs, queries, items)


@pytest.mark.parametrize(
    ("texts", "exc", "fragment"),
    [(None, TypeError, "texts"), ([], ValueError, "texts"), (["a", 1], TypeError, "texts[1]")],
)
def test_clean_text_rejects_bad_input(texts: Any, exc: type[Exception], fragment: str) -> None:
    expect_error(exc, fragment, pinrel.clean_text, texts)
    expect_error(ValueError, "texts", pinrel.clean_text, "\ud800")


def test_ten_megabyte_fields_are_budgeted() -> None:
    big = "word " * 2_000_000  # 10 MB
    html = "<p>caf&eacute; 東京 👍🏽</p>" * 400_000  # ~10 MB of markup, entities and non-ASCII
    items = [
        {"title": big, "description": html, "captions": [big, html], "boards": ["<script>" * 1_000_000]},
    ]
    # No timing asserts (the suite must not flake on a busy machine); a super-linear pass on inputs
    # this size would show as a hang, and core/text.rs pins linearity with a timed Rust test.
    (out,) = pinrel.assemble(items)
    (pair,) = pinrel.assemble_pairs([big], items)
    assert 0 < len(out) <= 1024
    assert pair.startswith("query: word word") and len(pair) <= 256 + 1024 + len("query: ") + len(" [SEP] ")
    assert len(pinrel.clean_text(html)) > 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        "<" * 200_000,
        "<script>" * 100_000,
        "<!--" * 100_000,
        "&#" * 200_000,
        "&amp" * 200_000,
        "\u0301" * 200_000,
    ],
)
def test_adversarial_markup_is_handled(text: str) -> None:
    (out,) = pinrel.assemble([{"title": text, "description": text}])
    assert len(out) <= 1024
