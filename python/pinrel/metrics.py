"""Relevance metrics on graded labels 1..K: pure numpy/scipy, validated inputs, no scikit-learn.

Conventions shared by every function here:
* grades are integers 1..K (K >= 2); a K-way model gives probabilities `[n, K]`, column j = grade j+1;
* the ranking score of a model is its expected grade, and the score for "grade >= t" is P(grade >= t),
  so AUROC is reported at every binarising threshold t = 2..K as the reference system does;
* nDCG uses the graded gain 2^(label-1) - 1, so grade 1 (irrelevant) contributes nothing;
* a metric that is undefined on the given data (one class absent, a constant input) is NaN, which
  the report layer writes as JSON null rather than a misleading 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from .checks import check_int

__all__ = [
    "CalibrationBins",
    "accuracy",
    "auroc",
    "calibration_bins",
    "check_grades",
    "check_labels",
    "compute_all",
    "confusion_matrix",
    "expected_grade",
    "macro_f1",
    "metric_keys",
    "ndcg_at_k",
    "ndcg_per_query",
    "spearman",
]

UNKNOWN_LANG = "und"  # BCP 47 "undetermined": records without a language still get a row


# ---------------------------------------------------------------------------------------------------
# validation


# More grades than this is a mistake (an unbinned score or an id column read as the label). The bound
# also keeps nDCG's 2^grade gains finite and K x K confusion matrices small.
MAX_GRADES = 1000


def grades_problem(grades: Any) -> str | None:
    """What is wrong with `grades` as a number of grades K, or None when it is an integer in
    2..MAX_GRADES: the one rule for K, which every reader of K words in its own error."""
    if isinstance(grades, bool) or not isinstance(grades, (int, np.integer)) or not 2 <= grades <= MAX_GRADES:
        return f"expected an integer >= 2 (at most {MAX_GRADES}), got {grades!r}"
    return None


def _as_1d(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"{name}: expected a 1-D array of numbers ({e})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def _as_finite(x: Any, name: str) -> npt.NDArray[np.float64]:
    arr = _as_1d(x, name)
    # Complex numbers are numbers to numpy, but the cast would drop their imaginary part.
    real = np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)
    if arr.dtype == object or not (real or arr.dtype == np.bool_):
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise ValueError(f"{name}: {bad.size} non-finite value(s) (NaN or inf), first at index {bad[0]}")
    return out


def _as_grades(x: Any, name: str, grades: int | None = None) -> npt.NDArray[np.int64]:
    """Integer grades in 1..K; floats are accepted only when integral (CSV readers produce them)."""
    arr = _as_finite(x, name)
    if arr.size and not np.all(arr == np.round(arr)):
        i = int(np.flatnonzero(arr != np.round(arr))[0])
        raise ValueError(f"{name}: grades must be integers, got {arr[i]!r} at index {i}")
    upper = grades if grades is not None else MAX_GRADES
    # Checked as floats: a value past int64 would wrap in the cast and be reported as another number.
    bad = np.flatnonzero((arr < 1) | (arr > upper))
    if bad.size:
        i = int(bad[0])
        value = int(arr[i]) if abs(arr[i]) < 2**53 else float(arr[i])
        raise ValueError(f"{name}: grade {value} at index {i} is outside 1..{upper}")
    return arr.astype(np.int64)


def check_labels(labels: Any, grades: int, name: str = "labels") -> npt.NDArray[np.int64]:
    """Labels as int64 grades, or ValueError naming `name` (missing values, non-integers, outside 1..K)."""
    arr = np.asarray(labels)
    if arr.dtype == object:
        missing = [i for i, v in enumerate(arr.reshape(-1)) if v is None]
        if missing:
            raise ValueError(f"{name}: {len(missing)} missing label(s), first at index {missing[0]}")
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: expected integer grades ({e})") from e
    return _as_grades(arr, name, check_grades(grades))


def check_grades(grades: int) -> int:
    """K as a plain int, or ValueError unless `grades_problem` finds it valid."""
    problem = grades_problem(grades)
    if problem is not None:
        raise ValueError(f"grades: {problem}")
    return int(grades)


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {', '.join(f'{k}={v}' for k, v in lengths.items())}")


def _as_probs(probs: Any, name: str = "probs") -> npt.NDArray[np.float64]:
    arr = np.asarray(probs)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name}: expected shape [n, K] with K >= 2, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    bad = np.argwhere(~np.isfinite(out))
    if bad.size:
        raise ValueError(f"{name}: non-finite value (NaN or inf) at row {bad[0][0]}, column {bad[0][1]}")
    if (out < -1e-6).any():
        raise ValueError(f"{name}: negative probability at row {int(np.argwhere(out < -1e-6)[0][0])}")
    # float32 softmax outputs drift by ~1e-6 per row; anything larger is not a distribution.
    sums = out.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
    if off.size:
        raise ValueError(f"{name}: row {off[0]} sums to {sums[off[0]]:.6f}, expected 1")
    return out


def _group_ids(query_ids: Any, name: str = "query_ids") -> npt.NDArray[np.int64]:
    """Dense group index per row; string, integer and mixed object ids are all accepted."""
    arr = _as_1d(query_ids, name)
    if arr.dtype == object:
        missing = [i for i, v in enumerate(arr) if v is None]
        if missing:
            raise ValueError(f"{name}: missing (None) query id at index {missing[0]}")
        # Mixed types (int and str) cannot be sorted by np.unique; their text is a faithful key.
        arr = np.array([str(v) for v in arr], dtype=object)
    elif np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"{name}: NaN query id at index {int(np.flatnonzero(np.isnan(arr))[0])}")
    _, inverse = np.unique(arr, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# classification


def expected_grade(probs: Any) -> npt.NDArray[np.float64]:
    """E[grade] = sum_j P(grade j) * j: the ranking score every K-way model is judged by."""
    p = _as_probs(probs)
    return p @ np.arange(1, p.shape[1] + 1, dtype=np.float64)


def accuracy(labels: Any, predicted: Any) -> float:
    """Fraction of exact grade matches (NaN on empty input)."""
    y = _as_grades(labels, "labels")
    p = _as_grades(predicted, "predicted")
    _same_length(labels=y, predicted=p)
    return float(np.mean(y == p)) if y.size else float("nan")


def confusion_matrix(labels: Any, predicted: Any, grades: int) -> npt.NDArray[np.int64]:
    """`[K, K]` counts, rows = true grade, columns = predicted grade (both 1..K in order)."""
    k = check_grades(grades)
    y = _as_grades(labels, "labels", k)
    p = _as_grades(predicted, "predicted", k)
    _same_length(labels=y, predicted=p)
    return np.bincount((y - 1) * k + (p - 1), minlength=k * k).reshape(k, k).astype(np.int64)


def macro_f1(labels: Any, predicted: Any, grades: int | None = None) -> float:
    """Unweighted mean of per-grade F1 over the grades present in `labels` or `predicted`.

    A grade that appears in neither has no defined F1 and is left out (as scikit-learn does); a
    grade that is predicted but never true, or true but never predicted, scores 0.
    """
    if grades is not None:
        grades = check_grades(grades)
    y = _as_grades(labels, "labels", grades)
    p = _as_grades(predicted, "predicted", grades)
    _same_length(labels=y, predicted=p)
    if not y.size:
        return float("nan")
    k = int(max(y.max(), p.max())) if grades is None else grades
    cm = confusion_matrix(y, p, max(k, 2))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted_n = cm.sum(axis=0)
    present = (support + predicted_n) > 0
    denom = support + predicted_n  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean())


def auroc(labels_binary: Any, scores: Any) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic with mid-ranks for ties.

    Ties between a positive and a negative count one half, which is exactly the trapezoidal area
    of the ROC curve. NaN when only one class is present: the area is undefined, not 0.5.
    """
    y = _as_1d(labels_binary, "labels_binary")
    s = _as_finite(scores, "scores")
    _same_length(labels_binary=y, scores=s)
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise ValueError(f"labels_binary: expected 0/1 or bool, got dtype {y.dtype}")
    yf = y.astype(np.float64)
    if np.isnan(yf).any() or not np.isin(yf, (0.0, 1.0)).all():
        raise ValueError("labels_binary: expected only 0/1 (or False/True) values")
    pos = yf == 1.0
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s, method="average")
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation (Pearson on mid-ranks); NaN when either input is constant."""
    x = _as_finite(a, "a")
    y = _as_finite(b, "b")
    _same_length(a=x, b=y)
    if x.size < 2:
        return float("nan")
    rx = rankdata(x) - (x.size + 1) / 2.0
    ry = rankdata(y) - (y.size + 1) / 2.0
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    if denom == 0.0:
        return float("nan")
    return float(np.clip((rx * ry).sum() / denom, -1.0, 1.0))


# ---------------------------------------------------------------------------------------------------
# ranking


def _gain(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    return np.exp2(labels.astype(np.float64) - 1.0) - 1.0


def _dcg_with_ties(gains: np.ndarray, scores: np.ndarray, k: int) -> float:
    """DCG@k where tied scores share the mean gain of their group.

    This is the expected DCG over every order of the tied items, so a model that cannot separate
    two items is neither rewarded nor punished by the arbitrary order a sort happens to produce.
    """
    discount = 1.0 / np.log2(np.arange(2, gains.size + 2, dtype=np.float64))
    discount[k:] = 0.0
    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    g_sorted = gains[order]
    # boundaries of runs of equal scores in the sorted order
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    group_mean = np.add.reduceat(g_sorted, starts) / np.diff(np.r_[starts, s_sorted.size])
    group_discount = np.add.reduceat(discount, starts)
    return float((group_mean * group_discount).sum())


def _ideal_dcg(gains: np.ndarray, k: int) -> float:
    top = np.sort(gains)[::-1][:k]
    return float((top / np.log2(np.arange(2, top.size + 2, dtype=np.float64))).sum())


def ndcg_per_query(
    query_ids: Any, labels: Any, scores: Any, k: int
) -> tuple[np.ndarray, npt.NDArray[np.float64]]:
    """`(unique_query_ids, ndcg)`: nDCG@k of every query, NaN for queries whose labels are all equal.

    A query whose items all carry one grade has no ranking to get right: its nDCG is 1 for every
    order (or 0/0 when the grade is 1), so it is excluded from the mean instead of inflating it.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    y = _as_grades(labels, "labels")
    s = _as_finite(scores, "scores")
    q_raw = _as_1d(query_ids, "query_ids")
    _same_length(query_ids=q_raw, labels=y, scores=s)
    groups = _group_ids(q_raw)
    n_groups = int(groups.max()) + 1 if groups.size else 0
    first_row = np.full(n_groups, -1, dtype=np.int64)
    first_row[groups[::-1]] = np.arange(groups.size - 1, -1, -1)
    order = np.argsort(groups, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(groups, minlength=n_groups))]
    gains = _gain(y)
    out = np.full(n_groups, np.nan)
    for g in range(n_groups):
        rows = order[bounds[g] : bounds[g + 1]]
        if np.all(y[rows] == y[rows[0]]):
            continue
        out[g] = _dcg_with_ties(gains[rows], s[rows], int(k)) / _ideal_dcg(gains[rows], int(k))
    return q_raw[first_row], out


