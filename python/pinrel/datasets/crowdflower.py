"""CrowdFlower "Search Results Relevance" (Kaggle 2015): e-commerce queries, product titles and raw-HTML
descriptions graded 1-4 by the median of three raters.

Expected layout: a folder of `foldN.csv` files (or one CSV, e.g. the competition's train.csv) with columns
`id, query, product_title, product_description, median_relevance, relevance_variance`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa

from ..checks import check_int
from ..records import RecordsError, RecordsFileNotFoundError, make_records, read_delimited, text_id

__all__ = ["CROWDFLOWER_GRADES", "load_crowdflower"]

CROWDFLOWER_GRADES = 4
_REQUIRED = ("id", "query", "product_title")
_FOLD = re.compile(r"fold(\d+)\.csv$", re.IGNORECASE)


def _check_folds(folds: Iterable[int] | None) -> list[int] | None:
    if folds is None:
        return None
    if isinstance(folds, (str, bytes)) or not isinstance(folds, Iterable):
        raise TypeError(f"folds: expected a list of fold numbers, got {folds!r}")
    wanted = [check_int(f, f"folds[{i}]", 0) for i, f in enumerate(folds)]
    if not wanted or len(set(wanted)) != len(wanted):
        raise ValueError(f"folds: expected distinct fold numbers, at least one, got {wanted}")
    return wanted


def _fold_files(folder: Path, wanted: list[int] | None) -> list[Path]:
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := _FOLD.search(p.name)) and p.is_file()}
    if not found:
        raise RecordsError(f"{folder}: no foldN.csv files (expected the CrowdFlower folds)")
    if wanted is None:
        return [found[k] for k in sorted(found)]
    missing = [f for f in wanted if f not in found]
    if missing:
        raise RecordsError(f"{folder}: no fold(s) {missing}; available: {sorted(found)}")
    return [found[k] for k in wanted]


def load_crowdflower(
    path: str | os.PathLike[str], *, folds: Iterable[int] | None = None, variance_weights: bool = False
) -> pa.Table:
    """CrowdFlower pairs as records (K=4).

    `path` is the folder of fold CSVs (all folds in numeric order, or those in `folds`) or a single CSV.
    Descriptions stay raw HTML on purpose: cleaning is `pinrel.assemble`'s job, and doing it here too
    would make the stored text differ from what the source says.  `query_id` is derived from the query
    text (the source has none), `item_id` is the row id, `lang` is "en".  A file without
    `median_relevance` (the competition's test set) gives unlabeled pairs.

    With `variance_weights`, each pair's `weight` is `1 / (1 + relevance_variance)`: the column is the
    spread (standard deviation) of the raters' grades, 0 when they agree, 0.47 for grades 4, 4, 3 and
    about 1.5 at most, so a pair the raters disagreed on counts for as little as 0.4 of one they agreed on.
    """
    wanted = _check_folds(folds)
    p = Path(path)
    if not p.exists():
        raise RecordsFileNotFoundError(f"CrowdFlower data not found: {p}")
    if wanted is not None and not p.is_dir():
        raise ValueError(f"folds: pick folds from a folder of foldN.csv files; {p} is one file")
    files = _fold_files(p, wanted) if p.is_dir() else [p]
    # One table per file so that a bad value is reported with its own file and line.
    return pa.concat_tables([_load_file(f, variance_weights) for f in files])


def _weights(f: Path, values: list[str], lines: list[int]) -> list[float | None]:
    out: list[float | None] = []
    for v, line in zip(values, lines, strict=True):
        v = v.strip()
        if not v:
            out.append(None)  # an unrated pair (the test set) has no spread to weigh by
            continue
        try:
            spread = float(v)
        except ValueError:
            raise RecordsError(f"{f}: line {line}: relevance_variance {v!r} is not a number") from None
        if not (math.isfinite(spread) and spread >= 0):
            raise RecordsError(f"{f}: line {line}: relevance_variance {v!r} should be a finite number >= 0")
        out.append(1.0 / (1.0 + spread))
    return out


def _load_file(f: Path, variance_weights: bool) -> pa.Table:
    header, rows, lines = read_delimited(f)
    assert header is not None
    required = (*_REQUIRED, "relevance_variance") if variance_weights else _REQUIRED
    missing = [c for c in required if c not in header]
    if missing:
        raise RecordsError(f"{f}: missing CrowdFlower column(s) {', '.join(missing)} (header: {header})")
    col = {name: j for j, name in enumerate(header)}

    def column(name: str) -> list[str]:
        j = col.get(name)
        return [row[j] for row in rows] if j is not None else [""] * len(rows)

    queries = column("query")
    columns: dict[str, Sequence[str | float | None]] = {
        "query": queries,
        "title": column("product_title"),
        "description": column("product_description"),
        "lang": ["en"] * len(rows),
        "query_id": [text_id(q) for q in queries],
        "item_id": column("id"),
        "label": column("median_relevance"),
    }
    if variance_weights:
        columns["weight"] = _weights(f, column("relevance_variance"), lines)
    return make_records(
        columns,
        grades=CROWDFLOWER_GRADES,
        source=str(f),
        lines=lines,
    )
