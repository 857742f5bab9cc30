"""STSb-multi-mt: the STS benchmark sentence pairs machine-translated into several languages.

Files are `stsb-LANG-{train,dev,test}.csv` without a header: `sentence1,sentence2,similarity_score` with a
score in 0.0-5.0.  Sentence 1 plays the query and sentence 2 the item title; the score is binned into five
grades.  The same pairs exist in every language, so the item id (`LANG/SPLIT/ROW`) lines up across them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from ..records import RecordsError, RecordsFileNotFoundError, make_records, read_delimited, text_id

__all__ = ["STSB_EDGES", "STSB_SPLITS", "available_languages", "load_stsb"]

# [0,1) -> 1, [1,2) -> 2, [2,3) -> 3, [3,4) -> 4, [4,5] -> 5
STSB_EDGES: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
STSB_SPLITS: tuple[str, ...] = ("train", "dev", "test")
_FILE = re.compile(r"^stsb-([a-z]{2,3}(?:[-_][A-Za-z]+)?)-(train|dev|test)\.csv$")


def _folder(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise RecordsFileNotFoundError(f"STSb-multi-mt data not found: {p}")
    if not p.is_dir():
        raise RecordsError(f"{p}: expected the folder holding the stsb-LANG-SPLIT.csv files")
    return p


def available_languages(path: str | os.PathLike[str]) -> list[str]:
    """Languages that have at least one split file in the folder, sorted."""
    return sorted({m.group(1) for f in _folder(path).iterdir() if (m := _FILE.match(f.name))})


def _as_list(value: str | Sequence[str], what: str) -> list[str]:
    if not isinstance(value, (str, Sequence)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what}: expected a name or a list of names, got {value!r}")
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise RecordsError(f"no {what} selected")
    if len(set(items)) != len(items):
        raise RecordsError(f"{what}: {items} names one twice; its pairs would be loaded twice")
    return items


def load_stsb(
    path: str | os.PathLike[str],
    *,
    languages: str | Sequence[str] | None = None,
    split: str | Sequence[str] = "train",
) -> pa.Table:
    """STSb pairs as records (K=5) for the given languages (default: all present) and split(s)."""
    folder = _folder(path)
    splits = _as_list(split, "split")
    bad = [s for s in splits if s not in STSB_SPLITS]
    if bad:
        raise RecordsError(f"unknown STSb split(s) {bad}; expected some of {', '.join(STSB_SPLITS)}")
    present = available_languages(folder)
    langs = present if languages is None else _as_list(languages, "language")
    unknown = [lang for lang in langs if lang not in present]
    if unknown:
        raise RecordsError(f"{folder}: no STSb files for language(s) {unknown}; available: {present}")
    if not langs:
        raise RecordsError(f"{folder}: no stsb-LANG-SPLIT.csv files")
    tables = [_load_file(folder, lang, s) for lang in langs for s in splits]
    return pa.concat_tables(tables)


def _load_file(folder: Path, lang: str, split: str) -> pa.Table:
    f = folder / f"stsb-{lang}-{split}.csv"
    if not f.is_file():
        raise RecordsFileNotFoundError(f"STSb file not found: {f}")
    _, rows, lines = read_delimited(f, header=False)
    if rows and len(rows[0]) != 3:
        raise RecordsError(f"{f}: line {lines[0]} has {len(rows[0])} fields, expected 3")
    return make_records(
        {
            "query": [r[0] for r in rows],
            "title": [r[1] for r in rows],
            "lang": [lang] * len(rows),
            "query_id": [text_id(r[0]) for r in rows],
            "item_id": [f"{lang}/{split}/{i}" for i in range(len(rows))],
            "label": [r[2] for r in rows],
        },
        label_bins=STSB_EDGES,
        source=str(f),
        lines=lines,
    )
