"""End-to-end evaluation: baselines, report files, CLI, and the real CrowdFlower data when present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

import pinrel
from pinrel import metrics
from pinrel.baselines import Bm25Baseline, HashedLRBaseline, query_keys
from pinrel.cli import main
from pinrel.eval import PLOTS, evaluate
from pinrel.predictor import Predictor
from pinrel.records import make_records, split_by_query

from .conftest import shared_data

K = 4
WORDS = (
    "lamp chair table sofa mug vase rug shelf desk clock mirror pillow curtain blanket basket frame "
    "candle bowl plate glass kettle towel hook stool bench crate drawer tray cushion jar"
).split()
NOISE = "red blue small large wooden metal modern vintage soft round set pack new classic".split()


def synthetic_records(n_queries: int = 40, per_query: int = 8, seed: int = 0) -> pa.Table:
    """Graded pairs whose grade is written in the text: the more query words a title holds, the higher.

    Grade 1 shares nothing with the query, 2 one word, 3 both, 4 the exact phrase at the front; a few
    labels are flipped so no model is perfect. Queries alternate between two languages.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for qi in range(n_queries):
        first, second = rng.choice(WORDS, 2, replace=False)
        others = [w for w in WORDS if w not in (first, second)]
        for _ in range(per_query):
            grade = int(rng.integers(1, K + 1))
            words = [*rng.choice(NOISE, 2), *rng.choice(others, 2)]
            if grade >= 2:
                words.append(first)
            if grade >= 3:
                words.append(second)
            rng.shuffle(words)
            if grade == 4:
                words.insert(0, f"{first} {second}")
            label = grade if rng.random() > 0.1 else int(rng.integers(1, K + 1))
            rows.append(
                {
                    "query": f"{first} {second}",
                    "title": " ".join(words),
                    "description": " ".join(rng.choice(NOISE, 4)),
                    "lang": "en" if qi % 2 else "de",
                    "query_id": f"q{qi}",
                    "label": label,
                }
            )
    return make_records(rows, grades=K)


class Bm25Predictor:
    """A model written in the test: BM25 within the scored batch, squashed into a grade distribution."""

    def __init__(self, grades: int = K) -> None:
        self.grades = grades

    def predict_proba(self, records: Any) -> np.ndarray:
        texts = pinrel.assemble(records)
        queries = records.column("query").to_pylist()
        index = pinrel.Bm25Index(texts)
        s = index.score(queries, np.arange(len(texts), dtype=np.int64)).astype(np.float64)
        centre = 1.0 + (self.grades - 1) * s / max(float(s.max()), 1e-9)
        logits = -2.0 * (np.arange(1, self.grades + 1)[None, :] - centre[:, None]) ** 2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)