def ndcg_at_k(query_ids: Any, labels: Any, scores: Any, k: int) -> float:
    """Mean over queries of nDCG@k (gain 2^(label-1)-1, ties averaged); constant-label queries skipped.

    NaN when no query has two different grades.
    """
    _, per_query = ndcg_per_query(query_ids, labels, scores, k)
    valid = per_query[~np.isnan(per_query)]
    return float(valid.mean()) if valid.size else float("nan")


# ---------------------------------------------------------------------------------------------------
# calibration


@dataclass(frozen=True)
class CalibrationBins:
    """Equal-width confidence bins: what a reliability diagram plots and what ECE summarises."""

    edges: npt.NDArray[np.float64]  # [n_bins + 1]
    confidence: npt.NDArray[np.float64]  # mean predicted probability per bin (NaN if empty)
    frequency: npt.NDArray[np.float64]  # observed frequency of the event per bin (NaN if empty)
    count: npt.NDArray[np.int64]

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean |frequency - confidence|."""
        n = self.count.sum()
        if n == 0:
            return float("nan")
        used = self.count > 0
        gap = np.abs(self.frequency[used] - self.confidence[used])
        return float((gap * self.count[used]).sum() / n)


def calibration_bins(probabilities: Any, outcomes: Any, n_bins: int = 10) -> CalibrationBins:
    """Bin predicted probabilities of an event and compare them with how often it happened.

    For the top-label diagram pass the argmax probability and `argmax == label`; for threshold t
    pass P(grade >= t) and `label >= t`.
    """
    # A bin per 0.0001 of probability is already finer than any plot; more only allocates.
    n_bins = check_int(n_bins, "n_bins", 1, 10_000)
    p = _as_finite(probabilities, "probabilities")
    o = _as_finite(outcomes, "outcomes")
    _same_length(probabilities=p, outcomes=o)
    outside = np.flatnonzero((p < -1e-6) | (p > 1 + 1e-6))
    if outside.size:
        i = int(outside[0])
        raise ValueError(f"probabilities: value {float(p[i])} at index {i} is outside [0, 1]")
    if not np.isin(o, (0.0, 1.0)).all():
        raise ValueError("outcomes: expected only 0/1 (or False/True) values")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    # the last bin is closed on the right so probability 1.0 is counted
    idx = np.clip(np.searchsorted(edges, np.clip(p, 0.0, 1.0), side="right") - 1, 0, int(n_bins) - 1)
    count = np.bincount(idx, minlength=int(n_bins)).astype(np.int64)
    sum_p = np.bincount(idx, weights=p, minlength=int(n_bins))
    sum_o = np.bincount(idx, weights=o, minlength=int(n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(count > 0, sum_p / np.maximum(count, 1), np.nan)
        freq = np.where(count > 0, sum_o / np.maximum(count, 1), np.nan)
    return CalibrationBins(edges=edges, confidence=conf, frequency=freq, count=count)


# ---------------------------------------------------------------------------------------------------
# everything at once


def metric_keys(grades: int) -> list[str]:
    """The headline keys of one model's metrics, in report order (what other tools may rely on)."""
    k = check_grades(grades)
    return [
        "n",
        "accuracy",
        "macro_f1",
        *[f"auroc>={t}" for t in range(2, k + 1)],
        "ndcg@10",
        "ndcg@20",
        "spearman",
    ]


