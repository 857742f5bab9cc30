"""Checks of scalar arguments and settings, by one rule everywhere: a bool is not a number, a numpy
scalar is one, NaN and infinity are in no range, and the error names the argument and the value."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_int", "check_number"]


def check_int(value: Any, name: str, lo: int = 1, hi: int | None = None) -> int:
    """`value` as an int in [lo, hi] (no upper bound when `hi` is None), else a ValueError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    if not ok or value < lo or (hi is not None and value > hi):
        wanted = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"
        raise ValueError(f"{name}: expected {wanted}, got {value!r}")
    return int(value)


def check_number(
    value: Any, name: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False
) -> float:
    """`value` as a finite float in [lo, hi] (or (lo, hi] with `lo_open`), else a ValueError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    v = float(value) if ok else math.nan
    if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi:
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ValueError(f"{name}: expected a number in {bound}, got {value!r}")
    return v
