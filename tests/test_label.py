"""Pseudo-labeling: shard contents, in-process vs Ray parity, kill-and-resume, refusals, embeddings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pinrel
from pinrel.label import (
    LabelError,
    label_pairs,
    label_pairs_ray,
    labels_schema,
    read_labels,
    shard_path,
)
from pinrel.records import SCHEMA, make_records, read_records, with_grades

SHARD = 100
GRADES = 5


def _probs(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("probs").combine_chunks().flatten()).reshape(table.num_rows, -1)


def _make_teacher(root: Path, texts: list[str], seed: int = 0) -> Path:
    from pinrel.testing import tiny_bert

    tiny_bert(root / "model", texts, grades=GRADES, seed=seed)
    manifest = {
        "kind": "teacher",
        "grades": GRADES,
        "assembly_spec": pinrel.AssemblySpec().to_dict(),
        "max_length": 32,
        "base_model": "tiny-bert",
    }
    (root / "pinrel.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pinrel.datasets import sample

    root = tmp_path_factory.mktemp("label")
    sample.generate(root / "sample", seed=3, n_items=400, n_queries=60, n_labeled=600, n_unlabeled=2000)
    labeled = read_records(root / "sample" / "train.parquet")
    unlabeled = read_records(root / "sample" / "unlabeled.parquet")
    rows = labeled.to_pylist() + unlabeled.to_pylist()
    # Bad input the labeler must survive: items without any text, and one far over the text budget.
    for i in (3, 4):
        rows[i].update(
            title="", description="", captions=[], boards=[], queries=[], link_title="", link_description=""
        )
    rows[5]["description"] = "very long text " * 500
    pairs = with_grades(make_records(rows, grades=GRADES), GRADES)
    pq.write_table(pairs, root / "pairs.parquet", row_group_size=700)  # groups straddle shards
    texts = pinrel.assemble_pairs(pairs.column("query").to_pylist()[:1500], pairs.slice(0, 1500))
    teacher = _make_teacher(root / "teacher", texts)
    return {"root": root, "pairs": root / "pairs.parquet", "teacher": teacher, "sample": root / "sample"}


@pytest.fixture(scope="module")
def reference(data: dict[str, Path]) -> Path:
    out = data["root"] / "reference"
    label_pairs(data["pairs"], data["teacher"], out, backend="hf", shard_size=SHARD, progress=False)
    return out


def test_shards_hold_soft_labels_and_records(data: dict[str, Path], reference: Path) -> None:
    pairs = read_records(data["pairs"])
    n = pairs.num_rows
    assert sorted(p.name for p in reference.glob("part-*.parquet")) == [
        f"part-{i:05d}.parquet" for i in range(-(-n // SHARD))
    ]
    first = pq.read_table(shard_path(reference, 0))
    assert first.schema.equals(labels_schema(GRADES), check_metadata=False)
    assert first.num_rows == SHARD
    labels = read_labels(reference)
    assert labels.column("pair_id").to_pylist() == list(range(n))
    # The student trains from the shards alone: every record field, human labels included, is carried.
    assert labels.select(SCHEMA.names).to_pylist() == pairs.to_pylist()
    assert labels.column("label").null_count < n
    probs = _probs(labels)
    assert probs.shape == (n, GRADES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels.column("grade").to_numpy(), probs.argmax(axis=1) + 1)
    expected = probs.astype(np.float64) @ np.arange(1, GRADES + 1)
    np.testing.assert_allclose(labels.column("expected_grade").to_numpy(), expected, rtol=1e-5)
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["grades"] == GRADES and manifest["shard_size"] == SHARD and manifest["rows"] == n


def test_summary_counts_bad_input_and_rerun_is_a_no_op(data: dict[str, Path], reference: Path) -> None:
    out = data["root"] / "counts"
    shutil.copytree(reference, out)
    for i in (0, 1):
        shard_path(out, i).unlink()  # relabel the first two shards, which hold the odd pairs
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    with pytest.warns(UserWarning, match="2 pairs have an item with no text"):
        summary = label_pairs(
            data["pairs"], data["teacher"], out, backend="hf", shard_size=SHARD, progress=False
        )
    assert (summary.shards_written, summary.pairs_labeled) == (2, 2 * SHARD)
    assert summary.empty_items == 2 and summary.truncated >= 1
    assert summary.tokens > 0 and 0.0 <= summary.padding_waste < 1.0
    assert "pairs/s" in summary.line() and "padding waste" in summary.line()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet") if p.name in kept} == kept
    again = label_pairs(data["pairs"], data["teacher"], out, backend="hf", shard_size=SHARD, progress=False)
    assert again.shards_written == 0 and again.shards_skipped == again.shards


def test_kill_and_resume_gives_the_uninterrupted_result(data: dict[str, Path], reference: Path) -> None:
    out = data["root"] / "killed"
    cmd = [
        sys.executable,
        "-m",
        "pinrel.cli",
        "label",
        "--pairs",
        str(data["pairs"]),
        "--teacher",
        str(data["teacher"]),
        "--out",
        str(out),
        "--backend",
        "hf",
        "--shard-size",
        str(SHARD),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    total = -(-read_records(data["pairs"]).num_rows // SHARD)
    assert 1 <= len(done) < total, "the run should have been killed midway"

    summary = label_pairs(data["pairs"], data["teacher"], out, backend="hf", shard_size=SHARD, progress=False)
    assert summary.shards_skipped == len(done) and summary.shards_written == total - len(done)
    assert {n: shard_path(out, int(n[5:10])).stat().st_mtime_ns for n in done} == done
    assert not list(out.glob(".part-*")), "temp files of the killed run are cleaned up"
    got, want = read_labels(out), read_labels(reference)
    assert got.column("pair_id").to_pylist() == want.column("pair_id").to_pylist()
    np.testing.assert_allclose(_probs(got), _probs(want), atol=1e-6)
    assert got.select(SCHEMA.names).equals(want.select(SCHEMA.names))


@pytest.fixture(scope="module")
def ray_session() -> object:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_data_path_writes_the_same_shards(
    data: dict[str, Path], reference: Path, ray_session: object
) -> None:
    out = data["root"] / "ray"
    shutil.copytree(reference, out)
    for i in range(1, 6):
        shard_path(out, i).unlink()
    summary = label_pairs_ray(
        data["pairs"], data["teacher"], out, actors=2, backend="hf", shard_size=SHARD, progress=False
    )
    assert summary.shards_written == 5 and summary.pairs_labeled == 5 * SHARD
    got, want = read_labels(out), read_labels(reference)
    assert got.column("pair_id").equals(want.column("pair_id"))
    np.testing.assert_allclose(_probs(got), _probs(want), atol=1e-6)
    assert got.select(SCHEMA.names).equals(want.select(SCHEMA.names))
    # This cluster has no GPU, so asking for none is no mistake to warn about.
    assert not any("GPU" in w for w in summary.warnings)


def test_idle_gpu_warning() -> None:
    from pinrel.label import _idle_gpu_warning

    assert "has 2 GPU(s) but gpus_per_actor is 0" in (_idle_gpu_warning(2.0, 0.0) or "")
    assert _idle_gpu_warning(2.0, 0.5) is None
    assert _idle_gpu_warning(0.0, 0.0) is None


def _assert_refused(match: str, *args: object, **kw: object) -> None:
    with pytest.raises(LabelError, match=match):
        label_pairs(*args, backend="hf", progress=False, **kw)  # type: ignore[arg-type]


def test_refuses_another_teacher_pairs_or_shard_size(data: dict[str, Path], reference: Path) -> None:
    before = {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()}
    other = data["root"] / "other-teacher"
    shutil.copytree(data["teacher"], other)
    manifest = json.loads((other / "pinrel.json").read_text())
    (other / "pinrel.json").write_text(json.dumps({**manifest, "base_model": "retrained"}))
    _assert_refused("another teacher", data["pairs"], other, reference, shard_size=SHARD)
    fewer = data["root"] / "fewer.parquet"
    pq.write_table(pq.read_table(data["pairs"]).slice(0, 500), fewer)
    _assert_refused("another pairs file", fewer, data["teacher"], reference, shard_size=SHARD)
    _assert_refused("shard size is 100, not 50", data["pairs"], data["teacher"], reference, shard_size=50)
    _assert_refused("grades 1..5", data["pairs"], data["teacher"], reference, shard_size=SHARD, grades=3)
    assert {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()} == before


def test_refuses_unknown_or_damaged_output(data: dict[str, Path], reference: Path) -> None:
    stray = data["root"] / "stray"
    stray.mkdir()
    shutil.copy(shard_path(reference, 0), stray / "part-00000.parquet")
    _assert_refused("no manifest.json", data["pairs"], data["teacher"], stray, shard_size=SHARD)
    damaged = data["root"] / "damaged"
    shutil.copytree(reference, damaged)
    pq.write_table(pq.read_table(shard_path(reference, 1)).slice(0, 1), shard_path(damaged, 1))
    _assert_refused("has 1 rows, expected 100", data["pairs"], data["teacher"], damaged, shard_size=SHARD)
    assert pq.read_metadata(shard_path(damaged, 1)).num_rows == 1
    afile = data["root"] / "a-file"
    afile.write_text("x")
    _assert_refused("not a directory", data["pairs"], data["teacher"], afile, shard_size=SHARD)
    with pytest.raises(LabelError, match=r"no manifest\.json"):
        read_labels(stray)
    (stray / "manifest.json").write_text("[]")
    with pytest.raises(LabelError, match="expected a JSON object, got list"):
        read_labels(stray)
    partial = data["root"] / "partial"
    shutil.copytree(reference, partial)
    shard_path(partial, 3).unlink()
    with pytest.raises(LabelError, match="1 of 25 shards missing"):
        read_labels(partial)
    assert read_labels(partial, allow_partial=True).num_rows == read_labels(reference).num_rows - SHARD


def test_refuses_pairs_on_another_grade_scale(data: dict[str, Path]) -> None:
    three = data["root"] / "three.parquet"
    table = with_grades(read_records(data["pairs"]).slice(0, 50), 3)
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.nulls(50, pa.int32()))
    pq.write_table(table, three)
    _assert_refused("3-point scale", three, data["teacher"], data["root"] / "three-out", shard_size=SHARD)


def test_bad_arguments_name_what_is_wrong(data: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="shard_size"):
        label_pairs(data["pairs"], data["teacher"], data["root"] / "x", shard_size=0, progress=False)
    with pytest.raises(ValueError, match="max_tokens"):
        label_pairs(data["pairs"], data["teacher"], data["root"] / "x", max_tokens=-1, progress=False)
    with pytest.raises(ValueError, match="backend"):
        label_pairs(data["pairs"], data["teacher"], data["root"] / "x", backend="tpu", progress=False)
    with pytest.raises(FileNotFoundError, match="pairs"):
        label_pairs(data["root"] / "nope.parquet", data["teacher"], data["root"] / "x", progress=False)
    student = data["root"] / "student"
    student.mkdir()
    (student / "pinrel.json").write_text(json.dumps({"kind": "student", "grades": GRADES}))
    with pytest.raises(ValueError, match="not a teacher"):
        label_pairs(data["pairs"], student, data["root"] / "x", progress=False)


def test_cli_reports_a_grade_mismatch_in_one_line(data: dict[str, Path]) -> None:
    from pinrel.cli import main

    out = data["root"] / "cli-out"
    code = main(
        [
            "label",
            "--pairs",
            str(data["pairs"]),
            "--teacher",
            str(data["teacher"]),
            "--out",
            str(out),
            "--grades",
            "4",
            "--quiet",
        ]
    )
    assert code == 2 and not out.exists()


@pytest.fixture(scope="module")
def ensemble(data: dict[str, Path]) -> dict[str, Path]:
    """A second teacher (other weights, same K and assembly) and a small pairs file to label."""
    root = data["root"] / "ensemble"
    small = root / "small.parquet"
    small.parent.mkdir()
    pq.write_table(pq.read_table(data["pairs"]).slice(0, 3 * SHARD - 30), small)
    pairs = read_records(small)
    texts = pinrel.assemble_pairs(pairs.column("query").to_pylist(), pairs)
    second = _make_teacher(root / "teacher-b", texts, seed=1)
    singles = {}
    for name, teacher in (("a", data["teacher"]), ("b", second)):
        singles[name] = root / f"labels-{name}"
        label_pairs(small, teacher, singles[name], backend="hf", shard_size=SHARD, progress=False)
    return {"root": root, "pairs": small, "second": second, **singles}


def test_an_ensemble_labels_with_the_mean_of_its_teachers(
    data: dict[str, Path], ensemble: dict[str, Path]
) -> None:
    from pinrel.cli import main

    out = ensemble["root"] / "labels-ab"
    argv = ["label", "--pairs", str(ensemble["pairs"]), "--out", str(out), "--backend", "hf"]
    argv += ["--teacher", str(data["teacher"]), "--teacher", str(ensemble["second"]), "--quiet"]
    assert main([*argv, "--shard-size", str(SHARD)]) == 0
    a_probs, b_probs = (_probs(read_labels(ensemble[k])) for k in ("a", "b"))
    ab = read_labels(out)
    assert np.abs(a_probs - b_probs).max() > 1e-3  # two different teachers, or the test proves nothing
    np.testing.assert_allclose(_probs(ab), (a_probs + b_probs) / 2, atol=1e-6)
    np.testing.assert_array_equal(ab.column("grade").to_numpy(), _probs(ab).argmax(axis=1) + 1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["teacher"]["members"]) == 2
    # The same teachers in the other order are the same ensemble: a re-run resumes (nothing to do).
    summary = label_pairs(
        ensemble["pairs"], [ensemble["second"], data["teacher"]], out, shard_size=SHARD, progress=False
    )
    assert summary.shards_written == 0
    # An ensemble is not either of its teachers, and either teacher alone is not the ensemble.
    _assert_refused("another teacher", ensemble["pairs"], data["teacher"], out, shard_size=SHARD)
    _assert_refused(
        "another teacher",
        ensemble["pairs"],
        [data["teacher"], ensemble["second"]],
        ensemble["a"],
        shard_size=SHARD,
    )


def test_ensemble_on_ray_writes_the_same_shards(
    data: dict[str, Path], ensemble: dict[str, Path], ray_session: object
) -> None:
    out = ensemble["root"] / "labels-ab-ray"
    teachers = [data["teacher"], ensemble["second"]]
    summary = label_pairs_ray(
        ensemble["pairs"], teachers, out, actors=1, backend="hf", shard_size=SHARD, progress=False
    )
    assert summary.shards_written == 3
    want = (_probs(read_labels(ensemble["a"])) + _probs(read_labels(ensemble["b"]))) / 2
    np.testing.assert_allclose(_probs(read_labels(out)), want, atol=1e-6)


def test_the_ray_job_entrypoint_takes_a_list_of_teachers_from_its_yaml(
    data: dict[str, Path], ensemble: dict[str, Path], ray_session: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    import yaml

    entry = Path(__file__).resolve().parent.parent / "train" / "label.py"
    spec = importlib.util.spec_from_file_location("train_label_entry", entry)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = ensemble["root"] / "labels-ab-job"
    config = ensemble["root"] / "label.yaml"
    settings = {
        "pairs": str(ensemble["pairs"]),
        "teacher": [str(data["teacher"]), str(ensemble["second"])],
        "out": str(out),
        "backend": "hf",
        "actors": 1,
        "gpus_per_actor": 0,
        "shard_size": SHARD,
    }
    config.write_text(yaml.safe_dump(settings))
    assert module.main(["--config", str(config)]) == 0
    want = (_probs(read_labels(ensemble["a"])) + _probs(read_labels(ensemble["b"]))) / 2
    np.testing.assert_allclose(_probs(read_labels(out)), want, atol=1e-6)
    capsys.readouterr()
    config.write_text(yaml.safe_dump({**settings, "teachers": settings["teacher"]}))
    assert module.main(["--config", str(config)]) == 2
    assert "pinrel label: error: " in capsys.readouterr().err
    # A fractional actor count is refused, not truncated; `pinrel label` reads the same file.
    config.write_text(yaml.safe_dump({**settings, "actors": 2.7}))
    assert module.main(["--config", str(config)]) == 2
    assert "actors" in capsys.readouterr().err
    from pinrel.cli import main

    assert main(["label", "--ray", "--config", str(config), "--actors", "1", "--quiet"]) == 0


def test_an_ensemble_refuses_teachers_that_do_not_fit_together(
    data: dict[str, Path], ensemble: dict[str, Path]
) -> None:
    root, pairs = ensemble["root"], ensemble["pairs"]
    other_spec = root / "teacher-other-spec"
    shutil.copytree(ensemble["second"], other_spec)
    manifest = json.loads((other_spec / "pinrel.json").read_text())
    manifest["assembly_spec"] = pinrel.AssemblySpec(max_chars=100).to_dict()
    (other_spec / "pinrel.json").write_text(json.dumps(manifest))
    _assert_refused(
        "assemble pair text differently", pairs, [data["teacher"], other_spec], root / "x", shard_size=SHARD
    )
    other_k = root / "teacher-other-k"
    shutil.copytree(ensemble["second"], other_k)
    (other_k / "pinrel.json").write_text(json.dumps({**manifest, "grades": 3}))
    _assert_refused(r"grades 1\.\.5 but .* grades 1\.\.3", pairs, [data["teacher"], other_k], root / "x")
    with pytest.raises(ValueError, match="given twice"):
        label_pairs(pairs, [data["teacher"], data["teacher"]], root / "x", progress=False)
    with pytest.raises(ValueError, match="non-empty list"):
        label_pairs(pairs, [], root / "x", progress=False)
    with pytest.raises(TypeError, match="expected a path, got int"):
        label_pairs(pairs, [data["teacher"], 3], root / "x", progress=False)  # type: ignore[list-item]
    assert not (root / "x").exists()


def test_embed_writes_parquet_and_npy(data: dict[str, Path]) -> None:
    from pinrel.embed import embed_file

    queries = data["sample"] / "queries.parquet"
    out = data["root"] / "q.parquet"
    s = embed_file(data["teacher"], queries, out, progress=False)
    table = pq.read_table(out)
    assert s.column == "query" and s.id_column == "query_id"
    assert table.column("id").to_pylist() == pq.read_table(queries).column("query_id").to_pylist()
    emb = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(table.num_rows, -1)
    assert emb.shape == (table.num_rows, s.dim) and np.isfinite(emb).all()
    items = embed_file(
        data["teacher"],
        data["sample"] / "catalog.parquet",
        data["root"] / "c.npy",
        column="item",
        progress=False,
    )
    mat = np.load(data["root"] / "c.npy")
    assert mat.shape == (400, items.dim) and items.id_column == "item_id"
    with pytest.raises(ValueError, match="'nope' is not in the texts file"):
        embed_file(data["teacher"], queries, data["root"] / "x.parquet", column="nope", progress=False)
    with pytest.raises(ValueError, match=r"\.parquet or \.npy"):
        embed_file(data["teacher"], queries, data["root"] / "x.csv", progress=False)