def _check_report(
    report: Path, result: dict[str, Any], baselines: tuple[str, ...] = ("bm25", "hashed_lr")
) -> None:
    on_disk = json.loads((report / "metrics.json").read_text())
    assert on_disk == result
    assert list(on_disk) == ["model", "baselines"]
    assert list(on_disk["baselines"]) == list(baselines)
    expected = [*metrics.metric_keys(K), "per_language"]
    assert (
        expected
        == "n accuracy macro_f1 auroc>=2 auroc>=3 auroc>=4 ndcg@10 ndcg@20 spearman per_language".split()
    )
    for entry in [on_disk["model"], *on_disk["baselines"].values()]:
        assert list(entry) == expected
        for per_lang in entry["per_language"].values():
            assert list(per_lang) == expected[:-1]
    text = (report / "report.md").read_text()
    assert "| metric | model |" in text
    for png in PLOTS:
        assert f"]({png})" in text
        data = (report / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert not list(report.glob(".*.tmp"))  # atomic writes leave no temp files behind


@pytest.fixture(scope="module")
def synthetic() -> pa.Table:
    return synthetic_records()


def test_evaluate_end_to_end_with_cross_fitted_baselines(synthetic: pa.Table, tmp_path: Path) -> None:
    result = evaluate(Bm25Predictor(), synthetic, tmp_path, progress=False)
    _check_report(tmp_path, result)
    assert result["model"]["n"] == synthetic.num_rows
    assert set(result["model"]["per_language"]) == {"en", "de"}
    assert "5-fold cross-fitting grouped by query" in (tmp_path / "report.md").read_text()

    # The hashed LR must beat a constant predictor (class priors everywhere) on the synthetic signal.
    labels = np.asarray(synthetic.column("label").to_pylist())
    prior = np.bincount(labels - 1, minlength=K) / labels.size
    constant = metrics.compute_all(np.tile(prior, (labels.size, 1)), labels, synthetic.column("query_id"))
    lr = result["baselines"]["hashed_lr"]
    assert lr["accuracy"] > constant["accuracy"] + 0.2
    assert lr["macro_f1"] > constant["macro_f1"] + 0.2
    assert lr["auroc>=2"] > 0.8 and constant["auroc>=2"] == 0.5
    assert lr["spearman"] > 0.5 and np.isnan(constant["spearman"])
    assert result["model"]["spearman"] > 0.3  # the in-test BM25 model sees the signal too


def test_baseline_alone_fitted_on_train(synthetic: pa.Table, tmp_path: Path) -> None:
    train, test = split_by_query(synthetic, (0.7, 0.3), seed=1)
    result = evaluate("hashed_lr", test, tmp_path, train=train, baselines=("hashed_lr",), progress=False)
    _check_report(tmp_path, result, ("hashed_lr",))
    assert result["model"] == result["baselines"]["hashed_lr"]
    assert f"fitted on the {train.num_rows} train records" in (tmp_path / "report.md").read_text()
    assert "weighted" not in (tmp_path / "report.md").read_text()
    weights = pa.array(np.linspace(0.5, 2.0, train.num_rows))
    weighted = train.set_column(train.schema.get_field_index("weight"), "weight", weights)
    again = evaluate(
        "hashed_lr", test, tmp_path / "w", train=weighted, baselines=("hashed_lr",), progress=False
    )
    assert "train records (weighted by their `weight`)" in (tmp_path / "w" / "report.md").read_text()
    assert again["model"] != result["model"]  # the weights changed the fit


def test_baselines_are_deterministic_predictors(synthetic: pa.Table) -> None:
    for cls in (Bm25Baseline, HashedLRBaseline):
        a = cls(K)
        assert isinstance(a, Predictor)
        with pytest.raises(RuntimeError, match="before fit"):
            a.predict_proba(synthetic)
        p1 = a.fit(synthetic).predict_proba(synthetic)
        p2 = cls(K).fit(synthetic).predict_proba(synthetic)
        assert p1.shape == (synthetic.num_rows, K) and p1.dtype == np.float32
        np.testing.assert_allclose(p1.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(p1, p2)
    # lists of dicts work as well as tables
    rows = synthetic.slice(0, 5).to_pylist()
    np.testing.assert_allclose(a.predict_proba(rows), a.predict_proba(synthetic.slice(0, 5)), atol=1e-6)


def test_baselines_honour_pair_weights(synthetic: pa.Table) -> None:
    from pinrel.baselines import _SoftmaxRegression, record_weights

    # No weight anywhere (null = 1) is the unweighted fit to the last bit.
    nulls = synthetic.set_column(
        synthetic.schema.get_field_index("weight"), "weight", pa.nulls(synthetic.num_rows, pa.float64())
    )
    assert record_weights(nulls) is None and record_weights(synthetic.drop_columns(["weight"])) is None
    np.testing.assert_array_equal(
        HashedLRBaseline(K).fit(nulls).predict_proba(synthetic),
        HashedLRBaseline(K).fit(synthetic.drop_columns(["weight"])).predict_proba(synthetic),
    )
    # A weight of 2 counts a pair twice: the same fit as the pair written down twice.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    labels = rng.integers(1, K + 1, size=60)
    twice = np.r_[np.arange(60), np.arange(10)]
    weights = np.r_[np.full(10, 2.0), np.ones(50)]
    a = _SoftmaxRegression(K, 1e-2, 100).fit(sp.csr_matrix(x), labels, weights)
    b = _SoftmaxRegression(K, 1e-2, 100).fit(sp.csr_matrix(x[twice]), labels[twice])
    np.testing.assert_allclose(a.predict_proba(x), b.predict_proba(x), atol=1e-5)
    # ...and a different model from the unweighted one; a bad weight is named
    heavy = synthetic.set_column(
        synthetic.schema.get_field_index("weight"),
        "weight",
        pa.array(np.where(np.arange(synthetic.num_rows) % 3 == 0, 5.0, 0.2)),
    )
    for cls in (Bm25Baseline, HashedLRBaseline):
        assert not np.allclose(
            cls(K).fit(heavy).predict_proba(synthetic), cls(K).fit(nulls).predict_proba(synthetic)
        )
    with pytest.raises(ValueError, match=r"row 2: weight -1 should be a finite number > 0"):
        HashedLRBaseline(K).fit([{"query": "a", "label": 1}, {"query": "b", "label": 2, "weight": -1}])


def test_model_directory_is_loaded(synthetic: pa.Table, tmp_path: Path) -> None:
    """A saved (untrained) student: `evaluate` takes any model directory through `load_predictor`."""
    _untrained_student(tmp_path / "student", seed=0)
    result = evaluate(tmp_path / "student", synthetic, tmp_path / "report", baselines=(), progress=False)
    _check_report(tmp_path / "report", result, ())
    assert "student model" in (tmp_path / "report" / "report.md").read_text()


def _untrained_student(path: Path, seed: int) -> Path:
    import torch

    from pinrel.student import StudentConfig, StudentModel, save_student

    torch.manual_seed(seed)
    hasher = pinrel.FeatureHasher(n_features=2**12)
    student = StudentModel(StudentConfig(grades=K, n_features=2**12, embed_dim=8, hidden=(16,))).eval()
    save_student(path, student, hasher, pinrel.AssemblySpec())
    return path


def test_several_model_directories_are_evaluated_as_their_mean(synthetic: pa.Table, tmp_path: Path) -> None:
    from pinrel.predictor import Ensemble, load_predictor

    dirs = [_untrained_student(tmp_path / f"student{i}", seed=i) for i in range(2)]
    data = tmp_path / "data.parquet"
    pq.write_table(synthetic, data)
    report = tmp_path / "report"
    argv = ["eval", "--model", str(dirs[0]), "--model", str(dirs[1]), "--data", str(data)]
    assert main([*argv, "--report", str(report), "--baselines", "none", "--no-progress"]) == 0
    single = [load_predictor(d).predict_proba(synthetic) for d in dirs]
    assert np.abs(single[0] - single[1]).max() > 1e-3  # two different models, or the test proves nothing
    y = np.asarray(synthetic.column("label").to_pylist())
    got = json.loads((report / "metrics.json").read_text())["model"]
    q = query_keys(synthetic)
    for probs, equal in ((np.mean(single, axis=0), True), (single[0], False), (single[1], False)):
        want = metrics.compute_all(probs, y, q)
        assert (got["auroc>=2"] == pytest.approx(want["auroc>=2"])) is equal
        assert (got["spearman"] == pytest.approx(want["spearman"])) is equal
    assert "ensemble (mean probabilities) of student model" in (report / "report.md").read_text()

    ensemble = load_predictor([str(d) for d in dirs])
    assert isinstance(ensemble, Ensemble) and ensemble.grades == K
    with pytest.raises(ValueError, match="given twice"):
        load_predictor([dirs[0], str(dirs[0])])
    with pytest.raises(ValueError, match="non-empty list"):
        load_predictor([])
    with pytest.raises(ValueError, match=r"different scales \(K = \[4, 5\]\)"):
        Ensemble([Bm25Predictor(), Bm25Predictor(grades=5)])
    with pytest.raises(TypeError, match=r"members\[1\]: expected a Predictor, got str"):
        Ensemble([Bm25Predictor(), "bm25"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"a baseline \('bm25'\) cannot be a member"):
        evaluate([dirs[0], "bm25"], synthetic, tmp_path / "r2", baselines=(), progress=False)
    assert not (tmp_path / "r2").exists()


def test_errors_are_clear(synthetic: pa.Table, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"grades disagree: the model says K=5 but the data's metadata says K=4"
    ):
        evaluate(Bm25Predictor(grades=5), synthetic, tmp_path, baselines=(), progress=False)
    with pytest.raises(ValueError, match=r"grades argument says K=3 but the model says K=4"):
        evaluate(Bm25Predictor(), synthetic, tmp_path, grades=3, baselines=(), progress=False)
    unlabeled = synthetic.set_column(
        synthetic.schema.get_field_index("label"), "label", pa.nulls(synthetic.num_rows, pa.int32())
    )
    with pytest.raises(ValueError, match="data: the records have no labels"):
        evaluate(Bm25Predictor(), unlabeled, tmp_path, baselines=(), progress=False)
    with pytest.raises(ValueError, match="unknown name 'tfidf'"):
        evaluate(Bm25Predictor(), synthetic, tmp_path, baselines=("tfidf",), progress=False)
    with pytest.raises(TypeError, match="baselines: expected a list of names, got 'bm25'"):
        evaluate(Bm25Predictor(), synthetic, tmp_path, baselines="bm25", progress=False)  # type: ignore[arg-type]
    for kwargs, message in (
        ({"batch_size": float("nan")}, "batch_size: expected an integer >= 1, got nan"),
        ({"batch_size": 1.5}, "batch_size: expected an integer >= 1, got 1.5"),
        ({"n_folds": 1}, "n_folds: expected an integer >= 2, got 1"),
        ({"seed": -1}, "seed: expected an integer >= 0, got -1"),
    ):
        with pytest.raises(ValueError, match=message):
            evaluate(Bm25Predictor(), synthetic, tmp_path, progress=False, **kwargs)  # type: ignore[arg-type]

    class Broken(Bm25Predictor):
        def predict_proba(self, records: Any) -> np.ndarray:
            return super().predict_proba(records)[:, :2]

    with pytest.raises(ValueError, match=r"model: predict_proba returned shape \(\d+, 2\), expected"):
        evaluate(Broken(), synthetic, tmp_path, baselines=(), progress=False)
    assert not (tmp_path / "metrics.json").exists()


def test_cli_eval_with_column_mapping(
    synthetic: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A foreign file: its own column names and no K in its metadata, mapped on the command line.
    renamed = synthetic.select(["query", "title", "lang", "query_id", "label"]).rename_columns(
        ["search_term", "product_title", "lang", "query_id", "relevance"]
    )
    data = tmp_path / "pairs.parquet"
    pq.write_table(renamed.replace_schema_metadata(None), data)
    report = tmp_path / "report"
    options = "--grades 4 --map search_term=query --map product_title=title --map relevance=label"
    argv = ["eval", "--model", "bm25", "--data", str(data), "--report", str(report), *options.split()]
    assert main([*argv, "--baselines", "bm25", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "auroc>=4" in out and "bm25" in out
    result = json.loads((report / "metrics.json").read_text())
    _check_report(report, result, ("bm25",))

    missing = str(tmp_path / "missing.csv")
    assert main(["eval", "--model", "bm25", "--data", missing, "--report", str(report)]) == 2
    assert "error" in capsys.readouterr().err


def test_crowdflower_first_fold(tmp_path: Path) -> None:
    root = shared_data()
    if root is None or not (root / "crowdflower").is_dir():
        pytest.skip("CrowdFlower data (../shared/data/crowdflower) is not present on this machine")
    from pinrel.datasets import load_crowdflower

    table = load_crowdflower(root / "crowdflower", folds=[1])
    train, test = split_by_query(table, (0.7, 0.3), seed=0)
    result = evaluate(Bm25Predictor(), test, tmp_path, train=train, progress=False)
    _check_report(tmp_path, result)
    assert list(result["model"]["per_language"]) == ["en"]
    for name in ("bm25", "hashed_lr"):
        assert result["baselines"][name]["auroc>=2"] > 0.6
        assert 0.5 < result["baselines"][name]["ndcg@10"] <= 1.0
