"""Distillation on Ray Train: real 2-worker runs, a killed worker, manual resume, `ray job submit`.

The label shards are synthetic and written here with pyarrow (the columns `pinrel label` writes), so
these tests do not depend on the labeler: the teacher's soft labels are a smooth function of how
many query words the title contains, which the student can learn from its match features.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import pinrel
from pinrel import distill as D
from pinrel.distill import DistillConfig, distill, distill_loss, load_config, loop, scan_labels
from pinrel.distill import shards as label_shards
from pinrel.distill import train as driver
from pinrel.student import Scorer, StudentConfig, StudentModel, featurize

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
GRADES = 5

LABEL_SCHEMA = pa.schema(
    [
        ("pair_id", pa.int64()),
        ("query", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("captions", pa.list_(pa.string())),
        ("boards", pa.list_(pa.string())),
        ("queries", pa.list_(pa.string())),
        ("link_title", pa.string()),
        ("link_description", pa.string()),
        ("lang", pa.string()),
        ("query_id", pa.string()),
        ("item_id", pa.string()),
        ("label", pa.int32()),
        ("probs", pa.list_(pa.float32())),
        ("grade", pa.int32()),
        ("expected_grade", pa.float32()),
    ]
)

# Small everything, so a Ray Train run on two CPUs takes seconds per epoch.
TINY: dict[str, Any] = {
    "workers": 2,
    "epochs": 3,
    "batch_size": 64,
    "lr": 0.01,
    "dev": 0.2,
    "hasher": {"n_features": 2**14},
    "student": {"embed_dim": 16, "hidden": [64, 32], "dropout": 0.0},
}


def _teacher_probs(overlap: float, grades: int) -> np.ndarray:
    center = 1 + (grades - 1) * overlap
    g = np.arange(1, grades + 1)
    p = np.exp(-((g - center) ** 2) / 0.5)
    return (p / p.sum()).astype(np.float32)


def label_rows(n_queries: int, per_query: int, grades: int = GRADES, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of label shards: a title shares 0..3 of its query's 3 words, the teacher grades by that."""
    rng = np.random.default_rng(seed)
    latin = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    cyrillic = [chr(c) for c in range(0x430, 0x44F)]
    vocab = ["".join(rng.choice(latin if i % 4 else cyrillic, size=rng.integers(3, 8))) for i in range(3000)]
    rows: list[dict[str, Any]] = []
    for qi in range(n_queries):
        words = list(rng.choice(vocab, size=3, replace=False))
        for j in range(per_query):
            k = int(rng.integers(0, 4))
            title = [*rng.choice(words, size=k, replace=False), *rng.choice(vocab, size=4 - k)]
            rng.shuffle(title)
            p = _teacher_probs(k / 3, grades)
            grade = int(p.argmax()) + 1
            rows.append(
                {
                    "pair_id": len(rows),
                    "query": " ".join(words),
                    "title": " ".join(title),
                    "description": "",
                    "captions": [],
                    "boards": [],
                    "queries": [],
                    "link_title": "",
                    "link_description": "",
                    "lang": "ru" if qi % 4 == 0 else "en",
                    "query_id": f"q{qi}",
                    "item_id": f"i{qi}-{j}",
                    "label": grade if rng.random() < 0.3 else None,
                    "probs": p.tolist(),
                    "grade": grade,
                    "expected_grade": float(p @ np.arange(1, grades + 1)),
                }
            )
    return rows


