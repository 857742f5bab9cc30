"""pinrel.demo's bookkeeping: where your data goes, and a demo of other data starting its stages over.

The demo itself (every stage, ~13 min) is `make demo`; these check the parts that decide what it reuses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from pinrel.demo import STAGE_OUTPUTS, STAMP, prepare_data, stage_settings, start_over_if_new_data
from pinrel.records import make_records, write_records
from pinrel.testing import minilm_path


def rows(n_queries: int, tag: str = "") -> list[dict[str, Any]]:
    return [
        {
            "query": f"query {q}{tag}",
            "query_id": f"q{q}",
            "item_id": f"i{q}-{j}",
            "title": f"item {j} for query {q}",
            "label": 1 + (q + j) % 5,
        }
        for q in range(n_queries)
        for j in range(3)
    ]


def splits(root: Path, tag: str = "", grades: int = 5) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    d: dict[str, Any] = {"grades": grades}
    for i, name in enumerate(("train", "dev", "test")):
        d[name] = write_records(
            make_records(rows(2 + i, tag if name == "test" else "")), root / f"{name}.parquet"
        )
    return d


def stage_outputs(work: Path) -> None:
    for name in STAGE_OUTPUTS:
        if name.endswith(".parquet"):
            (work / name).write_bytes(b"pairs")
        else:
            (work / name).mkdir(parents=True)
            (work / name / "part").write_text("x")


def test_same_data_keeps_the_stages_other_data_starts_them_over(tmp_path: Path) -> None:
    work = tmp_path / "demo-out"
    stage_outputs(work)
    d = splits(work / "data")
    # No stamp yet (a first demo, or one from before stamps): nothing is cleared.
    assert start_over_if_new_data(work, d) is False
    assert all((work / name).exists() for name in STAGE_OUTPUTS)
    stamp = json.loads((work / STAMP).read_text())
    assert set(stamp) == {"train", "dev", "test", "grades"}
    # The same records written again: the stages resume.
    d = splits(work / "data")
    assert start_over_if_new_data(work, d) is False
    assert all((work / name).exists() for name in STAGE_OUTPUTS)
    # One held-out query changed: every stage output goes, the data stays.
    d = splits(work / "data", tag=" changed")
    assert start_over_if_new_data(work, d) is True
    assert not any((work / name).exists() for name in STAGE_OUTPUTS)
    assert all(Path(d[name]).is_file() for name in ("train", "dev", "test"))
    assert json.loads((work / STAMP).read_text())["test"] != stamp["test"]
    # Another grade scale on the same records is other data too.
    stage_outputs(work)
    assert start_over_if_new_data(work, {**d, "grades": 4}) is True
    assert not (work / "teacher").exists()
    # Other stage settings start over too, and so does a stamp from before settings were stamped (an
    # upgrade may pool the same base model otherwise: its teacher would refuse to resume).
    stage_outputs(work)
    assert start_over_if_new_data(work, {**d, "grades": 4}, {"teacher_lr": 1e-4}) is True
    stage_outputs(work)
    assert start_over_if_new_data(work, {**d, "grades": 4}, {"teacher_lr": 1e-4}) is False
    assert start_over_if_new_data(work, {**d, "grades": 4}, {"teacher_lr": 2e-4}) is True


def test_stage_settings_say_how_the_teacher_pools(tmp_path: Path) -> None:
    args = argparse.Namespace(
        teacher_model=None,
        teacher_epochs=2,
        teacher_lr=1e-4,
        candidates_k=12,
        negatives=5,
        distill_epochs=8,
        workers=2,
        seed=0,
    )
    settings = stage_settings(args)
    assert settings["teacher_sentence_pooling"] == ("mean" if minilm_path() is not None else None)
    assert settings["workers"] == 2 and settings["teacher_lr"] == 1e-4
    plain = stage_settings(argparse.Namespace(**{**vars(args), "teacher_model": str(tmp_path)}))
    assert plain["teacher_sentence_pooling"] is None and plain["teacher_model"] == str(tmp_path)


def test_your_records_do_not_land_in_the_samples_folder(tmp_path: Path) -> None:
    records = tmp_path / "mine.parquet"
    write_records(make_records(rows(30)), records)
    work = tmp_path / "demo-out"
    d = prepare_data(argparse.Namespace(data=str(records), grades=5, seed=0), work)
    # The sample's folder holds complete sample files that a later `make demo` would reuse as such.
    assert not (work / "data").exists()
    assert {Path(d[k]).parent.name for k in ("train", "dev", "test", "catalog", "queries")} == {"user-data"}
    assert d["grades"] == 5 and d["source"] == str(records)


def test_records_without_item_ids_are_refused(tmp_path: Path) -> None:
    records = tmp_path / "mine.parquet"
    write_records(make_records([{k: v for k, v in r.items() if k != "item_id"} for r in rows(30)]), records)
    with pytest.raises(ValueError, match="item_id"):
        prepare_data(argparse.Namespace(data=str(records), grades=5, seed=0), tmp_path / "demo-out")
