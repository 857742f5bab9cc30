"""Item text assembly: one rich text per item, the input of both teacher and student."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _native
from ._native import AssemblySpec

# The fields assembled into an item's text (the Rust core's list), and every item input: those plus
# `lang`, which the text may start with (include_lang) and metrics break down by.
ITEM_TEXT_FIELDS: tuple[str, ...] = tuple(_native.ITEM_FIELDS)
ITEM_FIELDS: tuple[str, ...] = (*ITEM_TEXT_FIELDS, "lang")

__all__ = ["ITEM_FIELDS", "ITEM_TEXT_FIELDS", "AssemblySpec", "assemble", "assemble_pairs", "clean_text"]


def _native_items(items: Any) -> Any:
    """Pass lists through; turn Arrow tables into a dict of columns, never into per-row dicts."""
    module = type(items).__module__
    if module.startswith("pyarrow") and hasattr(items, "column_names") and hasattr(items, "column"):
        names = [n for n in items.column_names if n in ITEM_FIELDS]
        if not any(n in ITEM_TEXT_FIELDS for n in names):
            raise ValueError(
                f"items: the Arrow table has none of the item fields {list(ITEM_TEXT_FIELDS)}; "
                f"its columns are {items.column_names}"
            )
        return {n: items.column(n).to_pylist() for n in names}
    if isinstance(items, (list, tuple)):
        return items
    raise TypeError(
        f"items: expected a list of dicts or a pyarrow Table/RecordBatch, got {type(items).__name__}"
    )


def assemble(items: Sequence[dict[str, Any]] | Any, spec: AssemblySpec | None = None) -> list[str]:
    """Build one cleaned, budgeted text per item (see `AssemblySpec` for the rules)."""
    return _native.assemble(_native_items(items), spec)


def assemble_pairs(
    queries: Sequence[str], items: Sequence[dict[str, Any]] | Any, spec: AssemblySpec | None = None
) -> list[str]:
    """Cross-encoder inputs: `query_label + query + pair_separator + item text`, one per pair."""
    return _native.assemble_pairs(
        list(queries) if isinstance(queries, tuple) else queries, _native_items(items), spec
    )


def clean_text(texts: Any) -> Any:
    """The cleaning `assemble` applies to every field (HTML, entities, NFKC, control chars, spaces)."""
    return _native.clean_text(texts)
