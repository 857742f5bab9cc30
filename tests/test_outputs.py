"""Output paths never destroy what is already there: an output that is an input, a directory that holds
someone else's files, two outputs that are one file. Each refusal comes before any work and leaves
every existing byte as it was."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinrel.cli import main
from pinrel.predictor import check_model_out


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A user's folder: queries, a catalog, records, a raw CSV, notes, a foreign model folder."""
    pq.write_table(pa.table({"query": ["red mug", "desk lamp"]}), tmp_path / "queries.parquet")
    pq.write_table(
        pa.table({"item_id": ["a", "b"], "title": ["Red mug", "Lamp"]}), tmp_path / "catalog.parquet"
    )
    rows = [
        {"query": q, "title": t, "label": g} for q, t, g in [("red mug", "Red mug", 3), ("lamp", "Lamp", 2)]
    ]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "notes" / "metrics.json").write_text('{"accuracy": 0.9}', encoding="utf-8")
    (tmp_path / "proj" / "model").mkdir(parents=True)
    (tmp_path / "proj" / "model" / "weights.bin").write_bytes(b"\x00" * 16)
    (tmp_path / "proj" / "pinrel.json").write_text('{"kind": "student"}', encoding="utf-8")
    return tmp_path


# The start of every candidates command below: queries and a catalog in the user's folder.
CANDIDATES = ["candidates", "--queries", "{t}/queries.parquet", "--catalog", "{t}/catalog.parquet"]
SPLIT = ["data", "split", "--input", "{t}/records.jsonl", "--fractions", "0.5", "0.5", "--out"]
TEACHER = ["teacher", "train", "--model", "m", "--train", "{t}/records.jsonl", "--out"]
EVAL = ["eval", "--model", "bm25", "--data", "{t}/records.jsonl", "--report"]

CASES = {
    "candidates over its queries": (
        [*CANDIDATES, "--out", "{t}/queries.parquet"],
        "is also the queries input",
    ),
    "candidates over its catalog": (
        [*CANDIDATES, "--out", "{t}/catalog.parquet"],
        "is also the catalog input",
    ),
    "candidates over an excluded set": (
        [*CANDIDATES, "--exclude", "{t}/records.jsonl", "--out", "{t}/records.jsonl"],
        "is also the exclude input",
    ),
    "candidates into a directory": ([*CANDIDATES, "--out", "{t}/notes"], "is a directory"),
    "convert over its input": (
        ["data", "convert", "--input", "{t}/records.jsonl", "--out", "{t}/./records.jsonl"],
        "is also the input input",
    ),
    "split over its input": ([*SPLIT, "{t}/a.parquet", "{t}/records.jsonl"], "is also the input input"),
    "split into one file twice": ([*SPLIT, "{t}/a.parquet", "{t}/a.parquet"], "are the same file"),
    "sample over the user's files": (
        ["data", "sample", "--out", "{t}/notes", "--items", "50"],
        "holds no pinrel sample",
    ),
    "sample onto a file": (
        ["data", "sample", "--out", "{t}/queries.parquet"],
        "exists and is not a directory",
    ),
    "eval report over foreign metrics": (
        [*EVAL, "{t}/notes"],
        "is not empty (notes.txt) and holds no pinrel report",
    ),
    "eval report onto a file": ([*EVAL, "{t}/queries.parquet"], "exists and is not a directory"),
    "distill into a foreign model dir": (
        ["distill", "--labels", "{t}/notes", "--out", "{t}/proj/model"],
        "is not empty (weights.bin) and holds no pinrel student",
    ),
    "teacher into another kind of model": (
        [*TEACHER, "{t}/proj"],
        "already holds a pinrel student; writing a teacher there would replace it",
    ),
    "teacher into the user's files": (
        [*TEACHER, "{t}/notes"],
        "is not empty (metrics.json, notes.txt) and holds no pinrel teacher",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_never_replace_what_is_there(
    tree: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    argv, message = CASES[case]
    before = _snapshot(tree)
    assert main([a.replace("{t}", str(tree)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert _snapshot(tree) == before


def test_a_model_dir_may_be_new_empty_its_own_kind_or_a_run_in_progress(tmp_path: Path) -> None:
    check_model_out(tmp_path / "new", "teacher", "_ray")
    (tmp_path / "empty").mkdir()
    check_model_out(tmp_path / "empty", "teacher", "_ray")
    own = tmp_path / "own"
    own.mkdir()
    (own / "pinrel.json").write_text('{"kind": "teacher"}', encoding="utf-8")
    (own / "README.md").write_text("kept", encoding="utf-8")
    check_model_out(own, "teacher", "_ray")
    running = tmp_path / "running"
    (running / "_ray").mkdir(parents=True)
    check_model_out(running, "teacher", "_ray")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "pinrel.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a pinrel\.json that is not pinrel's"):
        check_model_out(tmp_path / "bad", "teacher", "_ray")


def test_label_refuses_a_folder_of_something_else(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before it writes even its lock file: a dataset's manifest.json is not a labels manifest, and a
    folder of the user's files is not a labels folder."""
    import pinrel
    from pinrel.records import make_records
    from pinrel.testing import tiny_bert

    teacher = tree / "teacher"
    tiny_bert(teacher / "model", ["red mug", "lamp"], grades=4)
    manifest = {
        "kind": "teacher",
        "grades": 4,
        "assembly_spec": pinrel.AssemblySpec().to_dict(),
        "max_length": 32,
    }
    (teacher / "pinrel.json").write_text(json.dumps(manifest), encoding="utf-8")
    pq.write_table(make_records([{"query": "red mug", "title": "Red mug"}], grades=4), tree / "pairs.parquet")
    data = tree / "data"
    data.mkdir()
    (data / "manifest.json").write_text('{"name": "pinrel-sample"}', encoding="utf-8")
    before = _snapshot(tree)
    for out, message in (
        (data, "holds a manifest.json of kind None, not pinrel labels"),
        (tree / "notes", "is not empty (metrics.json, notes.txt) and holds no pinrel labels"),
    ):
        argv = ["label", "--pairs", str(tree / "pairs.parquet"), "--teacher", str(teacher), "--out", str(out)]
        assert main([*argv, "--backend", "hf"]) == 2
        err = capsys.readouterr().err
        assert message in err, err
    assert _snapshot(tree) == before