def _headline(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, float | int]:
    k = probs.shape[1]
    predicted = probs.argmax(axis=1) + 1
    score = probs @ np.arange(1, k + 1, dtype=np.float64)
    # P(grade >= t) for every t at once: reversed cumulative sums of the columns
    at_least = np.cumsum(probs[:, ::-1], axis=1)[:, ::-1]
    out: dict[str, float | int] = {
        "n": int(labels.size),
        "accuracy": accuracy(labels, predicted),
        "macro_f1": macro_f1(labels, predicted, k),
    }
    for t in range(2, k + 1):
        out[f"auroc>={t}"] = auroc(labels >= t, at_least[:, t - 1])
    out["ndcg@10"] = ndcg_at_k(groups, labels, score, 10)
    out["ndcg@20"] = ndcg_at_k(groups, labels, score, 20)
    out["spearman"] = spearman(score, labels)
    return out


def _lang_keys(langs: Any, n: int) -> np.ndarray:
    arr = _as_1d(np.asarray(langs, dtype=object), "langs")
    if arr.size != n:
        raise ValueError(f"length mismatch: langs={arr.size}, labels={n}")
    return np.array([UNKNOWN_LANG if (v is None or v == "") else str(v) for v in arr], dtype=object)


def compute_all(
    probs: Any, labels: Any, query_ids: Any, langs: Sequence[str | None] | np.ndarray | None = None
) -> dict[str, Any]:
    """Every headline metric of one model (keys from `metric_keys`), plus `per_language` when `langs`
    is given: `{lang: {same keys}}` with missing languages under "und".
    """
    p = _as_probs(probs)
    y = _as_grades(labels, "labels", p.shape[1])
    q = _as_1d(query_ids, "query_ids")
    _same_length(probs=p, labels=y, query_ids=q)
    groups = _group_ids(q)
    out: dict[str, Any] = _headline(p, y, groups)
    if langs is not None:
        lang = _lang_keys(langs, y.size)
        out["per_language"] = {
            str(code): _headline(p[lang == code], y[lang == code], groups[lang == code])
            for code in sorted(set(lang.tolist()))
        }
    return out
