"""pinrel.datasets loaders: real CrowdFlower and STSb data when the shared folder exists, tiny synthetic
ESCI and WANDS files always."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinrel.datasets import (
    DATASETS,
    load_crowdflower,
    load_dataset,
    load_esci,
    load_stsb,
    load_wands,
    shared_data_dir,
)
from pinrel.datasets.esci import EXAMPLES_FILE, PRODUCTS_FILE
from pinrel.datasets.stsb import available_languages
from pinrel.records import SCHEMA, RecordsError, num_grades, validate_records

SHARED = shared_data_dir()
needs_crowdflower = pytest.mark.skipif(
    SHARED is None or not (SHARED / "crowdflower").is_dir(),
    reason="no shared data folder with crowdflower/ (set PINREL_SHARED_DATA or keep ../shared/data)",
)
needs_stsb = pytest.mark.skipif(
    SHARED is None or not (SHARED / "stsb-multi-mt").is_dir(),
    reason="no shared data folder with stsb-multi-mt/ (set PINREL_SHARED_DATA or keep ../shared/data)",
)


def check_records(table: pa.Table, grades: int) -> None:
    assert table.schema.remove_metadata().equals(SCHEMA)
    assert num_grades(table) == grades
    validate_records(table)


# -------------------------------------------------------------------------------------- shared data


def test_shared_data_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINREL_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    # A stale setting does not hide the folder beside the repository; it just is not used.
    monkeypatch.setenv("PINREL_SHARED_DATA", str(tmp_path / "missing"))
    found = shared_data_dir()
    assert found is None or found.is_dir()


def test_registry() -> None:
    assert set(DATASETS) == {"crowdflower", "esci", "stsb", "wands"}
    with pytest.raises(ValueError, match=r"unknown dataset 'msmarco'"):
        load_dataset("msmarco", ".")


# --------------------------------------------------------------------------------------- crowdflower


@needs_crowdflower
def test_crowdflower_real_folds() -> None:
    assert SHARED is not None
    t = load_crowdflower(SHARED / "crowdflower")
    check_records(t, 4)
    assert t.num_rows == 10158
    assert len(set(t.column("query").to_pylist())) == 261
    assert Counter(t.column("label").to_pylist()) == {1: 774, 2: 1476, 3: 1737, 4: 6171}
    assert set(t.column("lang").to_pylist()) == {"en"}
    ids = t.column("item_id").to_pylist()
    assert len(set(ids)) == len(ids)
    # Descriptions stay raw; assemble is the one place that cleans HTML.
    assert any("<" in d or "&" in d for d in t.column("description").to_pylist())
    # One id per query text.
    pairs = set(zip(t.column("query").to_pylist(), t.column("query_id").to_pylist(), strict=True))
    assert len(pairs) == 261
    two = load_crowdflower(SHARED / "crowdflower", folds=[10, 1])
    one = load_crowdflower(SHARED / "crowdflower" / "fold1.csv")
    assert two.num_rows == one.num_rows + load_crowdflower(SHARED / "crowdflower", folds=[10]).num_rows
    with pytest.raises(RecordsError, match=r"no fold\(s\) \[11\]"):
        load_crowdflower(SHARED / "crowdflower", folds=[11])


def _write_crowdflower(folder: Path, rows: list[list[str]], name: str = "fold1.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["id", "query", "product_title", "product_description", "median_relevance", "relevance_variance"]
        )
        w.writerows(rows)
    return folder / name


def test_crowdflower_synthetic(tmp_path: Path) -> None:
    _write_crowdflower(tmp_path / "cf", [["1", "red mug", "Mug", "<b>Red</b>\nmug", "4", "0"]])
    _write_crowdflower(tmp_path / "cf", [["2", "Red  Mug", "Plate", "", "1", "0.5"]], "fold2.csv")
    t = load_crowdflower(tmp_path / "cf")
    check_records(t, 4)
    rows = t.to_pylist()
    assert rows[0]["description"] == "<b>Red</b>\nmug"
    assert [r["item_id"] for r in rows] == ["1", "2"]
    assert rows[0]["query_id"] == rows[1]["query_id"]  # same query up to case and spacing
    assert load_dataset("crowdflower", tmp_path / "cf", folds=[2]).num_rows == 1


def test_crowdflower_errors(tmp_path: Path) -> None:
    path = _write_crowdflower(tmp_path / "cf", [["1", "q", "t", "", "4", "0"], ["2", "q", "t", "", "5", "0"]])
    with pytest.raises(RecordsError, match=r"fold1.csv: line 3: label 5 is outside 1..4"):
        load_crowdflower(path)
    # "12" was read as folds 1 and 2, [True] and [1.7] as fold 1, [1, 1] as fold 1 twice.
    for folds, kind, message in (
        ("12", TypeError, "folds: expected a list of fold numbers, got '12'"),
        ([True], ValueError, r"folds\[0\]: expected an integer >= 0, got True"),
        ([1.7], ValueError, r"folds\[0\]: expected an integer >= 0, got 1.7"),
        ([1, 1], ValueError, r"folds: expected distinct fold numbers, at least one, got \[1, 1\]"),
        ([], ValueError, "at least one"),
    ):
        with pytest.raises(kind, match=message):
            load_crowdflower(path.parent, folds=folds)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"folds: pick folds from a folder of foldN\.csv files"):
        load_crowdflower(path, folds=[1])
    with pytest.raises(FileNotFoundError):
        load_crowdflower(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordsError, match=r"no foldN.csv files"):
        load_crowdflower(tmp_path / "empty")
    (tmp_path / "odd.csv").write_text("id,query\n1,q\n", encoding="utf-8")
    with pytest.raises(RecordsError, match=r"missing CrowdFlower column"):
        load_crowdflower(tmp_path / "odd.csv")


# ---------------------------------------------------------------------------------------------- stsb


@needs_stsb
def test_stsb_real_two_languages() -> None:
    assert SHARED is not None
    folder = SHARED / "stsb-multi-mt"
    assert {"de", "en", "ja"} <= set(available_languages(folder))
    t = load_stsb(folder, languages=["de", "ja"], split="dev")
    check_records(t, 5)
    assert Counter(t.column("lang").to_pylist()) == {"de": 1500, "ja": 1500}
    assert set(t.column("label").to_pylist()) == {1, 2, 3, 4, 5}
    # Check the binning against the raw file.
    with open(folder / "stsb-de-dev.csv", encoding="utf-8", newline="") as fh:
        raw = list(csv.reader(fh))
    expected = [min(5, int(float(score)) + 1) for _, _, score in raw]
    de = t.filter(pa.compute.equal(t.column("lang"), "de"))
    assert de.column("label").to_pylist() == expected
    assert de.column("query").to_pylist()[0] == raw[0][0]
    assert de.column("title").to_pylist()[0] == raw[0][1]
    # The same pair index lines up across languages.
    ids = t.column("item_id").to_pylist()
    assert ids[0] == "de/dev/0" and ids[1500] == "ja/dev/0"
    both = load_stsb(folder, languages="en", split=["dev", "test"])
    assert both.num_rows == 1500 + 1379


def test_stsb_synthetic_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "stsb"
    folder.mkdir()
    (folder / "stsb-xx-train.csv").write_text(
        'a,b,0.0\nc,d,0.99\n"e, with comma",f,1.0\ng,h,3.999\ni,j,4.0\nk,l,5.0\n', encoding="utf-8"
    )
    t = load_stsb(folder)
    assert t.column("label").to_pylist() == [1, 1, 2, 4, 5, 5]
    assert t.column("query").to_pylist()[2] == "e, with comma"
    assert set(t.column("lang").to_pylist()) == {"xx"}
    with pytest.raises(RecordsError, match=r"no STSb files for language\(s\) \['fr'\]"):
        load_stsb(folder, languages=["fr"])
    with pytest.raises(RecordsError, match=r"unknown STSb split"):
        load_stsb(folder, split="validation")
    with pytest.raises(RecordsError, match=r"language: \['xx', 'xx'\] names one twice"):
        load_stsb(folder, languages=["xx", "xx"])
    with pytest.raises(TypeError, match="split: expected a name or a list of names, got None"):
        load_stsb(folder, split=None)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match=r"stsb-xx-dev.csv"):
        load_stsb(folder, split="dev")
    (folder / "stsb-yy-train.csv").write_text("a,b,5.5\n", encoding="utf-8")
    with pytest.raises(RecordsError, match=r"stsb-yy-train.csv: line 1: label 5.5 is outside the bin range"):
        load_stsb(folder, languages=["yy"])
    with pytest.raises(FileNotFoundError):
        load_stsb(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- esci


def _write_esci(folder: Path, extra_example: dict[str, object] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    examples = {
        "example_id": [0, 1, 2, 3, 4],
        "query": ["red mug", "red mug", "red mug", "taza roja", "赤いマグ"],
        "query_id": [10, 10, 10, 11, 12],
        "product_id": ["B01", "B02", "B03", "B01", "B04"],
        "product_locale": ["us", "us", "us", "es", "jp"],
        "esci_label": ["E", "S", "I", "C", "E"],
        "small_version": [1, 0, 1, 1, 0],
        "large_version": [1, 1, 1, 1, 1],
        "split": ["train", "train", "test", "train", "train"],
    }
    if extra_example:
        for k, v in extra_example.items():
            examples[k].append(v)  # type: ignore[attr-defined]
    products = {
        "product_id": ["B01", "B02", "B03", "B01", "B04"],
        "product_title": ["Red Mug", "Blue Mug", "Sofa", "Taza roja", "赤いマグカップ"],
        "product_description": ["<p>A red mug</p>", None, "", "Una taza", None],
        "product_bullet_point": ["350 ml\nDishwasher safe", "", None, None, "陶器"],
        "product_brand": ["Acme", "", None, "Acme", "Kiraku"],
        "product_color": ["Red", None, "Grey", "Rojo", ""],
        "product_locale": ["us", "us", "us", "es", "jp"],
    }
    pq.write_table(pa.table(examples), folder / EXAMPLES_FILE)
    pq.write_table(pa.table(products), folder / PRODUCTS_FILE)


def test_esci_synthetic(tmp_path: Path) -> None:
    _write_esci(tmp_path / "esci")
    t = load_esci(tmp_path / "esci")
    check_records(t, 4)
    rows = t.to_pylist()
    assert [r["label"] for r in rows] == [4, 3, 1, 2, 4]
    assert [r["title"] for r in rows] == ["Red Mug", "Blue Mug", "Sofa", "Taza roja", "赤いマグカップ"]
    assert rows[0]["description"] == "<p>A red mug</p>\n350 ml\nDishwasher safe\nBrand: Acme. Color: Red"
    assert rows[1]["description"] == ""
    assert rows[3]["description"] == "Una taza\nMarca: Acme. Color: Rojo"
    assert rows[4]["description"] == "陶器\nブランド: Kiraku"
    assert [r["lang"] for r in rows] == ["en", "en", "en", "es", "ja"]
    assert [r["item_id"] for r in rows] == ["us/B01", "us/B02", "us/B03", "es/B01", "jp/B04"]
    assert rows[0]["query_id"] == "10"
    plain = load_esci(tmp_path / "esci" / EXAMPLES_FILE, with_brand_color=False)
    assert plain.column("description").to_pylist()[0] == "<p>A red mug</p>\n350 ml\nDishwasher safe"


def test_esci_filters(tmp_path: Path) -> None:
    _write_esci(tmp_path / "esci")
    assert load_esci(tmp_path / "esci", locales=["es", "jp"]).column("lang").to_pylist() == ["es", "ja"]
    assert load_esci(tmp_path / "esci", split="test").column("title").to_pylist() == ["Sofa"]
    small = load_esci(tmp_path / "esci", small_version=True)
    assert small.column("item_id").to_pylist() == ["us/B01", "us/B03", "es/B01"]
    with pytest.raises(RecordsError, match=r"unknown ESCI locale"):
        load_esci(tmp_path / "esci", locales=["fr"])


def test_esci_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_esci(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    pq.write_table(pa.table({"query": ["q"]}), tmp_path / "half" / EXAMPLES_FILE)
    with pytest.raises(RecordsError, match=r"missing ESCI examples column"):
        load_esci(tmp_path / "half")
    row = {
        "example_id": 5,
        "query": "q",
        "query_id": 13,
        "product_id": "B99",
        "product_locale": "us",
        "esci_label": "E",
        "small_version": 1,
        "large_version": 1,
        "split": "train",
    }
    _write_esci(tmp_path / "orphan", row)
    with pytest.raises(RecordsError, match=r"1 example\(s\) have no product row, e.g. product_id 'B99'"):
        load_esci(tmp_path / "orphan")
    _write_esci(tmp_path / "badlabel", {**row, "product_id": "B01", "esci_label": "X"})
    with pytest.raises(RecordsError, match=r"row 6: esci_label 'X' is not one of E, S, C, I"):
        load_esci(tmp_path / "badlabel")
    (tmp_path / "noproducts").mkdir()
    _write_esci(tmp_path / "noproducts")
    (tmp_path / "noproducts" / PRODUCTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"products file not found"):
        load_esci(tmp_path / "noproducts")


# --------------------------------------------------------------------------------------------- wands


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_wands(folder: Path, labels: list[list[str]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write_tsv(
        folder / "query.csv",
        ["query_id", "query", "query_class"],
        [["0", "salon chair", "Chairs"], ["1", "blue rug", "Rugs"]],
    )
    _write_tsv(
        folder / "product.csv",
        [
            "product_id",
            "product_name",
            "product_class",
            "category hierarchy",
            "product_description",
            "product_features",
            "rating_count",
            "average_rating",
            "review_count",
        ],
        [
            [
                "7",
                "barber chair",
                "Chairs",
                "Furniture / Chairs",
                'a 24" wide chair',
                "color:black|material:leather",
                "3",
                "4.5",
                "2",
            ],
            ["8", "navy area rug", "Rugs", "Decor / Rugs", "", "color:navy", "", "", ""],
        ],
    )
    rows = labels or [["0", "0", "7", "Exact"], ["1", "1", "8", "Partial"], ["2", "0", "8", "Irrelevant"]]
    _write_tsv(folder / "label.csv", ["id", "query_id", "product_id", "label"], rows)
    return folder


def test_wands_synthetic(tmp_path: Path) -> None:
    t = load_wands(_write_wands(tmp_path / "wands"))
    check_records(t, 3)
    rows = t.to_pylist()
    assert [r["label"] for r in rows] == [3, 2, 1]
    assert [r["query"] for r in rows] == ["salon chair", "blue rug", "salon chair"]
    assert [r["title"] for r in rows] == ["barber chair", "navy area rug", "navy area rug"]
    assert rows[0]["description"] == 'a 24" wide chair'
    assert (rows[0]["query_id"], rows[0]["item_id"], rows[0]["lang"]) == ("0", "7", "en")
    feats = load_wands(tmp_path / "wands", with_features=True).to_pylist()
    assert feats[0]["description"] == 'a 24" wide chair\ncolor: black; material: leather'
    assert feats[1]["description"] == "color: navy"


def test_wands_errors(tmp_path: Path) -> None:
    _write_wands(tmp_path / "a", [["0", "0", "9", "Exact"]])
    with pytest.raises(RecordsError, match=r"label.csv: line 2: product_id '9' is not in product.csv"):
        load_wands(tmp_path / "a")
    _write_wands(tmp_path / "b", [["0", "5", "7", "Exact"]])
    with pytest.raises(RecordsError, match=r"query_id '5' is not in query.csv"):
        load_wands(tmp_path / "b")
    _write_wands(tmp_path / "c", [["0", "0", "7", "Exact"], ["1", "0", "7", "Perfect"]])
    with pytest.raises(
        RecordsError, match=r"line 3: label 'Perfect' is not one of Exact, Partial, Irrelevant"
    ):
        load_wands(tmp_path / "c")
    (tmp_path / "c" / "query.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"query.csv"):
        load_wands(tmp_path / "c")


def test_crowdflower_variance_weights(tmp_path: Path) -> None:
    rows = [
        ["1", "mug", "Mug", "", "4", "0"],
        ["2", "mug", "Cup", "", "3", "0.471"],
        ["3", "mug", "X", "", "", ""],
    ]
    path = _write_crowdflower(tmp_path / "cf", rows)
    assert load_crowdflower(path).column("weight").null_count == 3  # off by default: unweighted
    w = load_crowdflower(path, variance_weights=True).column("weight").to_pylist()
    assert w[0] == 1.0 and w[1] == pytest.approx(1 / 1.471) and w[2] is None  # unrated: nothing to weigh by
    assert load_dataset("crowdflower", path, variance_weights=True).column("weight").to_pylist() == w
    bad = _write_crowdflower(
        tmp_path / "bad", [["1", "q", "t", "", "4", "0"], ["2", "q", "t", "", "4", "-1"]]
    )
    with pytest.raises(RecordsError, match=r"fold1.csv: line 3: relevance_variance '-1' should be"):
        load_crowdflower(bad, variance_weights=True)
    (tmp_path / "novar.csv").write_text("id,query,product_title\n1,q,t\n", encoding="utf-8")
    with pytest.raises(RecordsError, match=r"missing CrowdFlower column\(s\) relevance_variance"):
        load_crowdflower(tmp_path / "novar.csv", variance_weights=True)
    assert load_crowdflower(tmp_path / "novar.csv").num_rows == 1


@needs_crowdflower
def test_crowdflower_real_variance_weights() -> None:
    t = load_crowdflower(SHARED / "crowdflower", variance_weights=True)
    w = t.column("weight").to_numpy()
    # every real pair is rated; raters agree on a bit under half of them
    assert t.column("weight").null_count == 0 and 0.4 < w.min() < w.max() == 1.0
    assert 0.3 < (w == 1.0).mean() < 0.6


def test_convert_cli_with_variance_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pinrel.cli import main
    from pinrel.records import read_records

    path = _write_crowdflower(
        tmp_path / "cf", [["1", "mug", "Mug", "", "4", "0"], ["2", "mug", "Cup", "", "2", "1"]]
    )
    out = tmp_path / "cf.parquet"
    assert main(["data", "convert", "--dataset", "crowdflower", "--input", str(path), "--out", str(out)]) == 0
    assert read_records(out).column("weight").null_count == 2
    args = ["data", "convert", "--dataset", "crowdflower", "--input", str(path), "--out", str(out)]
    assert main([*args, "--variance-weights"]) == 0
    assert read_records(out).column("weight").to_pylist() == [1.0, 0.5]
    assert num_grades(read_records(out)) == 4
    before = out.read_bytes()
    for bad in (["--dataset", "wands"], []):
        cmd = ["data", "convert", *bad, "--input", str(path), "--out", str(out), "--variance-weights"]
        assert main(cmd) != 0
        assert "--variance-weights applies to --dataset crowdflower" in capsys.readouterr().err
    assert out.read_bytes() == before