def write_shards(
    out: Path,
    rows: list[dict[str, Any]],
    shards: int = 3,
    grades: int = GRADES,
    schema: pa.Schema = LABEL_SCHEMA,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    per = -(-table.num_rows // shards)
    for i in range(shards):
        pq.write_table(table.slice(i * per, per), out / f"part-{i:05d}.parquet")
    (out / "manifest.json").write_text(
        json.dumps({"grades": grades, "teacher": "synthetic", "rows": len(rows)})
    )
    return out


@pytest.fixture(scope="module")
def labels_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("labels"), label_rows(200, 10))


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    # address="local": always a private instance, never another `ray start` cluster on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(ray_local: None, labels_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("run") / "student"
    started = time.monotonic()
    summary = distill(labels_dir, out, TINY)
    summary["seconds"] = time.monotonic() - started
    summary["out"] = out
    return summary


def _table(labels: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(f) for f in sorted(labels.glob("*.parquet")))


def _checkpoint_of_epoch(out: Path, epoch: int) -> Path:
    # Ray keeps its checkpoint_manager_snapshot.json beside the checkpoint_* folders.
    for d in (out / "_ray" / "distill").glob("checkpoint_*"):
        if d.is_dir() and json.loads((d / "state.json").read_text())["epoch"] == epoch:
            return d
    raise AssertionError(f"no checkpoint of epoch {epoch} kept in {out}")


# ------------------------------------------------------------------------------------ config (fast)


def test_default_yaml_matches_the_code_defaults() -> None:
    cfg = load_config(REPO / "train" / "distill.yaml")
    assert dataclasses.replace(cfg, labels=None, out=None) == DistillConfig()


def test_config_rejects_unknown_and_bad_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epochz'\]"):
        DistillConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="student: unknown key"):
        DistillConfig.from_dict({"student": {"layers": 2}})
    with pytest.raises(ValueError, match="unknown field"):
        DistillConfig.from_dict({"hasher": {"ngrams": 2}})
    with pytest.raises(ValueError, match="spec: unknown key"):
        DistillConfig.from_dict({"assembly": {"max_len": 2}})
    for bad in (
        {"workers": 0},
        {"lr": -1.0},
        {"temperature": 0},
        {"dev": 1.5},
        {"epochs": 1.5},
        {"gpu": "yes"},
        {"keep_best_by": "dev_accuracy"},
        {"keep_best_by": 1},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DistillConfig.from_dict(bad)
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 2\nbatchsize: 3\n")
    with pytest.raises(ValueError, match=r"c\.yaml: config: unknown key\(s\) \['batchsize'\]"):
        load_config(f)
    # a partial section merges over the defaults
    assert DistillConfig.from_dict({"hasher": {"n_features": 64}}).hasher["char_ngrams"] == [3, 5]


# ------------------------------------------------------------------------------- bad inputs (fast)


def _bad(tmp_path: Path, rows: list[dict[str, Any]], **kw: Any) -> Path:
    return write_shards(tmp_path / "bad", rows, shards=2, **kw)


def test_bad_label_dirs_fail_before_ray_starts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        distill(tmp_path / "missing", tmp_path / "out", TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no label shards \(\*\.parquet\)"):
        distill(tmp_path / "empty", tmp_path / "out", TINY)
    empty_shards = write_shards(tmp_path / "zero", [], shards=1)
    with pytest.raises(ValueError, match="hold no rows"):
        distill(empty_shards, tmp_path / "out", TINY)
    assert not (tmp_path / "out").exists()


def test_wrong_k_is_refused(tmp_path: Path) -> None:
    rows = label_rows(5, 4)
    with pytest.raises(ValueError, match=r"part-00000\.parquet: row 0: probs has 5 values, expected K=3"):
        scan_labels(_bad(tmp_path, rows, grades=3))
    mixed = label_rows(5, 4) + label_rows(5, 4, grades=4)
    with pytest.raises(ValueError, match=r"part-00001\.parquet: row \d+: probs has 4 values, expected K=5"):
        scan_labels(write_shards(tmp_path / "mixed", mixed, shards=2))


def test_labeler_shards_with_fixed_size_probs(tmp_path: Path) -> None:
    """`pinrel label` writes probs as fixed_size_list<float32, K> and counts its shards."""
    fixed = pa.field("probs", pa.list_(pa.float32(), GRADES))
    schema = pa.schema([fixed if f.name == "probs" else f for f in LABEL_SCHEMA])
    d = write_shards(tmp_path / "fixed", label_rows(6, 5), shards=3, schema=schema)
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**manifest, "shards": 3}))
    labels = scan_labels(d)
    assert (labels.grades, labels.rows) == (GRADES, 30)
    student = StudentConfig(grades=GRADES, n_features=2**10, embed_dim=4, hidden=(8,))
    data = loop._table_data(
        pq.read_table(labels.files[0]), pinrel.FeatureHasher(n_features=2**10), None, student
    )
    assert data.probs is not None and data.probs.shape == (10, GRADES)
    # Only the counted shards are labels: a dev set copied into the folder would be trained on.
    shutil.copy(d / "part-00000.parquet", d / "dev.parquet")
    with pytest.raises(ValueError, match=r"Parquet files besides its 3 shards \(dev\.parquet\)"):
        scan_labels(d)
    (d / "dev.parquet").unlink()
    (d / "part-00001.parquet").unlink()
    with pytest.raises(ValueError, match=r"unfinished: 1 of 3 shards missing \(first: part-00001"):
        scan_labels(d)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "expected a JSON object, got list"),
        ("[" * 100_000, "not valid JSON"),
        ('{"shards": "3"}', "'shards' should be an integer >= 0, got '3'"),
        ('{"grades": 1}', "'grades'"),
        ('{"kind": "teacher"}', "kind is 'teacher'; this is not a labels folder"),
    ],
)
def test_a_bad_labels_manifest_is_named(tmp_path: Path, text: str, message: str) -> None:
    d = write_shards(tmp_path / "labels", label_rows(6, 5), shards=1)
    (d / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        scan_labels(d)


def test_nan_probs_are_refused(tmp_path: Path) -> None:
    rows = label_rows(5, 4)
    rows[7]["probs"] = [float("nan"), 0.5, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"row 7: probs .* is not a probability vector"):
        scan_labels(write_shards(tmp_path / "nan", rows, shards=1))
    rows[7]["probs"] = [0.9, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="not summing to 1"):
        scan_labels(write_shards(tmp_path / "sum", rows, shards=1))


def test_other_bad_columns_are_refused(tmp_path: Path) -> None:
    rows = label_rows(5, 4)
    rows[3]["label"] = 9
    with pytest.raises(ValueError, match=r"row 3: label 9 is outside 1\.\.5"):
        scan_labels(write_shards(tmp_path / "label", rows, shards=1))
    schema = pa.schema([f for f in LABEL_SCHEMA if f.name != "probs"])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['probs'\]"):
        scan_labels(write_shards(tmp_path / "noprobs", label_rows(2, 2), shards=1, schema=schema))
    with pytest.raises(ValueError, match="embedding column 'emb' is missing"):
        scan_labels(write_shards(tmp_path / "ok", label_rows(2, 2), shards=1), embedding_column="emb")
    one = write_shards(tmp_path / "one", [{**r, "probs": [1.0]} for r in label_rows(2, 2)], shards=1)
    (one / "manifest.json").unlink()  # a user's own shards: K is the first row's length
    with pytest.raises(ValueError, match=r"row 0: probs has 1 values; expected at least 2"):
        scan_labels(one)


def test_bad_embedding_columns_are_refused(tmp_path: Path) -> None:
    schema = LABEL_SCHEMA.append(pa.field("emb", pa.list_(pa.float32())))

    def with_vectors(name: str, vectors: list[Any]) -> Path:
        rows = [{**r, "emb": v} for r, v in zip(label_rows(2, 3), vectors, strict=True)]
        return write_shards(tmp_path / name, rows, shards=2, schema=schema)

    ok = scan_labels(with_vectors("ok", [[0.5, 1.0]] * 6), embedding_column="emb")
    assert ok.extra_dim == 2
    # the second shard's rows are 3..5: a width fixed by the first shard holds for the next
    with pytest.raises(ValueError, match=r"part-00001\.parquet: row 4: embedding has 3 values, expected 2"):
        wide = with_vectors("width", [[0.5, 1.0]] * 4 + [[1.0, 2.0, 3.0], [0.5, 1.0]])
        scan_labels(wide, embedding_column="emb")
    with pytest.raises(ValueError, match=r"row 0: embedding has 0 values; expected at least 1"):
        scan_labels(with_vectors("empty", [[]] * 6), embedding_column="emb")
    with pytest.raises(ValueError, match=r"row 2: embedding is null"):
        scan_labels(with_vectors("null", [[1.0]] * 2 + [None] + [[1.0]] * 3), embedding_column="emb")
    with pytest.raises(ValueError, match="NaN or infinite"):
        scan_labels(with_vectors("nan", [[1.0]] * 5 + [[float("nan")]]), embedding_column="emb")


WEIGHTED_SCHEMA = LABEL_SCHEMA.append(pa.field("weight", pa.float64()))


def test_bad_weights_are_refused(tmp_path: Path) -> None:
    for i, bad in enumerate([0.0, -1.0, float("nan"), float("inf")]):
        rows = [{**r, "weight": 1.0} for r in label_rows(5, 4)]
        rows[6]["weight"] = bad
        with pytest.raises(ValueError, match=r"row 6: weight .* should be a finite number > 0"):
            scan_labels(write_shards(tmp_path / f"w{i}", rows, shards=1, schema=WEIGHTED_SCHEMA))
    schema = LABEL_SCHEMA.append(pa.field("weight", pa.string()))
    rows = [{**r, "weight": "heavy"} for r in label_rows(2, 2)]
    with pytest.raises(ValueError, match="column 'weight' should hold numbers"):
        scan_labels(write_shards(tmp_path / "text", rows, shards=1, schema=schema))
    # Null weights count as 1, and a shard set with them scans.
    rows = [{**r, "weight": None if i % 2 else 2.0} for i, r in enumerate(label_rows(2, 2))]
    assert (
        "weight" in scan_labels(write_shards(tmp_path / "ok", rows, shards=1, schema=WEIGHTED_SCHEMA)).columns
    )


def test_grade_weights_scale_to_mean_one_over_labelled_rows() -> None:
    rows = label_rows(2, 3)
    for i, (r, w) in enumerate(zip(rows, [2.0, None, 0.5, 1.0, None, 2.5], strict=True)):
        r["weight"], r["label"] = w, 1 + i % GRADES
    table = pa.Table.from_pylist(rows, schema=WEIGHTED_SCHEMA)
    labels = np.array([0, -1, 2, 3, 1, -1], dtype=np.int64)
    weights = loop._grade_weights(table, labels)
    raw = np.array([2.0, 1.0, 0.5, 1.0, 1.0, 2.5])
    np.testing.assert_allclose(weights, raw / raw[labels >= 0].mean(), rtol=1e-6)
    assert weights.dtype == np.float32
    # No weight column, or weights that are all 1: exactly ones, so training is unchanged.
    plain = pa.Table.from_pylist(label_rows(2, 3), schema=LABEL_SCHEMA)
    assert (loop._grade_weights(plain, labels) == 1.0).all()
    ones = table.set_column(table.schema.get_field_index("weight"), "weight", pa.array([1.0] * 6))
    assert (loop._grade_weights(ones, labels) == 1.0).all()
    # What a worker builds from a shard carries them.
    hasher = pinrel.FeatureHasher(n_features=2**10)
    cfg = StudentConfig(grades=GRADES, n_features=hasher.n_features)
    data = loop._table_data(table, hasher, pinrel.AssemblySpec(), cfg)
    expected = loop._grade_weights(table, data.labels)
    assert not (expected == 1.0).all()
    np.testing.assert_array_equal(data.weights, expected)


# ------------------------------------------------------------------------------------- loss (fast)


def test_distill_loss() -> None:
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(6, GRADES), dim=1)
    labels = torch.tensor([0, -1, 4, -1, 2, -1])
    # A student that outputs the teacher's own log-probabilities has zero KL at any temperature.
    for t in (1.0, 3.0):
        _, kl, _ = distill_loss(torch.log(probs), probs, labels, temperature=t)
        assert abs(float(kl)) < 1e-5
    logits = torch.randn(6, GRADES, requires_grad=True)
    loss, kl, ce = distill_loss(logits, probs, labels, temperature=2.0, label_weight=0.5)
    assert torch.isclose(loss, kl + 0.5 * ce)
    # Unlabelled rows (-1) do not enter the cross-entropy...
    full = torch.nn.functional.cross_entropy(logits[labels >= 0], labels[labels >= 0])
    assert torch.isclose(ce, full)
    # ...and a batch without any labels contributes 0, not NaN.
    _, _, ce0 = distill_loss(logits, probs, torch.full((6,), -1), label_weight=1.0)
    assert float(ce0) == 0.0
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # Per-row weights scale each human grade's CE; weights of 1 are the unweighted loss, exactly.
    weights = torch.tensor([2.0, 5.0, 0.5, 5.0, 1.0, 5.0])
    _, kl_w, ce_w = distill_loss(logits, probs, labels, 2.0, 0.5, weights)
    rows = torch.nn.functional.cross_entropy(logits, labels.clamp_min(0), reduction="none")
    has = labels >= 0
    assert torch.isclose(ce_w, (rows * weights)[has].sum() / has.sum())
    assert torch.equal(kl_w, kl)
    _, _, ce1 = distill_loss(logits, probs, labels, 2.0, 0.5, torch.ones(6))
    assert torch.equal(ce1, ce)
    with pytest.raises(ValueError, match="weights: expected shape"):
        distill_loss(logits, probs, labels, 2.0, 0.5, torch.ones(5))
    with pytest.raises(ValueError, match="temperature"):
        distill_loss(logits, probs, labels, temperature=0.0)
    with pytest.raises(ValueError, match="differ"):
        distill_loss(logits, probs[:, :3], labels)


