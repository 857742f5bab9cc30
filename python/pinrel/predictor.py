"""The one interface every model exposes to evaluation and labeling: grade probabilities for records.

A model directory always holds `pinrel.json`; its `kind` says which loader understands the rest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

MANIFEST = "pinrel.json"


@runtime_checkable
class Predictor(Protocol):
    """Scores (query, item) records: `predict_proba(records)` is `[n, grades]`, rows summing to 1."""

    @property
    def grades(self) -> int: ...

    def predict_proba(self, records: Any) -> np.ndarray: ...


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or of the wrong kind."""


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and sanity-check `pinrel.json` before anything heavy (weights, tokenizers) is loaded."""
    d = Path(path)
    if not d.is_dir():
        raise ModelDirError(f"model dir {str(d)!r} does not exist or is not a directory")
    f = d / MANIFEST
    if not f.is_file():
        raise ModelDirError(f"model dir {str(d)!r} has no {MANIFEST}; is it a pinrel model directory?")
    try:
        manifest = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{f}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise ModelDirError(f"{f}: expected an object with a 'kind' field")
    grades = manifest.get("grades")
    if not isinstance(grades, int) or isinstance(grades, bool) or grades < 2:
        raise ModelDirError(f"{f}: 'grades' must be an integer >= 2, got {grades!r}")
    return manifest


def write_manifest(path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Atomic write: a crash mid-write leaves the previous manifest, never half a file."""
    from .io import atomic_write_text

    atomic_write_text(
        Path(path) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False)
    )


def load_predictor(path: str | os.PathLike[str], **kwargs: Any) -> Predictor:
    """Load any pinrel model directory (teacher or student) as a `Predictor`."""
    manifest = read_manifest(path)
    kind = manifest["kind"]
    if kind == "teacher":
        from .teacher import load_teacher

        return load_teacher(path, **kwargs)
    if kind == "student":
        from .student import Scorer

        return Scorer.load(path, **kwargs)
    raise ModelDirError(f"{Path(path) / MANIFEST}: unknown kind {kind!r}; expected 'teacher' or 'student'")
