"""Two cheap baselines every model is reported against: BM25 and hashed-feature logistic regression.

Both implement the `Predictor` protocol (`grades`, `predict_proba(records) -> [n, K]`) plus
`fit(records)`, live in memory only, and are deterministic: the softmax regression under both starts
from zero weights and is fitted full-batch with L-BFGS, so the same records give the same model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch

from .assembly import assemble
from .features import Bm25Index, FeatureHasher
from .metrics import check_grades, check_labels
from .records import query_key

__all__ = [
    "BASELINES",
    "Bm25Baseline",
    "HashedLRBaseline",
    "make_baseline",
    "query_keys",
    "record_labels",
    "record_weights",
]


# ---------------------------------------------------------------------------------------------------
# record access: Arrow tables in the pipeline, lists of dicts in notebooks and tests


def _is_arrow(records: Any) -> bool:
    return type(records).__module__.startswith("pyarrow") and hasattr(records, "column_names")


def _column(records: Any, name: str) -> list[Any]:
    if _is_arrow(records):
        if name not in records.column_names:
            return [None] * records.num_rows
        return records.column(name).to_pylist()
    if isinstance(records, (list, tuple)):
        return [r.get(name) for r in records]
    raise TypeError(
        f"records: expected a pyarrow Table/RecordBatch or a list of dicts, got {type(records).__name__}"
    )


def _queries(records: Any) -> list[str]:
    queries = _column(records, "query")
    missing = [i for i, q in enumerate(queries) if not isinstance(q, str)]
    if missing:
        raise ValueError(f"records: 'query' is missing or not a string at row {missing[0]}")
    return queries


def query_keys(records: Any) -> npt.NDArray[np.object_]:
    """One key per row naming its query: `query_id` where present, else the normalised query text.

    Ids and texts are prefixed differently so an id can never collide with a query that reads alike;
    texts go through `records.query_key` so "Red Mug" and "red  mug" are one query, as in splits.
    """
    ids = _column(records, "query_id")
    texts = _queries(records)
    keys = [f"id:{i}" if i is not None else f"q:{query_key(t)}" for i, t in zip(ids, texts, strict=True)]
    return np.array(keys, dtype=object)


def record_labels(records: Any, grades: int) -> npt.NDArray[np.int64]:
    """The `label` column as grades 1..K; a clear error when it is absent, empty or has gaps."""
    labels = _column(records, "label")
    n = len(labels)
    if n == 0:
        raise ValueError("records: no rows to fit on")
    if all(v is None for v in labels):
        raise ValueError(
            "records: no labels (column 'label' is absent or empty); fitting needs graded records"
        )
    return check_labels(np.array(labels, dtype=object), grades, "label")


def record_weights(records: Any) -> npt.NDArray[np.float64] | None:
    """The `weight` column (null counts as 1), or None when no pair carries one: then fitting is exactly
    the unweighted fit, not a weighted one with all-ones weights and its own rounding."""
    values = _column(records, "weight")
    if all(v is None for v in values):
        return None
    w = np.ones(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        if v is not None and not (ok and math.isfinite(v) and v > 0):
            raise ValueError(f"records: row {i + 1}: weight {v!r} should be a finite number > 0")
        if v is not None:
            w[i] = float(v)
    return w


def _num_rows(records: Any) -> int:
    return int(records.num_rows) if _is_arrow(records) else len(records)


# ---------------------------------------------------------------------------------------------------
# multinomial logistic regression (torch, full batch, deterministic)


class _SparseLinear(torch.autograd.Function):
    """`X @ W` for a fixed scipy CSR matrix X, differentiable in W.

    scipy's single-threaded CSR kernels are several times faster than torch's CPU sparse matmul
    at these shapes, and their fixed summation order makes every fit bit-reproducible; torch still
    owns the loss, the gradients of everything else and the optimiser.
    """

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, x: sp.csr_matrix, xt: sp.csr_matrix) -> torch.Tensor:
        ctx.xt = xt
        return torch.from_numpy(np.asarray(x @ w.detach().numpy()))

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return torch.from_numpy(np.asarray(ctx.xt @ grad_out.detach().numpy())), None, None


@contextlib.contextmanager
def _single_torch_thread() -> Iterator[None]:
    """L-BFGS spends its time in vector ops over W that are too small to split across threads; on a
    busy machine torch's intra-op threads make them an order of magnitude slower, not faster.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _SoftmaxRegression:
    """K-way logistic regression: mean cross-entropy + (l2 / 2) * ||W||^2 (the bias is not penalised)."""

    def __init__(self, grades: int, l2: float, max_iter: int) -> None:
        self.grades = grades
        self.l2 = l2
        self.max_iter = max_iter
        self.weight: npt.NDArray[np.float64] | None = None
        self.bias: npt.NDArray[np.float64] | None = None

    def fit(
        self,
        x: sp.csr_matrix,
        labels: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64] | None = None,
    ) -> _SoftmaxRegression:
        n_columns = x.shape[1]
        x = sp.csr_matrix(x, dtype=np.float64)
        # Columns no training row touches would only ever get zero weight from the L2 term; fitting
        # on the used ones is exact and shrinks W (and L-BFGS's history) from 2^19 rows to thousands.
        columns = np.unique(x.indices)
        x = x[:, columns].tocsr()
        xt = x.T.tocsr()
        target = torch.from_numpy(labels - 1)
        # Normalised to mean 1 so that the L2 term keeps the same strength against the data term.
        w_rows = None if weights is None else torch.from_numpy(weights / weights.mean())
        w = torch.zeros(columns.size, self.grades, dtype=torch.float64, requires_grad=True)
        # Starting from the class log-priors makes the first L-BFGS steps about the features.
        prior = np.bincount(labels - 1, weights=weights, minlength=self.grades) + 1.0
        b = torch.tensor(np.log(prior / prior.sum()), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w, b], lr=1.0, max_iter=self.max_iter, history_size=10, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = _SparseLinear.apply(w, x, xt) + b
            if w_rows is None:
                data = torch.nn.functional.cross_entropy(logits, target)
            else:
                data = (w_rows * torch.nn.functional.cross_entropy(logits, target, reduction="none")).mean()
            loss = data + 0.5 * self.l2 * (w * w).sum()
            loss.backward()
            return loss

        with _single_torch_thread():
            opt.step(closure)
        full = np.zeros((n_columns, self.grades))
        full[columns] = w.detach().numpy()
        self.weight = full
        self.bias = b.detach().numpy().copy()
        return self

    def predict_proba(self, x: sp.csr_matrix | np.ndarray) -> npt.NDArray[np.float64]:
        if self.weight is None or self.bias is None:
            raise RuntimeError("predict_proba called before fit")
        logits = np.asarray(x @ self.weight) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    # a constant feature carries nothing; dividing by 1 keeps it at 0 instead of NaN
    return mean, np.where(std > 1e-12, std, 1.0)


