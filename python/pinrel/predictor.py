"""The one interface every model exposes to evaluation and labeling: grade probabilities for records.

A model directory always holds `pinrel.json`; its `kind` says which loader understands the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .io import atomic_write_text, check_output_dir, json_safe, not_empty, read_json_object
from .metrics import grades_problem

MANIFEST = "pinrel.json"
# Where a teacher or student directory keeps the Ray Train run it is exported from.
RUN_DIR = "_ray"
# A teacher directory's manifest kind, and the folder of its Hugging Face model: what the teacher
# writes and what the inference backends load.
TEACHER_KIND = "teacher"
TEACHER_MODEL_DIR = "model"


@runtime_checkable
class Predictor(Protocol):
    """Scores (query, item) records: `predict_proba(records)` is `[n, grades]`, rows summing to 1."""

    @property
    def grades(self) -> int: ...

    def predict_proba(self, records: Any) -> np.ndarray: ...


def mean_probs(parts: Iterable[Any]) -> np.ndarray:
    """The mean of several models' `[n, K]` probabilities for the same rows, in float64; an ensemble's
    score, wherever its members' outputs meet (in-memory `Ensemble`, the labeler's backends)."""
    total: np.ndarray | None = None
    count = 0
    for part in parts:
        p = np.asarray(part, dtype=np.float64)
        if total is not None and p.shape != total.shape:
            raise ValueError(f"members: a model returned shape {p.shape}, the one before it {total.shape}")
        total = p if total is None else total + p
        count += 1
    if total is None:
        raise ValueError("members: no probabilities to average")
    return total / count


class Ensemble:
    """Several models scoring as one: the mean of their grade probabilities (e.g. teachers fine-tuned with
    different seeds, whose errors partly cancel)."""

    def __init__(self, members: Sequence[Predictor]) -> None:
        if isinstance(members, (str, bytes)) or not isinstance(members, Sequence) or not members:
            raise ValueError(f"members: expected a non-empty list of models, got {members!r}")
        for i, m in enumerate(members):
            if not isinstance(m, Predictor):
                raise TypeError(f"members[{i}]: expected a Predictor, got {type(m).__name__}")
        grades = {int(m.grades) for m in members}
        if len(grades) > 1:
            raise ValueError(f"members: the models grade on different scales (K = {sorted(grades)})")
        self.members = list(members)
        self._grades = grades.pop()

    @property
    def grades(self) -> int:
        return self._grades

    def predict_proba(self, records: Any) -> np.ndarray:
        return mean_probs(m.predict_proba(records) for m in self.members)


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or of the wrong kind."""


def check_model_out(out: Path, kind: str, run_dir: str, what: str = "out") -> None:
    """Refuse to write a `kind` model into a directory that holds something else.

    `out` may be missing, empty, a `kind` artifact (its pinrel.json says so), or hold this command's
    Ray run (`run_dir`: a run that has not exported yet). Anything else belongs to someone: an export
    there would replace its pinrel.json and model files, or turn another artifact into a `kind`."""

    def problem(entries: list[str]) -> str | None:
        if MANIFEST in entries:
            found = (read_json_object(out / MANIFEST) or {}).get("kind")
            if found == kind:
                return None
            held = f"a pinrel {found}" if isinstance(found, str) else f"a {MANIFEST} that is not pinrel's"
            return f"already holds {held}; writing a {kind} there would replace it"
        return (
            None if run_dir in entries and (out / run_dir).is_dir() else not_empty(entries, f"pinrel {kind}")
        )

    check_output_dir(out, what, f"pinrel {kind}", problem)


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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ModelDirError(f"{f}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise ModelDirError(f"{f}: expected an object with a 'kind' field")
    grades = manifest.get("grades")
    if (problem := grades_problem(grades)) is not None:
        raise ModelDirError(f"{f}: 'grades': {problem}")
    return manifest


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """pinrel.json's text. Strict JSON: an undefined metric (NaN) is null, which every JSON reader
    accepts; a value JSON cannot hold is a ValueError here, before anything is written."""
    try:
        text = json.dumps(json_safe(manifest), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:  # UnicodeEncodeError is a ValueError
        raise ValueError(f"{MANIFEST}: a value cannot be written as JSON ({e})") from None
    return text


def write_manifest(path: str | os.PathLike[str], manifest: Mapping[str, Any]) -> None:
    """Atomic write: a crash mid-write leaves the previous manifest, never half a file."""
    atomic_write_text(Path(path) / MANIFEST, manifest_text(manifest))


def model_dirs(value: Any, what: str) -> list[Path]:
    """One model directory, or a non-empty list of distinct ones (the members of an ensemble)."""
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{what}: expected a model directory or a non-empty list of them, got {value!r}")
    seen: dict[Path, Path] = {}
    for v in value:
        if not isinstance(v, (str, os.PathLike)):
            raise TypeError(f"{what}: expected a path, got {type(v).__name__}")
        key = Path(v).resolve()
        if key in seen:
            raise ValueError(f"{what}: {v} is given twice (as {seen[key]} before)")
        seen[key] = Path(v)
    return list(seen.values())


def load_predictor(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, progress: bool = True, **kwargs: Any
) -> Predictor:
    """Load any pinrel model directory (teacher or student) as a `Predictor`; several directories load
    as one `Ensemble`. `progress`: a teacher draws a bar per `predict` call (a student is too quick to)."""
    dirs = model_dirs(path, "model")
    if len(dirs) == 1:
        return _load_dir(dirs[0], progress, **kwargs)
    return Ensemble([_load_dir(d, progress, **kwargs) for d in dirs])


def _load_dir(path: str | os.PathLike[str], progress: bool, **kwargs: Any) -> Predictor:
    manifest = read_manifest(path)
    kind = manifest["kind"]
    if kind == "teacher":
        from .teacher import load_teacher

        return load_teacher(path, progress=progress, **kwargs)
    if kind == "student":
        from .student import Scorer

        return Scorer.load(path, **kwargs)
    raise ModelDirError(f"{Path(path) / MANIFEST}: unknown kind {kind!r}; expected 'teacher' or 'student'")
