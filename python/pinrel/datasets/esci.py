"""Amazon ESCI (Shopping Queries Dataset): queries in English, Spanish and Japanese with products judged
Exact / Substitute / Complement / Irrelevant.

Expected files (as published): `shopping_queries_dataset_examples.parquet` (example_id, query, query_id,
product_id, product_locale, esci_label, small_version, large_version, split) and
`shopping_queries_dataset_products.parquet` (product_id, product_title, product_description,
product_bullet_point, product_brand, product_color, product_locale), joined on (product_id,
product_locale).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..records import RecordsError, RecordsFileNotFoundError, make_records

__all__ = ["ESCI_GRADES", "ESCI_LABELS", "EXAMPLES_FILE", "LOCALE_LANG", "PRODUCTS_FILE", "load_esci"]

EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
ESCI_LABELS: dict[str, int] = {"E": 4, "S": 3, "C": 2, "I": 1}
ESCI_GRADES = 4
LOCALE_LANG: dict[str, str] = {"us": "en", "es": "es", "jp": "ja"}
# The brand/colour tail is written in the product's own language so the description stays monolingual.
_TAIL_WORDS: dict[str, tuple[str, str]] = {
    "en": ("Brand", "Color"),
    "es": ("Marca", "Color"),
    "ja": ("ブランド", "カラー"),
}
_EXAMPLE_COLUMNS = ("query", "query_id", "product_id", "product_locale", "esci_label")
_PRODUCT_TEXT = (
    "product_title",
    "product_description",
    "product_bullet_point",
    "product_brand",
    "product_color",
)


def _read(path: Path, wanted: Sequence[str], required: Sequence[str], what: str) -> pa.Table:
    if not path.is_file():
        raise RecordsFileNotFoundError(f"ESCI {what} file not found: {path}")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise RecordsError(f"{path}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    missing = [c for c in required if c not in names]
    if missing:
        raise RecordsError(f"{path}: missing ESCI {what} column(s) {', '.join(missing)}")
    return pf.read(columns=[c for c in wanted if c in names])


def _text(table: pa.Table, name: str) -> list[str]:
    if name not in table.column_names:
        return [""] * table.num_rows
    return [v or "" for v in pc.cast(table.column(name), pa.string()).to_pylist()]


def _descriptions(products: pa.Table, with_brand_color: bool) -> list[str]:
    descs = _text(products, "product_description")
    bullets = _text(products, "product_bullet_point")
    brands = _text(products, "product_brand")
    colors = _text(products, "product_color")
    langs = [LOCALE_LANG.get(loc, "en") for loc in _text(products, "product_locale")]
    out: list[str] = []
    for desc, bullet, brand, color, lang in zip(descs, bullets, brands, colors, langs, strict=True):
        parts = [x.strip() for x in (desc, bullet) if x.strip()]
        if with_brand_color:
            brand_word, color_word = _TAIL_WORDS.get(lang, _TAIL_WORDS["en"])
            tail = [f"{w}: {v.strip()}" for w, v in ((brand_word, brand), (color_word, color)) if v.strip()]
            if tail:
                parts.append(". ".join(tail))
        out.append("\n".join(parts))
    return out


def load_esci(
    path: str | os.PathLike[str],
    *,
    products: str | os.PathLike[str] | None = None,
    locales: Sequence[str] | None = None,
    split: str | None = None,
    small_version: bool = False,
    with_brand_color: bool = True,
) -> pa.Table:
    """ESCI judgements as records (K=4: E=4, S=3, C=2, I=1).

    `path` is the folder with both files or the examples file itself (`products` then defaults to the
    products file beside it).  Filters: `locales` (us, es, jp), `split` (train, test) and `small_version`
    (the reduced task-1 set).  Title is product_title; the description is product_description, then the
    bullet points, then (with `with_brand_color`) "Brand: ... Color: ..." -- raw, as the source has it.
    `lang` comes from the locale; `item_id` is "LOCALE/PRODUCT_ID" because the same ASIN has different
    text in each locale.
    """
    p = Path(path)
    if not p.exists():
        raise RecordsFileNotFoundError(f"ESCI data not found: {p}")
    examples_path = p / EXAMPLES_FILE if p.is_dir() else p
    products_path = Path(products) if products is not None else examples_path.parent / PRODUCTS_FILE

    required = list(_EXAMPLE_COLUMNS)
    if split is not None:
        required.append("split")
    if small_version:
        required.append("small_version")
    examples = _read(examples_path, [*required], required, "examples")
    mask = None
    if locales is not None:
        unknown = sorted(set(locales) - set(LOCALE_LANG))
        if unknown:
            raise RecordsError(f"unknown ESCI locale(s) {unknown}; expected some of {sorted(LOCALE_LANG)}")
        mask = pc.is_in(examples.column("product_locale"), pa.array(list(locales)))
    if split is not None:
        m = pc.equal(examples.column("split"), split)
        mask = m if mask is None else pc.and_(mask, m)
    if small_version:
        m = pc.equal(pc.cast(examples.column("small_version"), pa.int64()), 1)
        mask = m if mask is None else pc.and_(mask, m)
    if mask is not None:
        examples = examples.filter(mask)

    product_table = _read(
        products_path,
        ["product_id", "product_locale", *_PRODUCT_TEXT],
        ["product_id", "product_locale", "product_title"],
        "products",
    )
    if locales is not None:
        product_table = product_table.filter(
            pc.is_in(pc.cast(product_table.column("product_locale"), pa.string()), pa.array(list(locales)))
        )
    product_table = pa.table(
        {
            "product_id": pc.cast(product_table.column("product_id"), pa.string()),
            "product_locale": pc.cast(product_table.column("product_locale"), pa.string()),
            "title": _text(product_table, "product_title"),
            "description": _descriptions(product_table, with_brand_color),
        }
    )
    # The join reorders rows; a row number restores the examples' order afterwards.
    left = pa.table(
        {
            "_row": pa.array(range(examples.num_rows), pa.int64()),
            "product_id": pc.cast(examples.column("product_id"), pa.string()),
            "product_locale": pc.cast(examples.column("product_locale"), pa.string()),
        }
    )
    joined = left.join(product_table, keys=["product_id", "product_locale"], join_type="left outer")
    joined = joined.sort_by("_row")
    if joined.num_rows != examples.num_rows:
        raise RecordsError(
            f"{products_path}: (product_id, product_locale) is not unique in the products file"
        )
    orphans = joined.column("title").is_null()
    if pc.any(orphans).as_py():
        i = int(pc.index(orphans, True).as_py())
        n = int(pc.sum(orphans).as_py())
        pid, loc = joined.column("product_id")[i].as_py(), joined.column("product_locale")[i].as_py()
        raise RecordsError(
            f"{products_path}: {n} example(s) have no product row, e.g. product_id {pid!r} in locale {loc!r}"
        )

    raw_labels = examples.column("esci_label").to_pylist()
    labels: list[int] = []
    for i, v in enumerate(raw_labels):
        grade = ESCI_LABELS.get(v) if isinstance(v, str) else None
        if grade is None:
            raise RecordsError(f"{examples_path}: row {i + 1}: esci_label {v!r} is not one of E, S, C, I")
        labels.append(grade)
    product_ids = joined.column("product_id").to_pylist()
    product_locales = joined.column("product_locale").to_pylist()
    return make_records(
        {
            "query": examples.column("query"),
            "title": joined.column("title"),
            "description": joined.column("description"),
            "lang": [LOCALE_LANG.get(loc, loc) for loc in product_locales],
            "query_id": examples.column("query_id"),
            "item_id": [f"{loc}/{pid}" for loc, pid in zip(product_locales, product_ids, strict=True)],
            "label": labels,
        },
        grades=ESCI_GRADES,
        source=str(examples_path),
    )