# ---------------------------------------------------------------------------------------------------
# BM25


def _per_query_max(scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
    _, group = np.unique(keys, return_inverse=True)
    group = group.reshape(-1)
    top = np.zeros(int(group.max()) + 1 if group.size else 0)
    np.maximum.at(top, group, scores)
    return top[group]


class Bm25Baseline:
    """Okapi BM25 of the query against the assembled item text, turned into grade probabilities.

    The index is built over the unique item texts of the records being scored, so IDF reflects that
    corpus. A 2-feature softmax regression on [bm25, bm25 / max bm25 of the same query], fitted on
    training records, maps scores to K-way probabilities: the per-query ratio lets it tell "the best
    match for this query" from "a weak match", which a raw score cannot across queries.
    """

    def __init__(
        self, grades: int, k1: float = 1.2, b: float = 0.75, l2: float = 1e-4, max_iter: int = 200
    ) -> None:
        self.grades = check_grades(grades)
        self.k1 = k1
        self.b = b
        self._model = _SoftmaxRegression(self.grades, l2, max_iter)
        self._scale: tuple[np.ndarray, np.ndarray] | None = None

    def scores(self, records: Any) -> npt.NDArray[np.float32]:
        """Raw BM25 score per row (query vs assembled item text)."""
        queries = _queries(records)
        texts = assemble(records)
        unique, doc_ids = np.unique(np.array(texts, dtype=object), return_inverse=True)
        index = Bm25Index(unique.tolist(), k1=self.k1, b=self.b)
        return index.score(queries, doc_ids.reshape(-1).astype(np.int64))

    def _features(self, records: Any) -> np.ndarray:
        s = self.scores(records).astype(np.float64)
        top = _per_query_max(s, query_keys(records))
        ratio = np.divide(s, top, out=np.zeros_like(s), where=top > 0)
        return np.column_stack([s, ratio])

    def fit(self, records: Any) -> Bm25Baseline:
        labels = record_labels(records, self.grades)
        x = self._features(records)
        self._scale = _standardiser(x)
        self._model.fit(sp.csr_matrix((x - self._scale[0]) / self._scale[1]), labels, record_weights(records))
        return self

    def predict_proba(self, records: Any) -> npt.NDArray[np.float32]:
        if self._scale is None:
            raise RuntimeError("Bm25Baseline.predict_proba called before fit")
        if _num_rows(records) == 0:
            return np.zeros((0, self.grades), dtype=np.float32)
        x = (self._features(records) - self._scale[0]) / self._scale[1]
        return self._model.predict_proba(x).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# hashed features + logistic regression


class HashedLRBaseline:
    """Softmax regression on [hashed query n-grams | hashed item n-grams | query-item match features].

    The two hashed blocks share one `FeatureHasher` but sit in separate column ranges, so "mug" in
    the query and "mug" in the title are different features; the match features (BM25, overlap,
    phrase match, ...) are standardised on the training records and carry the interaction.
    """

    def __init__(
        self, grades: int, n_features: int = 2**18, l2: float = 1e-2, max_iter: int = 50, seed: int = 0
    ) -> None:
        self.grades = check_grades(grades)
        self.hasher = FeatureHasher(n_features=n_features, seed=seed)
        self._model = _SoftmaxRegression(self.grades, l2, max_iter)
        self._scale: tuple[np.ndarray, np.ndarray] | None = None

    def _blocks(self, records: Any) -> tuple[sp.csr_matrix, np.ndarray]:
        queries = _queries(records)
        texts = assemble(records)
        hashed = sp.hstack([self.hasher.transform(queries), self.hasher.transform(texts)], format="csr")
        return hashed, self.hasher.transform_pairs(queries, texts).astype(np.float64)

    def _design(self, hashed: sp.csr_matrix, match: np.ndarray) -> sp.csr_matrix:
        assert self._scale is not None
        scaled = (match - self._scale[0]) / self._scale[1]
        return sp.hstack([hashed, sp.csr_matrix(scaled)], format="csr")

    def fit(self, records: Any) -> HashedLRBaseline:
        labels = record_labels(records, self.grades)
        hashed, match = self._blocks(records)
        self._scale = _standardiser(match)
        self._model.fit(self._design(hashed, match), labels, record_weights(records))
        return self

    def predict_proba(self, records: Any) -> npt.NDArray[np.float32]:
        if self._scale is None:
            raise RuntimeError("HashedLRBaseline.predict_proba called before fit")
        if _num_rows(records) == 0:
            return np.zeros((0, self.grades), dtype=np.float32)
        return self._model.predict_proba(self._design(*self._blocks(records))).astype(np.float32)


BASELINES: dict[str, type[Bm25Baseline] | type[HashedLRBaseline]] = {
    "bm25": Bm25Baseline,
    "hashed_lr": HashedLRBaseline,
}


def make_baseline(name: str, grades: int, **kwargs: Any) -> Bm25Baseline | HashedLRBaseline:
    """An unfitted baseline by its report name ('bm25' or 'hashed_lr')."""
    if name not in BASELINES:
        raise ValueError(f"baseline: unknown name {name!r}; expected one of {sorted(BASELINES)}")
    return BASELINES[name](grades, **kwargs)


def baseline_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validated, de-duplicated baseline names in the given order."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise TypeError(f"baselines: expected a list of names, got {names!r}")
    out: list[str] = []
    for name in names:
        if name not in BASELINES:
            raise ValueError(f"baselines: unknown name {name!r}; expected some of {sorted(BASELINES)}")
        if name not in out:
            out.append(name)
    return tuple(out)
