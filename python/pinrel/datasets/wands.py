"""Wayfair WANDS: furniture and home-goods queries with products judged Exact / Partial / Irrelevant.

Expected layout (as published, tab-separated with a header): `query.csv` (query_id, query, query_class),
`product.csv` (product_id, product_name, product_class, category hierarchy, product_description,
product_features, ...) and `label.csv` (id, query_id, product_id, label).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from ..records import RecordsError, RecordsFileNotFoundError, make_records, read_delimited

__all__ = ["WANDS_GRADES", "WANDS_LABELS", "load_wands"]

WANDS_LABELS: dict[str, int] = {"Exact": 3, "Partial": 2, "Irrelevant": 1}
WANDS_GRADES = 3


def _read(folder: Path, name: str, required: tuple[str, ...]) -> tuple[Path, dict[str, list[str]], list[int]]:
    f = folder / name
    if not f.is_file():
        raise RecordsFileNotFoundError(f"WANDS file not found: {f}")
    header, rows, lines = read_delimited(f, delimiter="\t")
    assert header is not None
    missing = [c for c in required if c not in header]
    if missing:
        raise RecordsError(f"{f}: missing WANDS column(s) {', '.join(missing)} (header: {header})")
    return f, {name: [row[j] for row in rows] for j, name in enumerate(header)}, lines


def _features_text(raw: str) -> str:
    # "overallwidth-sidetoside:64.7|dsprimaryproductstyle:modern" -> "overallwidth-sidetoside: 64.7; ..."
    parts = []
    for feature in raw.split("|"):
        key, sep, value = feature.partition(":")
        if key.strip() and value.strip():
            parts.append(f"{key.strip()}: {value.strip()}")
        elif feature.strip() and not sep:
            parts.append(feature.strip())
    return "; ".join(parts)


def load_wands(path: str | os.PathLike[str], *, with_features: bool = False) -> pa.Table:
    """WANDS judgements as records (K=3: Exact=3, Partial=2, Irrelevant=1), in label.csv order.

    Title is product_name and the description product_description; `with_features` appends the
    product_features attributes ("key: value; ...").  `lang` is "en".
    """
    folder = Path(path)
    if not folder.exists():
        raise RecordsFileNotFoundError(f"WANDS data not found: {folder}")
    if not folder.is_dir():
        raise RecordsError(f"{folder}: expected the folder holding query.csv, product.csv and label.csv")
    _, queries, _ = _read(folder, "query.csv", ("query_id", "query"))
    product_file, products, _ = _read(folder, "product.csv", ("product_id", "product_name"))
    label_file, labels, lines = _read(folder, "label.csv", ("query_id", "product_id", "label"))

    query_text = dict(zip(queries["query_id"], queries["query"], strict=True))
    n_products = len(products["product_id"])
    descriptions = products.get("product_description", [""] * n_products)
    if with_features and "product_features" in products:
        descriptions = [
            "\n".join(x for x in (d.strip(), _features_text(f)) if x)
            for d, f in zip(descriptions, products["product_features"], strict=True)
        ]
    index = {pid: i for i, pid in enumerate(products["product_id"])}

    out: dict[str, list[str]] = {k: [] for k in ("query", "title", "description", "query_id", "item_id")}
    grades: list[int] = []
    triples = zip(labels["query_id"], labels["product_id"], labels["label"], strict=True)
    for i, (qid, pid, label) in enumerate(triples):
        where = f"{label_file}: line {lines[i]}"
        if qid not in query_text:
            raise RecordsError(f"{where}: query_id {qid!r} is not in query.csv")
        j = index.get(pid)
        if j is None:
            raise RecordsError(f"{where}: product_id {pid!r} is not in {product_file.name}")
        grade = WANDS_LABELS.get(label.strip())
        if grade is None:
            raise RecordsError(f"{where}: label {label!r} is not one of {', '.join(WANDS_LABELS)}")
        out["query"].append(query_text[qid])
        out["title"].append(products["product_name"][j])
        out["description"].append(descriptions[j])
        out["query_id"].append(qid)
        out["item_id"].append(pid)
        grades.append(grade)
    return make_records(
        {**out, "lang": ["en"] * len(grades), "label": grades},
        grades=WANDS_GRADES,
        source=str(label_file),
        lines=lines,
    )
