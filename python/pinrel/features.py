"""Hashed n-gram features and query-item match features, computed in the Rust core."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _native

MATCH_FEATURE_NAMES: tuple[str, ...] = tuple(_native.MATCH_FEATURE_NAMES)

__all__ = ["MATCH_FEATURE_NAMES", "Bm25Index", "FeatureHasher"]

Bm25Index = _native.Bm25Index


class FeatureHasher:
    """Stateless text vectoriser: word and character n-grams hashed into `n_features` columns.

    The hash (xxh3-64 of a kind byte plus the UTF-8 n-gram, seeded) is a compatibility contract:
    the same text gives the same columns on every machine and every pinrel version, because trained
    students store only these parameters, not a vocabulary.
    """

    def __init__(
        self,
        n_features: int = 2**20,
        word_ngrams: tuple[int, int] | None = (1, 2),
        char_ngrams: tuple[int, int] | None = (3, 5),
        seed: int = 0,
        signed: bool = True,
        norm: str | None = "l2",
        lowercase: bool = True,
    ) -> None:
        if isinstance(word_ngrams, list):
            word_ngrams = (word_ngrams[0], word_ngrams[1]) if len(word_ngrams) == 2 else tuple(word_ngrams)  # type: ignore[assignment]
        if isinstance(char_ngrams, list):
            char_ngrams = (char_ngrams[0], char_ngrams[1]) if len(char_ngrams) == 2 else tuple(char_ngrams)  # type: ignore[assignment]
        if not isinstance(signed, bool):
            raise TypeError(f"signed: expected bool, got {type(signed).__name__}")
        if not isinstance(lowercase, bool):
            raise TypeError(f"lowercase: expected bool, got {type(lowercase).__name__}")
        if norm is not None and not isinstance(norm, str):
            raise TypeError(f"norm: expected 'l1', 'l2' or None, got {type(norm).__name__}")
        self._native = _native.FeatureHasher(
            n_features, word_ngrams, char_ngrams, seed, signed, norm, lowercase
        )

    @property
    def n_features(self) -> int:
        return int(self._native.n_features)

    def get_params(self) -> dict[str, Any]:
        """Everything needed to rebuild an identical hasher; saved next to every trained model."""
        n = self._native
        return {
            "n_features": n.n_features,
            "word_ngrams": list(n.word_ngrams) if n.word_ngrams else None,
            "char_ngrams": list(n.char_ngrams) if n.char_ngrams else None,
            "seed": n.seed,
            "signed": n.signed,
            "norm": n.norm,
            "lowercase": n.lowercase,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FeatureHasher:
        if not isinstance(params, dict):
            raise TypeError(f"params: expected dict, got {type(params).__name__}")
        known = {"n_features", "word_ngrams", "char_ngrams", "seed", "signed", "norm", "lowercase"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"params: unknown field(s) {unknown}; known: {sorted(known)}")
        kw = dict(params)
        for key in ("word_ngrams", "char_ngrams"):
            if isinstance(kw.get(key), list):
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureHasher) and self.get_params() == other.get_params()

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, str(v)) for k, v in self.get_params().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"FeatureHasher({args})"

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """`[len(texts), n_features]` float32 CSR matrix; rows normalised as configured."""
        data, indices, indptr = self._native.transform_csr(texts)
        return sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, self.n_features), copy=False)

    def transform_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """`[n, len(MATCH_FEATURE_NAMES)]` float32 query-item match features (BM25, overlap, ...)."""
        return self._native.transform_pairs(queries, texts)

    def feature_index(self, kind: str, token: str) -> tuple[int, float]:
        """Column and sign of one n-gram (`kind` is 'word' or 'char'): for debugging and golden tests."""
        col, sign = self._native.feature_index(kind, token)
        return int(col), float(sign)