def test_optimizer_state_round_trips_without_pickle() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = loop._optimizer_files(opt)
    json.dumps(meta)  # the non-tensor part is plain JSON
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    fresh.load_state_dict(loop._optimizer_state(tensors, json.loads(json.dumps(meta))))
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, state in a["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["state"][pid][name])


def test_dev_split_is_query_disjoint_and_stable() -> None:
    queries = [f"query {i % 50}" for i in range(500)] + ["Query 1", "query  1"]
    mask = label_shards.dev_fraction_mask(queries, 0.3)
    np.testing.assert_array_equal(mask, label_shards.dev_fraction_mask(queries, 0.3))
    by_query: dict[str, set[bool]] = {}
    for q, m in zip(queries, mask, strict=True):
        by_query.setdefault(" ".join(q.lower().split()), set()).add(bool(m))
    assert all(len(v) == 1 for v in by_query.values())
    assert 0.1 < mask[:500].mean() < 0.5


def test_every_kind_of_dev_set(labels_dir: Path, tmp_path: Path) -> None:
    cfg = DistillConfig.from_dict(TINY)
    held_out = driver._plan(labels_dir, cfg)
    assert held_out.dev_fraction == 0.2 and held_out.train_rows + held_out.dev_rows == 2000
    assert 200 < held_out.dev_rows < 600  # about 20% of the queries, each with 10 pairs
    shards = write_shards(tmp_path / "dev", label_rows(10, 5, seed=1), shards=1)
    separate = driver._plan(labels_dir, dataclasses.replace(cfg, dev=str(shards)))
    assert separate.dev_set is not None and (separate.train_rows, separate.dev_rows) == (2000, 50)
    csv = tmp_path / "dev.csv"
    csv.write_text("query,title,label\nred mug,red mug,5\nred mug,blue vase,1\nvase,blue vase,4\n")
    records = driver._plan(labels_dir, dataclasses.replace(cfg, dev=str(csv)))
    assert records.dev_table is not None and records.dev_rows == 3
    assert driver._plan(labels_dir, dataclasses.replace(cfg, dev=None)).dev_rows == 0
    with pytest.raises(FileNotFoundError, match="neither"):
        driver._plan(labels_dir, dataclasses.replace(cfg, dev=str(tmp_path / "nope.csv")))
    # A records dev set has human labels only: accuracy and nDCG, no teacher agreement.
    hasher, spec = pinrel.FeatureHasher(n_features=2**10), pinrel.AssemblySpec()
    student = StudentConfig(grades=GRADES, n_features=2**10, embed_dim=4, hidden=(8,))
    data = loop._table_data(records.dev_table, hasher, spec, student)
    metrics = loop._evaluate(StudentModel(student), data, {"temperature": 2.0}, torch.device("cpu"))
    assert set(metrics) == {"dev_rows", "dev_accuracy", "dev_ndcg@10", "dev_ce"}
    assert 0.0 <= metrics["dev_ndcg@10"] <= 1.0 and metrics["dev_ce"] > 0.0
    # keep_best minimises what each kind of dev set can measure.
    assert driver._select_metric(cfg, held_out) == driver._select_metric(cfg, separate) == "dev_loss"
    assert driver._select_metric(cfg, records) == "dev_ce"
    assert driver._select_metric(dataclasses.replace(cfg, keep_best=False), held_out) is None
    assert driver._select_metric(cfg, driver._plan(labels_dir, dataclasses.replace(cfg, dev=None))) is None
    # keep_best_by: dev_ce picks by the human grades on label shards too; a metric the dev set cannot
    # measure is refused (distill asks before training).
    assert 0 < held_out.dev_labeled < held_out.dev_rows and records.dev_labeled == 3
    assert separate.dev_labeled == separate.dev_set.labeled > 0
    by_ce = dataclasses.replace(cfg, keep_best_by="dev_ce")
    assert driver._select_metric(by_ce, held_out) == driver._select_metric(by_ce, records) == "dev_ce"
    with pytest.raises(ValueError, match="keep_best_by=dev_loss: a records-file dev set has human grades"):
        driver._select_metric(dataclasses.replace(cfg, keep_best_by="dev_loss"), records)
    unlabeled = [{**r, "label": None} for r in label_rows(10, 5, seed=2)]
    unlabeled_dir = write_shards(tmp_path / "unlabeled", unlabeled, shards=1)
    no_grades = driver._plan(labels_dir, dataclasses.replace(cfg, dev=str(unlabeled_dir)))
    assert no_grades.dev_labeled == 0
    assert driver._select_metric(cfg, no_grades) == "dev_loss"
    with pytest.raises(ValueError, match="keep_best_by=dev_ce: needs human grades in the dev set, and none"):
        driver._select_metric(by_ce, no_grades)
    ungraded_csv = tmp_path / "ungraded.csv"
    ungraded_csv.write_text("query,title\nred mug,red mug\n")
    ungraded = driver._plan(labels_dir, dataclasses.replace(cfg, dev=str(ungraded_csv)))
    with pytest.raises(ValueError, match=r"keep_best \(by dev_ce\): needs human grades .* its 1 rows"):
        driver._select_metric(cfg, ungraded)


@pytest.mark.slow
def test_records_dev_set_selects_by_label_loss(ray_local: None, labels_dir: Path, tmp_path: Path) -> None:
    # The demo's shape: label shards to train on, a human-labelled records file as dev.
    dev = tmp_path / "dev.parquet"
    rows = _table(labels_dir).slice(0, 200)
    pq.write_table(rows.select(["query", "title", "lang"]).append_column("label", rows.column("grade")), dev)
    summary = distill(labels_dir, tmp_path / "student", {**TINY, "epochs": 2, "dev": str(dev)})
    history = summary["history"]
    assert all("dev_ce" in h and "dev_loss" not in h for h in history)
    best = min(history, key=lambda h: h["dev_ce"])
    assert summary["metrics"]["selected_epoch"] == best["epoch"] == summary["epoch"]


def test_cli_reports_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pinrel.cli import main

    assert main(["distill", "--out", str(tmp_path / "o")]) == 2
    assert "no labels dir" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["distill", "--labels", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no label shards" in capsys.readouterr().err
    assert main(["distill", "--labels", "x", "--out", str(tmp_path / "o"), "--max-failures", "-1"]) == 2
    assert "max_failures" in capsys.readouterr().err


# ------------------------------------------------------------------------------- Ray Train (slow)


@pytest.mark.slow
def test_distill_learns_the_teacher(trained: dict[str, Any], labels_dir: Path) -> None:
    history = trained["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    last = trained["metrics"]
    for key in ("loss", "kl", "train_agreement", "train_accuracy", "dev_agreement", "dev_accuracy"):
        assert key in last and last[key] is not None
    assert history[-1]["loss"] < history[0]["loss"]
    assert all(0.0 <= h["train_agreement"] <= 1.0 for h in history)
    assert all(0 < h["rows_seen"] <= trained["train_rows"] for h in history)
    grades = _table(labels_dir).column("grade").to_numpy()
    chance = np.bincount(grades).max() / grades.size  # always predicting the commonest grade
    assert last["dev_agreement"] > chance + 0.3, (last, chance)
    assert last["teacher_agreement"] == last["dev_agreement"]
    assert last["dev_ndcg@10_teacher"] > 0.8
    assert trained["train_rows"] + trained["dev_rows"] == grades.size
    print(f"2-worker distillation: {trained['seconds']:.1f}s, metrics {last}")


@pytest.mark.slow
def test_artifact_round_trip(trained: dict[str, Any], labels_dir: Path) -> None:
    out: Path = trained["out"]
    manifest = json.loads((out / "pinrel.json").read_text())
    assert manifest["kind"] == "student" and manifest["grades"] == GRADES
    assert manifest["hasher"]["n_features"] == 2**14
    assert manifest["teacher"]["teacher"] == "synthetic"
    assert len(manifest["history"]) == 3
    # keep_best (the default, with a dev set): the epoch of lowest dev loss, not necessarily the last.
    best = min(manifest["history"], key=lambda h: h["dev_loss"])
    assert manifest["metrics"]["epoch"] == manifest["metrics"]["selected_epoch"] == best["epoch"]
    assert manifest["metrics"]["dev_loss"] == best["dev_loss"]

    table = _table(labels_dir).slice(0, 300)
    scorer = Scorer.load(out)
    probs = scorer.predict_proba(table)
    # The model as trained: the selected checkpoint's weights, run by hand.
    cfg = StudentConfig.from_dict(manifest["config"])
    model = StudentModel(cfg)
    model.load_state_dict(load_file(str(_checkpoint_of_epoch(out, best["epoch"]) / "model.safetensors")))
    model.eval()
    features = featurize(scorer.hasher, scorer.spec, table.column("query").to_pylist(), table)
    with torch.no_grad():
        want = torch.softmax(model(**features.tensors()), dim=1).numpy()
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
    agreement = (probs.argmax(axis=1) + 1 == table.column("grade").to_numpy()).mean()
    assert agreement > 0.7
    one = scorer.score(table["query"][0].as_py(), table.slice(0, 10))
    np.testing.assert_allclose(one.probs, probs[:10], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_weighted_shards_distill_on_ray(ray_local: None, tmp_path: Path) -> None:
    # The weight column travels from the shards through Ray Data into each worker's loss.
    rows = [{**r, "weight": (0.5, 2.0, None)[i % 3]} for i, r in enumerate(label_rows(60, 5))]
    labels = write_shards(tmp_path / "labels", rows, schema=WEIGHTED_SCHEMA)
    assert "weight" in scan_labels(labels).columns
    summary = distill(labels, tmp_path / "student", {**TINY, "epochs": 1})
    assert summary["train_rows"] > 0 and np.isfinite(summary["history"][0]["ce"])
    assert Scorer.load(tmp_path / "student").grades == GRADES


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint(
    ray_local: None, labels_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dropout on, so that the comparison below also covers the dropout masks of a resumed epoch.
    cfg = {**TINY, "epochs": 2, "dev": None, "student": {**TINY["student"], "dropout": 0.2}}
    whole = distill(labels_dir, tmp_path / "uninterrupted", cfg)
    monkeypatch.setenv(D.KILL_ENV, "1")
    out = tmp_path / "student"
    summary = distill(labels_dir, out, cfg)
    assert (out / "_ray" / "killed.marker").is_file()  # rank 0 really died once
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    # The replacement workers started from the epoch-1 checkpoint, not from scratch...
    assert summary["history"][1]["resumed_from_epoch"] == 1
    # ...and trained epoch 2 exactly as the run that was never interrupted.
    assert {**summary["history"][1], "resumed_from_epoch": 0} == whole["history"][1]
    assert Scorer.load(out).grades == GRADES


@pytest.mark.slow
def test_rerun_resumes_and_restart_starts_over(
    trained: dict[str, Any], labels_dir: Path, tmp_path: Path
) -> None:
    out: Path = trained["out"]
    with pytest.raises(ValueError, match="other model settings"):
        distill(labels_dir, out, {**TINY, "student": {"embed_dim": 8}})
    # The same settings on other label shards, or another dev split: refused before any training.
    other = write_shards(tmp_path / "other-labels", label_rows(200, 10, seed=1))
    with pytest.raises(ValueError, match="other data"):
        distill(other, out, {**TINY, "epochs": 4})
    with pytest.raises(ValueError, match="other data"):
        distill(labels_dir, out, {**TINY, "epochs": 4, "dev": 0.3})
    # Other optimisation settings would train the rest of the run under other ones.
    with pytest.raises(ValueError, match=r"other training settings \(lr, seed changed\)"):
        distill(labels_dir, out, {**TINY, "epochs": 4, "lr": 0.001, "seed": 3})
    more = distill(labels_dir, out, {**TINY, "epochs": 4})
    assert [h["epoch"] for h in more["history"]] == [1, 2, 3, 4]
    assert more["history"][-1]["resumed_from_epoch"] == 3
    # Re-running a finished run trains nothing and still leaves the same model.
    again = distill(labels_dir, out, {**TINY, "epochs": 4})
    assert again["history"] == more["history"]
    assert Scorer.load(out).grades == GRADES
    # Ray's run deleted to save space: the same command returns the student as it is (the worker
    # count only says where to train), and other labels or settings are refused, not trained over it.
    shutil.move(out / "_ray", tmp_path / "_ray")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    kept = distill(labels_dir, out, {**TINY, "epochs": 4, "workers": 1})
    assert kept["history"] == more["history"] and kept["epoch"] == again["epoch"]
    for labels, cfg in (
        (labels_dir, {**TINY, "epochs": 5}),
        (labels_dir, {**TINY, "epochs": 4, "lr": 0.001}),
        (other, {**TINY, "epochs": 4}),
    ):
        with pytest.raises(ValueError, match=r"other labels or settings, and no run to resume.*--restart"):
            distill(labels, out, cfg)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    fresh = distill(labels_dir, out, {**TINY, "epochs": 1}, restart=True)
    assert [h["epoch"] for h in fresh["history"]] == [1]
    assert fresh["history"][0]["resumed_from_epoch"] == 0
    # Same shards, same seed: the same split between the workers, so the same first epoch.
    assert fresh["history"][0] == trained["history"][0]
    assert json.loads((out / "pinrel.json").read_text())["metrics"]["epoch"] == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("model.safetensors", lambda b: b[: len(b) // 2]),
        ("optimizer.safetensors", lambda b: b[:-5]),
        ("state.json", lambda b: b"{not json"),
        ("state.json", lambda b: b'{"epoch": 1}'),
    ],
)
def test_damaged_checkpoint_is_refused_before_training(
    trained: dict[str, Any],
    labels_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    damage: Any,
) -> None:
    out = tmp_path / "student"
    shutil.copytree(trained["out"], out)
    files = list((out / "_ray").rglob(name))
    assert files
    for f in files:
        f.write_bytes(damage(f.read_bytes()))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def no_training(*args: Any) -> None:
        raise AssertionError("Ray Train started on a damaged checkpoint")

    monkeypatch.setattr(driver, "_trainer", no_training)
    with pytest.raises(ValueError, match=r"checkpoint_\S+ is unreadable .*--restart"):
        distill(labels_dir, out, {**TINY, "epochs": 9})
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched


# ------------------------------------------------------------------------------ ray job submit (slow)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A private `ray start --head` cluster, in its own process group so teardown ends exactly it.

    (`ray stop` would also stop every other Ray instance on the machine.)
    """
    temp = Path(tempfile.mkdtemp(prefix="prj", dir="/tmp"))  # short: Ray puts unix sockets under it
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    dashboard = _free_port()
    ports = ["--port", str(_free_port()), "--dashboard-port", str(dashboard)]
    for flag in ("ray-client-server", "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export"):
        ports += [f"--{flag}-port", str(_free_port())]
    ports += ["--runtime-env-agent-port", str(_free_port())]
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus",
        "2",
        "--include-dashboard",
        "true",
    ]
    cmd += ["--dashboard-host", "127.0.0.1", "--temp-dir", str(temp), "--disable-usage-stats", *ports]
    log = open(temp / "ray-start.log", "w")  # closed in teardown, after the cluster is gone
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{dashboard}/api/version", timeout=180)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        # SIGINT lets `ray start --block` drain and stop its processes in order (SIGTERM to the group
        # kills the GCS first and leaves it waiting on timeouts); SIGKILL is the fallback.
        for sig, wait in ((signal.SIGINT, 45), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)  # the group we created: ray start and everything it spawned
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _ray_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _wait_for_job(address: str, job: str, timeout: float) -> str:
    """The job's final status from the dashboard's REST API (the CLI's output is for humans)."""
    deadline = time.monotonic() + timeout
    status = "UNKNOWN"
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{address}/api/jobs/{job}", timeout=10) as r:
            status = json.loads(r.read())["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    return str(status)


@pytest.mark.slow
def test_ray_job_submit(ray_cluster: tuple[str, dict[str, str]], labels_dir: Path, tmp_path: Path) -> None:
    address, env = ray_cluster
    out = tmp_path / "student"
    cfg = {**TINY, "labels": str(labels_dir), "out": str(out), "epochs": 1}
    config_file = tmp_path / "distill.yaml"
    config_file.write_text(json.dumps(cfg))  # JSON is YAML
    job = f"pinrel-distill-{uuid.uuid4().hex[:8]}"
    excludes = json.dumps({"excludes": [".venv", "target", ".git", ".hypothesis", "runs", "*.so"]})
    submit_args = ["job", "submit", "--address", address, "--working-dir", str(REPO)]
    submit_args += ["--runtime-env-json", excludes, "--submission-id", job, "--no-wait"]
    submit = _ray_cli(env, *submit_args, "--", "python", "train/distill.py", "--config", str(config_file))
    assert submit.returncode == 0, submit.stdout + submit.stderr
    status = _wait_for_job(address, job, timeout=420)
    logs = _ray_cli(env, "job", "logs", "--address", address, job).stdout
    assert status == "SUCCEEDED", status + logs[-4000:]
    assert '"epoch": 1' in logs
    scorer = Scorer.load(out)
    assert scorer.grades == GRADES
    assert scorer.score("a b c", [{"title": "a b c"}]).probs.shape == (1, GRADES)


def test_label_rows_helper_is_sane() -> None:
    rows = label_rows(3, 4)
    table = pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)
    probs = np.asarray(table.column("probs").to_pylist())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert set(table.column("grade").to_pylist()) <= set(range(1, GRADES + 1))
    assert pinrel.MATCH_FEATURE_NAMES  # the features the student learns the overlap from
