"""Label binning: float scores (a 0-5 similarity, a mean rating) cut into grades 1..K by edges."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from .schema import DEFAULT_GRADES, RecordsError, check_grades


def _check_edges(edges: Sequence[float]) -> np.ndarray:
    try:
        e = np.asarray([float(x) for x in edges], dtype=np.float64)
    except (TypeError, ValueError):
        raise RecordsError(f"bin edges must be numbers, got {edges!r}") from None
    if e.size < 3:
        raise RecordsError(f"need at least 3 bin edges (K >= 2 grades), got {e.size}: {e.tolist()}")
    if not np.isfinite(e).all():
        raise RecordsError(f"bin edges must be finite, got {e.tolist()}")
    if not (np.diff(e) > 0).all():
        raise RecordsError(f"bin edges must be strictly increasing, got {e.tolist()}")
    return e


def equal_width_edges(lo: float, hi: float, grades: int = DEFAULT_GRADES) -> list[float]:
    """Edges of `grades` equal-width bins over [lo, hi]."""
    k = check_grades(grades)
    for name, x in (("lo", lo), ("hi", hi)):
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise TypeError(f"bin range {name}: expected a number, got {x!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise RecordsError(f"bin range must be finite with lo < hi, got [{lo}, {hi}]")
    # A range too wide (hi - lo overflows) or too narrow for k distinct edges fails the edge checks.
    with np.errstate(over="ignore", invalid="ignore"):
        edges = np.linspace(lo, hi, k + 1)
    return [float(x) for x in _check_edges(edges.tolist())]


def parse_label_bins(spec: str, grades: int | None = None) -> list[float]:
    """Bin edges from text: "LO:HI" (equal-width, K = grades or 5) or "E0,E1,...,EK" (explicit edges)."""
    if not isinstance(spec, str):
        raise TypeError(f"label bins: expected text such as '0:5' or '0,1,2,3,4,5', got {spec!r}")
    text = spec.strip()
    if grades is not None:
        check_grades(grades)
    try:
        if ":" in text:
            lo, hi = (float(x) for x in text.split(":"))
            return equal_width_edges(lo, hi, DEFAULT_GRADES if grades is None else grades)
        edges = [float(x) for x in text.split(",")]
    except ValueError:
        raise RecordsError(
            f"bad label bins {spec!r}; expected LO:HI (e.g. 0:5) or edges (e.g. 0,1,2,3,4,5)"
        ) from None
    e = _check_edges(edges).tolist()
    if grades is not None and len(e) - 1 != check_grades(grades):
        raise RecordsError(f"label bins {spec!r} make {len(e) - 1} grades but grades={grades}")
    return e


def bin_values(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Grades for finite values, and the index of the first value outside the edges (None if all fit)."""
    outside = ~((values >= edges[0]) & (values <= edges[-1]))  # NaN counts as outside
    bad = int(np.argmax(outside)) if outside.any() else None
    # side="right" puts a value equal to an inner edge into the upper bin: [e0, e1) -> 1, ...
    grades = np.searchsorted(edges, values, side="right")
    # ...and the top edge itself belongs to the last bin, which is closed: [e_{K-1}, e_K] -> K.
    grades = np.clip(grades, 1, edges.size - 1)
    return grades.astype(np.int32), bad


def bin_labels(values: Sequence[float] | np.ndarray | pa.Array, edges: Sequence[float]) -> np.ndarray:
    """Float scores to integer grades 1..K using K+1 increasing `edges`.

    Bins are half-open [e_i, e_{i+1}) except the last, which is closed, so the top of the scale (e.g. a
    similarity of exactly 5.0) gets the top grade.  Values outside [e_0, e_K] and NaN are errors.
    """
    e = _check_edges(edges)
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_pylist()
    try:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise RecordsError(f"values to bin must be numbers, got {values!r:.80}") from None
    if np.isnan(v).any():
        i = int(np.argmax(np.isnan(v)))
        raise RecordsError(f"cannot bin a missing or NaN value (index {i})")
    grades, bad = bin_values(v, e)
    if bad is not None:
        raise RecordsError(f"value {v[bad]!r} at index {bad} is outside the bin range [{e[0]}, {e[-1]}]")
    return grades


def resolve_bins(label_bins: Sequence[float] | str | None, grades: int | None) -> np.ndarray | None:
    if label_bins is None:
        return None
    if isinstance(label_bins, str):
        return np.asarray(parse_label_bins(label_bins, grades))
    try:
        values = list(label_bins)
    except TypeError:
        raise TypeError(f"label_bins: expected edges, a (lo, hi) pair or text, got {label_bins!r}") from None
    if len(values) == 2:
        # Two numbers cannot be edges (that would be one grade), so they are a range to cut equally.
        return np.asarray(
            equal_width_edges(
                float(values[0]), float(values[1]), DEFAULT_GRADES if grades is None else grades
            )
        )
    e = _check_edges(values)
    if grades is not None and e.size - 1 != grades:
        raise RecordsError(f"{e.size} label bin edges make {e.size - 1} grades but grades={grades}")
    return e
