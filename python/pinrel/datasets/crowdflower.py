"""CrowdFlower "Search Results Relevance" (Kaggle 2015): e-commerce queries, product titles and raw-HTML
descriptions graded 1-4 by the median of three raters.

Expected layout: a folder of `foldN.csv` files (or one CSV, e.g. the competition's train.csv) with columns
`id, query, product_title, product_description, median_relevance, relevance_variance`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from ..records import RecordsError, RecordsFileNotFoundError, make_records, read_delimited, text_id

__all__ = ["CROWDFLOWER_GRADES", "load_crowdflower"]

CROWDFLOWER_GRADES = 4
_REQUIRED = ("id", "query", "product_title")
_FOLD = re.compile(r"fold(\d+)\.csv$", re.IGNORECASE)


def _fold_files(folder: Path, folds: Iterable[int] | None) -> list[Path]:
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := _FOLD.search(p.name)) and p.is_file()}
    if not found:
        raise RecordsError(f"{folder}: no foldN.csv files (expected the CrowdFlower folds)")
    if folds is None:
        return [found[k] for k in sorted(found)]
    wanted = [int(f) for f in folds]
    missing = [f for f in wanted if f not in found]
    if missing:
        raise RecordsError(f"{folder}: no fold(s) {missing}; available: {sorted(found)}")
    return [found[k] for k in wanted]


def load_crowdflower(path: str | os.PathLike[str], *, folds: Iterable[int] | None = None) -> pa.Table:
    """CrowdFlower pairs as records (K=4).

    `path` is the folder of fold CSVs (all folds in numeric order, or those in `folds`) or a single CSV.
    Descriptions stay raw HTML on purpose: cleaning is `pinrel.assemble`'s job, and doing it here too
    would make the stored text differ from what the source says.  `query_id` is derived from the query
    text (the source has none), `item_id` is the row id, `lang` is "en".  A file without
    `median_relevance` (the competition's test set) gives unlabeled pairs.
    """
    p = Path(path)
    if not p.exists():
        raise RecordsFileNotFoundError(f"CrowdFlower data not found: {p}")
    files = _fold_files(p, folds) if p.is_dir() else [p]
    # One table per file so that a bad value is reported with its own file and line.
    return pa.concat_tables([_load_file(f) for f in files])


def _load_file(f: Path) -> pa.Table:
    header, rows, lines = read_delimited(f)
    assert header is not None
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise RecordsError(f"{f}: missing CrowdFlower column(s) {', '.join(missing)} (header: {header})")
    col = {name: j for j, name in enumerate(header)}

    def column(name: str) -> list[str]:
        j = col.get(name)
        return [row[j] for row in rows] if j is not None else [""] * len(rows)

    queries = column("query")
    return make_records(
        {
            "query": queries,
            "title": column("product_title"),
            "description": column("product_description"),
            "lang": ["en"] * len(rows),
            "query_id": [text_id(q) for q in queries],
            "item_id": column("id"),
            "label": column("median_relevance"),
        },
        grades=CROWDFLOWER_GRADES,
        source=str(f),
        lines=lines,
    )
