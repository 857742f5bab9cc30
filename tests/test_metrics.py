"""pinrel.metrics against scikit-learn and scipy on random data, plus the edge cases sklearn leaves open."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, ndcg_score, roc_auc_score

from pinrel import metrics

K = 4


def _gain(labels: np.ndarray) -> np.ndarray:
    return 2.0 ** (labels - 1.0) - 1.0


def _sklearn_mean_ndcg(q: np.ndarray, y: np.ndarray, s: np.ndarray, k: int) -> float:
    """Per-query sklearn ndcg_score, averaged over queries with two or more grades."""
    values = [
        ndcg_score([_gain(y[q == g])], [s[q == g]], k=k)
        for g in np.unique(q)
        if np.unique(y[q == g]).size > 1
    ]
    return float(np.mean(values)) if values else math.nan


def _random_probs(rng: np.random.Generator, n: int, k: int = K) -> np.ndarray:
    logits = rng.normal(size=(n, k)) * 2
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------------
# cross-checks on random data


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 80))
def test_macro_f1_and_accuracy_match_sklearn(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    y, p = rng.integers(1, K + 1, n), rng.integers(1, K + 1, n)
    assert metrics.macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    assert metrics.accuracy(y, p) == pytest.approx(np.mean(y == p))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 80), st.integers(1, 6))
def test_auroc_matches_sklearn_with_ties(seed: int, n: int, levels: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.integers(0, levels, n).astype(float)  # few levels: many ties
    if y.min() == y.max():
        assert math.isnan(metrics.auroc(y, s))
    else:
        assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 5), st.sampled_from([1, 3, 10, 20]))
def test_ndcg_matches_sklearn_per_query(seed: int, n: int, n_queries: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    q = rng.integers(0, n_queries, n)
    y = rng.integers(1, K + 1, n)
    s = rng.integers(0, 4, n).astype(float)  # ties inside a query are averaged, as sklearn does
    ours = metrics.ndcg_at_k(q, y, s, k)
    expected = _sklearn_mean_ndcg(q, y, s, k)
    assert (math.isnan(ours) and math.isnan(expected)) or ours == pytest.approx(expected, abs=1e-12)


def test_spearman_and_confusion_match_references() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=200), rng.integers(1, K + 1, 200)
    assert metrics.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    p = rng.integers(1, K + 1, 200)
    np.testing.assert_array_equal(metrics.confusion_matrix(b, p, K), sk_confusion(b, p, labels=[1, 2, 3, 4]))


def test_compute_all_matches_piecewise_metrics() -> None:
    rng = np.random.default_rng(7)
    n = 300
    probs = _random_probs(rng, n)
    y = rng.integers(1, K + 1, n)
    q = rng.integers(0, 12, n).astype(str)
    langs = rng.choice(["en", "de", None], n)
    out = metrics.compute_all(probs, y, q, langs)
    assert list(out) == [*metrics.metric_keys(K), "per_language"]
    score = probs @ np.arange(1, K + 1)
    assert out["accuracy"] == pytest.approx(np.mean(probs.argmax(1) + 1 == y))
    assert out["macro_f1"] == pytest.approx(f1_score(y, probs.argmax(1) + 1, average="macro"))
    for t in range(2, K + 1):
        assert out[f"auroc>={t}"] == pytest.approx(roc_auc_score(y >= t, probs[:, t - 1 :].sum(1)))
    assert out["ndcg@10"] == pytest.approx(_sklearn_mean_ndcg(q, y, score, 10))
    assert out["spearman"] == pytest.approx(spearmanr(score, y).statistic)
    assert sorted(out["per_language"]) == ["de", "en", metrics.UNKNOWN_LANG]
    assert sum(v["n"] for v in out["per_language"].values()) == n
    en = langs == "en"
    assert out["per_language"]["en"]["accuracy"] == pytest.approx(np.mean(probs[en].argmax(1) + 1 == y[en]))


# ---------------------------------------------------------------------------------------------------
# edge cases


def test_auroc_is_nan_for_one_class_and_half_for_all_ties() -> None:
    assert math.isnan(metrics.auroc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(metrics.auroc([False, False], [0.1, 0.5]))
    assert metrics.auroc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5
    assert metrics.auroc([0, 1], [0.2, 0.9]) == 1.0


def test_ndcg_edge_cases() -> None:
    # one query, perfectly and reversely ranked
    y = np.array([4, 3, 1, 2])
    assert metrics.ndcg_at_k(["q"] * 4, y, [4.0, 3.0, 1.0, 2.0], 10) == pytest.approx(1.0)
    assert metrics.ndcg_at_k(["q"] * 4, y, [1.0, 2.0, 4.0, 3.0], 10) < 1.0
    # a query whose labels are all equal is skipped, whatever its grade
    q = ["a", "a", "b", "b", "c", "c"]
    labels = [2, 2, 1, 1, 3, 1]
    scores = [0.1, 0.9, 0.1, 0.9, 0.0, 1.0]  # only query c counts, and it is ranked wrongly
    ids, per_query = metrics.ndcg_per_query(q, labels, scores, 10)
    assert list(ids) == ["a", "b", "c"]
    assert np.isnan(per_query[:2]).all() and per_query[2] < 1.0
    assert metrics.ndcg_at_k(q, labels, scores, 10) == pytest.approx(per_query[2])
    assert math.isnan(metrics.ndcg_at_k(["a", "a"], [3, 3], [0.0, 1.0], 10))
    # all scores tied: the expected DCG over orders, not the order a sort happens to produce
    tied = metrics.ndcg_at_k(["q"] * 2, [1, 4], [0.5, 0.5], 1)
    assert tied == pytest.approx(0.5)
    # integer and mixed ids group the same way as strings
    assert metrics.ndcg_at_k([1, 1, 2, 2], [1, 2, 2, 1], [0, 1, 1, 0], 5) == pytest.approx(1.0)


def test_spearman_of_constant_is_nan() -> None:
    assert math.isnan(metrics.spearman([1.0, 1.0, 1.0], [1, 2, 3]))
    assert math.isnan(metrics.spearman([1.0], [2.0]))


def test_macro_f1_with_grades_ignores_absent_grades() -> None:
    assert metrics.macro_f1([1, 1, 2], [1, 1, 2], grades=5) == 1.0
    assert metrics.macro_f1([1, 2], [2, 1]) == 0.0


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: metrics.auroc([0, 1], [0.1, float("nan")]), "scores"),
        (lambda: metrics.spearman([0.1, float("nan")], [1, 2]), "a"),
        (lambda: metrics.accuracy([1, float("nan")], [1, 2]), "labels"),
        (lambda: metrics.ndcg_at_k(["a", "a"], [1, 2], [np.inf, 1.0], 10), "scores"),
        (lambda: metrics.compute_all([[0.5, np.nan], [0.5, 0.5]], [1, 2], ["a", "a"]), "probs"),
        (lambda: metrics.calibration_bins([0.5, np.nan], [1, 0]), "probabilities"),
    ],
)
def test_nan_input_is_an_error_naming_the_argument(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}: .*(NaN|non-finite)"):
        call()  # type: ignore[operator]


def test_invalid_labels_and_shapes() -> None:
    probs = np.full((3, K), 1.0 / K)
    with pytest.raises(ValueError, match=r"labels: grade 5 at index 2 is outside 1\.\.4"):
        metrics.compute_all(probs, [1, 2, 5], ["a", "a", "b"])
    with pytest.raises(ValueError, match=r"labels: grade 0"):
        metrics.confusion_matrix([0, 1], [1, 1], K)
    with pytest.raises(ValueError, match=r"labels: grades must be integers"):
        metrics.accuracy([1.5, 2.0], [1, 2])
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.compute_all(probs, [1, 2], ["a", "a"])
    with pytest.raises(ValueError, match=r"probs: expected shape \[n, K\]"):
        metrics.compute_all(np.ones(3), [1, 1, 1], ["a", "a", "a"])
    with pytest.raises(ValueError, match=r"probs: row 1 sums to"):
        metrics.compute_all([[0.5, 0.5], [0.9, 0.9]], [1, 2], ["a", "a"])
    with pytest.raises(ValueError, match="labels_binary"):
        metrics.auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="query_ids: missing"):
        metrics.ndcg_at_k(["a", None], [1, 2], [0.1, 0.2], 10)
    with pytest.raises(ValueError, match="k: expected a positive integer"):
        metrics.ndcg_at_k(["a"], [1], [0.1], 0)
    with pytest.raises(ValueError, match="labels: 1 missing label"):
        metrics.check_labels(np.array([1, None], dtype=object), K)
    with pytest.raises(ValueError, match="grades: expected an integer >= 2"):
        metrics.metric_keys(1)


def test_calibration_bins() -> None:
    p = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    o = np.array([0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="n_bins: expected an integer from 1 to 10000, got 1000000000000"):
        metrics.calibration_bins(p, o, n_bins=10**12)  # was a 7 TiB allocation
    bins = metrics.calibration_bins(p, o, n_bins=10)
    assert bins.count.sum() == 5 and bins.count[-1] == 2 and bins.count[1] == 2
    assert bins.frequency[1] == 0.5 and bins.confidence[1] == pytest.approx(0.15)
    assert np.isnan(bins.confidence[5])
    expected_ece = (1 * 0.05 + 2 * abs(0.5 - 0.15) + 2 * abs(1 - 0.975)) / 5
    assert bins.ece == pytest.approx(expected_ece)
    # perfectly calibrated in every bin
    assert metrics.calibration_bins([0.5, 0.5], [0, 1]).ece == 0.0


def test_expected_grade() -> None:
    np.testing.assert_allclose(metrics.expected_grade([[1, 0, 0], [0, 0.5, 0.5]]), [1.0, 2.5])


def test_single_row_and_single_query() -> None:
    out = metrics.compute_all([[0.2, 0.8]], [2], ["only"], ["en"])
    assert out["n"] == 1 and out["accuracy"] == 1.0
    assert math.isnan(out["auroc>=2"]) and math.isnan(out["ndcg@10"]) and math.isnan(out["spearman"])


def test_grades_are_bounded_and_checked_first() -> None:
    limit = metrics.MAX_GRADES
    assert metrics.check_grades(limit) == limit
    for bad in (limit + 1, 2**40, 1, True, "3", 3.0):
        with pytest.raises(ValueError, match="grades: expected an integer >= 2"):
            metrics.check_grades(bad)
    # macro_f1 used `grades` before checking it (numpy errors, or "outside 1..True").
    for bad in ("3", True, -1):
        with pytest.raises(ValueError, match="grades: expected an integer >= 2"):
            metrics.macro_f1([1, 2], [1, 2], grades=bad)
    # An inferred K is bounded too: 10^6 would have built a 10^6 x 10^6 confusion matrix.
    with pytest.raises(ValueError, match=rf"labels: grade 1000000 at index 0 is outside 1\.\.{limit}"):
        metrics.macro_f1([10**6], [1])
    # A value past int64 is reported as itself, not as the number the cast wrapped it to.
    with pytest.raises(ValueError, match=r"grade 1e\+300 at index 1"):
        metrics.accuracy([1, 1e300], [1, 1])
    # Gains 2^grade overflowed past grade 1024, and the query's nDCG silently became NaN.
    with pytest.raises(ValueError, match="outside"):
        metrics.ndcg_at_k(["a", "a"], [1, 1100], [0.2, 0.1], 10)


def test_array_shapes_and_kinds_are_named() -> None:
    with pytest.raises(ValueError, match="labels: expected a 1-D array of numbers"):
        metrics.accuracy([1, [1, 2]], [1, 2])
    # Complex input used to lose its imaginary part in the cast, silently.
    with pytest.raises(ValueError, match="predicted: expected real numbers"):
        metrics.accuracy([1, 2], np.array([1 + 1j, 2]))
    # The index reported is the value's that is out of range, not the first below 0.
    with pytest.raises(ValueError, match=r"value 1\.5 at index 1 is outside \[0, 1\]"):
        metrics.calibration_bins([-1e-7, 1.5], [0, 1])
