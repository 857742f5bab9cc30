"""A small service-side client of pinrel's public API, type-checked with `mypy --strict`.

tests/test_wheel.py runs it against the installed wheel (so the shipped stubs and py.typed are what
mypy sees) and executes it there: `python client_example.py STUDENT_DIR` prints the ranking as JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

import pinrel


def rank(scorer: pinrel.Scorer, query: str, items: Sequence[dict[str, object]]) -> list[tuple[int, float]]:
    scores: pinrel.Scores = scorer.score(query, items)
    order: npt.NDArray[np.intp] = np.argsort(-scores.scores, kind="stable")
    return [(int(i), float(scores.scores[i])) for i in order]


def features(texts: list[str]) -> int:
    hasher = pinrel.FeatureHasher(n_features=2**16)
    matrix = hasher.transform(texts)
    match: npt.NDArray[np.float32] = hasher.transform_pairs(["red mug"] * len(texts), texts)
    return int(matrix.nnz) + int(match.shape[1])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: client_example.py STUDENT_DIR", file=sys.stderr)
        return 2
    scorer = pinrel.Scorer.load(argv[1])
    items: list[dict[str, object]] = [
        {"title": "Red ceramic mug", "description": "Holds 350 ml", "boards": ["Kitchen"]},
        {"title": "Blue glass vase", "captions": ["a vase on a shelf"]},
        {"title": "東京タワーの夜景", "lang": "ja"},
    ]
    texts: list[str] = pinrel.assemble(items)
    batch: list[pinrel.Scores] = scorer.score_batch(["red mug", "vase"], [items, items[1:]])
    out = {
        "version": pinrel.__version__,
        "module": pinrel.__file__,
        "ranking": rank(scorer, "red mug", items),
        "probs": scorer.score("red mug", items).probs.tolist(),
        "batch_sizes": [len(s) for s in batch],
        "texts": texts,
        "features": features(texts),
        "ray_imported": "ray" in sys.modules,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
