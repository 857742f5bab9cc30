"""The student model, its artifact and the in-process Scorer (no Ray here)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

import pinrel
from pinrel.io import current_umask
from pinrel.predictor import ModelDirError, load_predictor
from pinrel.student import (
    Scorer,
    StudentConfig,
    StudentModel,
    feature_names,
    featurize,
    load_student,
    save_student,
)

N_FEATURES = 2**12
ITEMS = [
    {"title": "Red ceramic mug", "description": "<p>Holds 350&nbsp;ml</p>", "boards": ["Kitchen"]},
    {"title": "Blue glass vase", "captions": ["a vase on a shelf"]},
    {"title": "東京タワーの夜景", "lang": "ja"},
    {"title": "", "description": ""},
]


def _model(grades: int = 5, seed: int = 0, **kw: object) -> StudentModel:
    torch.manual_seed(seed)
    cfg = StudentConfig(grades=grades, n_features=N_FEATURES, embed_dim=8, hidden=(16,), **kw)  # type: ignore[arg-type]
    model = StudentModel(cfg)
    hasher = pinrel.FeatureHasher(n_features=N_FEATURES)
    model.set_match_scaling(hasher.transform_pairs(["red mug", "vase"], ["red mug x", "blue vase"]))
    return model.eval()


@pytest.fixture
def scorer() -> Scorer:
    return Scorer(_model(), pinrel.FeatureHasher(n_features=N_FEATURES), pinrel.AssemblySpec())


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    out = tmp_path / "student"
    save_student(
        out,
        _model(),
        pinrel.FeatureHasher(n_features=N_FEATURES),
        pinrel.AssemblySpec(max_chars=300),
        metrics={"dev_agreement": 0.9, "dev_accuracy": float("nan")},
        teacher={"grades": 5, "model": "synthetic"},
    )
    return out


def _edit_manifest(d: Path, edit: object) -> None:
    f = d / "pinrel.json"
    m = json.loads(f.read_text())
    edit(m)  # type: ignore[operator]
    f.write_text(json.dumps(m))


# ------------------------------------------------------------------------------------- import hygiene


def test_import_student_and_distill_do_not_import_ray() -> None:
    code = "import sys, pinrel.student, pinrel.distill; sys.exit(1 if 'ray' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -------------------------------------------------------------------------------------------- config


def test_config_validates_and_round_trips() -> None:
    cfg = StudentConfig(grades=4, n_features=64, hidden=[8, 4])  # type: ignore[arg-type]
    assert cfg.hidden == (8, 4)
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        StudentConfig.from_dict({**cfg.to_dict(), "width": 3})
    with pytest.raises(ValueError, match="grades"):
        StudentConfig(grades=1)
    with pytest.raises(ValueError, match="hidden"):
        StudentConfig(grades=5, hidden=(8, 0))
    with pytest.raises(ValueError, match="dropout"):
        StudentConfig(grades=5, dropout=1.0)
    with pytest.raises(ValueError, match="extra_column"):
        StudentConfig(grades=5, extra_column="emb")  # a column without its size
    # Sizes a typo makes huge are refused here, not by torch's allocator after the fact.
    with pytest.raises(ValueError, match="n_features: expected an integer from 1 to 2147483647"):
        StudentConfig(grades=5, n_features=2**40)
    with pytest.raises(ValueError, match=r"hidden\[0\]: expected an integer from 1 to 65536"):
        StudentConfig(grades=5, hidden=[2**40])
    with pytest.raises(ValueError, match=r"parameters .* GiB in fp32"):
        StudentConfig(grades=5, n_features=2**31 - 1, embed_dim=64)
    assert "match:bm25" in feature_names(cfg)


# ------------------------------------------------------------------------------------------ features


def test_featurize_lists_and_tables_agree() -> None:
    hasher = pinrel.FeatureHasher(n_features=N_FEATURES)
    queries = ["red mug", "vase", "東京タワー", "anything"]
    f = featurize(hasher, None, queries, ITEMS)
    assert len(f) == 4 and f.query.shape == (4, N_FEATURES) and f.item.shape == (4, N_FEATURES)
    assert f.match.shape == (4, len(pinrel.MATCH_FEATURE_NAMES))
    table = pa.Table.from_pylist([{k: it.get(k) for k in ("title", "description")} for it in ITEMS])
    g = featurize(hasher, None, queries, table)
    # Only title/description are in the table, so compare on those items that have nothing else.
    assert (f.item[3] != g.item[3]).nnz == 0
    # Char n-grams give CJK text features, and the query matches its own title.
    assert f.query[2].nnz > 0
    assert f.match[2, pinrel.MATCH_FEATURE_NAMES.index("char3_jaccard")] > 0


def test_featurize_rejects_bad_input() -> None:
    hasher = pinrel.FeatureHasher(n_features=N_FEATURES)
    with pytest.raises(ValueError, match="differ in length"):
        featurize(hasher, None, ["a"], ITEMS)
    with pytest.raises(TypeError, match=r"queries\[1\]"):
        featurize(hasher, None, ["a", 3], ITEMS[:2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"items\[0\]"):
        featurize(hasher, None, ["a"], ["not a dict"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="hasher"):
        featurize("hasher", None, ["a"], ITEMS[:1])  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- scorer


def test_score_paths_agree(scorer: Scorer) -> None:
    one = scorer.score("red mug", ITEMS)
    assert one.probs.shape == (4, 5) and len(one) == 4
    np.testing.assert_allclose(one.probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(one.scores, one.probs @ np.arange(1, 6), rtol=1e-5)
    np.testing.assert_array_equal(one.grades, one.probs.argmax(axis=1) + 1)

    batch = scorer.score_batch(["red mug", "vase"], [ITEMS, ITEMS[:2]])
    np.testing.assert_allclose(batch[0].probs, one.probs, rtol=1e-5, atol=1e-6)
    records = [{"query": "vase", **it} for it in ITEMS[:2]]
    np.testing.assert_allclose(batch[1].probs, scorer.predict_proba(records), rtol=1e-5, atol=1e-6)

    table = pa.Table.from_pylist([{"query": "red mug", "title": it["title"]} for it in ITEMS])
    by_table = scorer.predict_proba(table)
    by_dicts = scorer.score("red mug", [{"title": it["title"]} for it in ITEMS]).probs
    np.testing.assert_allclose(by_table, by_dicts, rtol=1e-5, atol=1e-6)
    assert scorer.score("x", []).probs.shape == (0, 5)
    assert scorer.score_batch([], []) == []
    assert json.loads(json.dumps(one.to_dict()))["grades"] == one.grades.tolist()


def test_scorer_rejects_bad_input(scorer: Scorer) -> None:
    with pytest.raises(TypeError, match="query"):
        scorer.score(3, ITEMS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="items"):
        scorer.score("q", "not items")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"items\[1\]"):
        scorer.score("q", [{"title": "a"}, 5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="differ in length"):
        scorer.score_batch(["a", "b"], [ITEMS])
    with pytest.raises(ValueError, match="query"):
        scorer.predict_proba(pa.table({"title": ["a"]}))
    with pytest.raises(TypeError, match=r"records\[0\]\['query'\]"):
        scorer.predict_proba([{"title": "a"}])
    # Errors name the caller's argument, not a list the scorer built from it (`texts[i]`, `items`).
    with pytest.raises(ValueError, match=r"^query: not valid Unicode"):
        scorer.score("\ud800", ITEMS)
    with pytest.raises(ValueError, match=r"^records\[1\]\['query'\]: not valid Unicode"):
        scorer.predict_proba([{"query": "a", "title": "x"}, {"query": "\ud800", "title": "y"}])
    with pytest.raises(TypeError, match=r'^item_lists\[1\]\[1\]\["title"\]: expected str'):
        scorer.score_batch(["a", "b"], [ITEMS, [{"title": "ok"}, {"title": 5}]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^records: the table has none of the item fields"):
        scorer.predict_proba(pa.table({"query": ["a"]}))


def test_scorer_is_thread_safe(scorer: Scorer) -> None:
    queries = [f"query {i} mug" for i in range(16)]
    expected = [scorer.score(q, ITEMS).probs for q in queries]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(20):
                results[i] = scorer.score(queries[i], ITEMS).probs
        except BaseException as e:  # surfaced below; a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, want in enumerate(expected):
        np.testing.assert_allclose(results[i], want, rtol=1e-5, atol=1e-6)


def test_extra_vector_column(tmp_path: Path) -> None:
    model = _model(extra_column="emb", extra_dim=3)
    hasher = pinrel.FeatureHasher(n_features=N_FEATURES)
    save_student(tmp_path / "m", model, hasher, pinrel.AssemblySpec())
    scorer = Scorer.load(tmp_path / "m")
    items = [{"title": "a", "emb": [0.1, 0.2, 0.3]}, {"title": "b", "emb": [1.0, 0.0, -1.0]}]
    probs = scorer.score("a", items).probs
    table = pa.table(
        {"query": ["a", "a"], "title": ["a", "b"], "emb": pa.array([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0]])}
    )
    np.testing.assert_allclose(scorer.predict_proba(table), probs, rtol=1e-5, atol=1e-6)
    fixed = table.set_column(
        2, "emb", pa.FixedSizeListArray.from_arrays(pa.array([0.1, 0.2, 0.3, 1, 0, -1.0]), 3)
    )
    np.testing.assert_allclose(scorer.predict_proba(fixed), probs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="emb"):
        scorer.score("a", [{"title": "a"}])
    with pytest.raises(ValueError, match="size"):
        scorer.score("a", [{"title": "a", "emb": [1.0, 2.0]}])
    with pytest.raises(ValueError, match="NaN"):
        scorer.score("a", [{"title": "a", "emb": [1.0, float("nan"), 0.0]}])


# ------------------------------------------------------------------------------------------ artifact


def test_artifact_round_trip(artifact: Path) -> None:
    manifest = json.loads((artifact / "pinrel.json").read_text())
    assert manifest["kind"] == "student" and manifest["grades"] == 5
    assert manifest["version"] == pinrel.__version__
    assert manifest["hasher"] == pinrel.FeatureHasher(n_features=N_FEATURES).get_params()
    assert manifest["assembly_spec"]["max_chars"] == 300
    assert manifest["config"]["embed_dim"] == 8
    assert manifest["metrics"] == {"dev_agreement": 0.9, "dev_accuracy": None}  # NaN is not JSON
    assert manifest["teacher"]["model"] == "synthetic"
    assert manifest["features"][-1] == "match:" + pinrel.MATCH_FEATURE_NAMES[-1]

    scorer = Scorer.load(artifact)
    assert scorer.grades == 5 and scorer.spec.max_chars == 300
    direct = Scorer(_model(), pinrel.FeatureHasher(n_features=N_FEATURES), pinrel.AssemblySpec(max_chars=300))
    np.testing.assert_allclose(scorer.score("red mug", ITEMS).probs, direct.score("red mug", ITEMS).probs)
    predictor = load_predictor(artifact)
    assert isinstance(predictor, Scorer) and isinstance(predictor, pinrel.predictor.Predictor)
    model, hasher, spec, _ = load_student(artifact)
    assert not model.training and hasher.n_features == N_FEATURES and spec.max_chars == 300


def test_save_is_atomic_and_keeps_other_files(artifact: Path) -> None:
    (artifact / "_ray").mkdir()
    (artifact / "_ray" / "keep.txt").write_text("x")
    save_student(artifact, _model(seed=1), pinrel.FeatureHasher(n_features=N_FEATURES), pinrel.AssemblySpec())
    assert (artifact / "_ray" / "keep.txt").read_text() == "x"
    assert sorted(p.name for p in artifact.iterdir()) == ["_ray", "model.safetensors", "pinrel.json"]
    assert Scorer.load(artifact).spec.max_chars == pinrel.AssemblySpec().max_chars
    with pytest.raises(TypeError, match="StudentModel"):
        save_student(artifact, torch.nn.Linear(2, 2), pinrel.FeatureHasher(), pinrel.AssemblySpec())
    with pytest.raises(ValueError, match="n_features"):
        save_student(artifact, _model(), pinrel.FeatureHasher(n_features=64), pinrel.AssemblySpec())
    # Readable by other users (a replica may run as one): safetensors writes private 0600 files.
    umask = current_umask()
    assert {oct(p.stat().st_mode & 0o777) for p in artifact.iterdir() if p.is_file()} == {oct(0o666 & ~umask)}


def test_save_refuses_what_it_would_destroy_or_cannot_write(tmp_path: Path) -> None:
    """The Python API checks as the CLI does: a teacher's folder, the current directory by way of an
    empty path, or metadata JSON cannot hold is refused before any file is written."""
    parts = (_model(), pinrel.FeatureHasher(n_features=N_FEATURES), pinrel.AssemblySpec())
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "pinrel.json").write_text('{"kind": "teacher", "grades": 5}')
    (teacher / "model.safetensors").write_bytes(b"mine")
    with pytest.raises(ValueError, match="already holds a pinrel teacher"):
        save_student(teacher, *parts)
    assert (teacher / "model.safetensors").read_bytes() == b"mine"
    with pytest.raises(ValueError, match="out_dir: expected a directory path"):
        save_student("", *parts)
    for kwargs, message in (
        ({"metrics": {"acc": object()}}, "cannot be written as JSON"),
        ({"metrics": {"\ud800": 1.0}}, "cannot be written as JSON"),
        ({"history": 5}, "history: expected a list"),
        ({"run": "abc"}, "run: expected a mapping"),
    ):
        with pytest.raises((TypeError, ValueError), match=message):
            save_student(tmp_path / "new", *parts, **kwargs)  # type: ignore[arg-type]
        assert not (tmp_path / "new").exists()


def test_load_refuses_a_hasher_mismatch(artifact: Path) -> None:
    _edit_manifest(artifact, lambda m: m["hasher"].update(n_features=2 * N_FEATURES))
    with pytest.raises(ModelDirError, match=r"hasher mismatch.*n_features=8192.*4096 rows"):
        Scorer.load(artifact)


def test_load_refuses_unknown_hasher_keys(artifact: Path) -> None:
    _edit_manifest(artifact, lambda m: m["hasher"].update(vocab="x"))
    with pytest.raises(ModelDirError, match="unknown field"):
        Scorer.load(artifact)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(kind="teacher-ish"), "unknown kind"),
        (lambda m: m["config"].update(embed_dim=16), "shape"),
        # Checked before the model is built: 2^40 used to fail in torch's allocator, or be OOM-killed.
        (lambda m: m["config"].update(embed_dim=2**40), "embed_dim: expected an integer from 1 to 65536"),
        (lambda m: m["config"].update(hidden=[2**40]), r"hidden\[0\]: expected an integer from 1 to 65536"),
        (lambda m: m["config"].update(embed_dim=4096), "shape"),
        (lambda m: m["config"].update(depth=3), "unknown key"),
        (lambda m: m.update(grades=4), "grades"),
        (lambda m: m.update(grades=10**20), r"'grades': expected an integer >= 2 \(at most 1000\)"),
        (lambda m: m.update(features=["bm25"]), "features"),
        (lambda m: m.pop("hasher"), "lacks 'hasher'"),
    ],
)
def test_load_refuses_inconsistent_manifests(artifact: Path, edit: object, message: str) -> None:
    _edit_manifest(artifact, edit)
    with pytest.raises(ModelDirError, match=message):
        load_predictor(artifact)


def test_bad_device_is_named(artifact: Path) -> None:
    with pytest.raises(ValueError, match="device: 'nope' is not a torch device"):
        Scorer.load(artifact, device="nope")
    with pytest.raises(TypeError, match=r"device: expected a str or torch\.device"):
        load_predictor(artifact, device=0)
    # A GPU this machine lacks is named before any weights load, for the student and the HF backend.
    with pytest.raises(ValueError, match="device: 'meta' holds shapes without data"):
        Scorer.load(artifact, device="meta")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match=r"device: 'mps' is not usable here \([^\n]*\)$"):
            Scorer.load(artifact, device="mps")
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=rf"device: '{missing}'.*(no CUDA GPU|GPU\(s\) are visible)"):
        Scorer.load(artifact, device=missing)


def test_load_refuses_a_deeply_nested_manifest(artifact: Path) -> None:
    (artifact / "pinrel.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelDirError, match="not valid JSON"):
        load_predictor(artifact)


def test_load_refuses_missing_or_torn_weights(artifact: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    good = load_file(str(artifact / "model.safetensors"))
    for name, value, message in (
        ("mlp.0.weight", float("nan"), r"mlp\.0\.weight holds NaN or infinite values"),
        ("match_std", 0.0, "match_std must be > 0"),
    ):
        bad = dict(good)
        bad[name] = torch.full_like(good[name], value)
        save_file(bad, str(artifact / "model.safetensors"))
        with pytest.raises(ModelDirError, match=message):
            Scorer.load(artifact)
    (artifact / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelDirError, match="cannot read"):
        Scorer.load(artifact)
    (artifact / "model.safetensors").unlink()
    with pytest.raises(ModelDirError, match=r"model\.safetensors"):
        Scorer.load(artifact)
    with pytest.raises(ModelDirError, match="does not exist"):
        Scorer.load(tmp_path / "nowhere")


def test_manifests_are_strict_json(tmp_path: Path) -> None:
    from pinrel.predictor import write_manifest

    metrics = {"ndcg": float("nan"), "auc": np.float32(0.5), "top": float("inf"), "n": np.int64(3)}
    write_manifest(tmp_path, {"kind": "student", "grades": 5, "metrics": metrics})

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    written = json.loads((tmp_path / "pinrel.json").read_text(), parse_constant=refuse)
    assert written["metrics"] == {"ndcg": None, "auc": 0.5, "top": None, "n": 3}


@pytest.mark.parametrize("make", ["save_student", "Scorer"])
def test_a_student_is_built_from_matching_parts(tmp_path: Path, make: str) -> None:
    def build(model: object, hasher: object, spec: object) -> object:
        if make == "Scorer":
            return Scorer(model, hasher, spec)  # type: ignore[arg-type]
        return save_student(tmp_path / "out", model, hasher, spec)  # type: ignore[arg-type]

    model, hasher, spec = _model(), pinrel.FeatureHasher(n_features=N_FEATURES), pinrel.AssemblySpec()
    with pytest.raises(TypeError, match="model: expected a StudentModel, got Linear"):
        build(torch.nn.Linear(2, 2), hasher, spec)
    with pytest.raises(TypeError, match=r"hasher: expected pinrel\.FeatureHasher, got dict"):
        build(model, {"n_features": N_FEATURES}, spec)
    with pytest.raises(TypeError, match=r"spec: expected pinrel\.AssemblySpec, got NoneType"):
        build(model, hasher, None)
    wrong_size = f"hasher has n_features=1024 but the model's bags have {N_FEATURES} rows"
    with pytest.raises(ValueError, match=wrong_size):
        build(model, pinrel.FeatureHasher(n_features=1024), spec)
    assert not (tmp_path / "out").exists()
