"""`pinrel.assemble` against the pure-Python implementation of the same rules (`py_assemble.py`).

Items are CrowdFlower products (title + raw HTML-ish description) with synthetic captions and boards
derived from the row's query, so that list fields, case-insensitive de-duplication and budget
allocation between several fields all take part. The outputs are compared item by item: on
ASCII-only products the two must agree exactly; elsewhere the few known differences (see
`py_assemble.py`) are counted and shown.

Target (issue): pinrel >= 10x faster than the pure-Python version, single-threaded.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pinrel
import py_assemble
from _common import Result, compare, load_products, machine_note, print_results, print_table

CAPTION_TEMPLATES = [
    "a photo of {q}",
    "A photo of {Q}",
    "{q} on a white background",
    "close-up of the {q}, studio lighting",
    "<i>{q}</i> &amp; accessories",
]
BOARDS = ["Gift ideas", "gift IDEAS", "Home decor", "Wish list", "Kitchen", "Holiday 2015", "  "]


def build_items(rows: list[dict[str, str]], seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items = []
    for r in rows:
        q = r["query"]
        captions = [t.format(q=q, Q=q.upper()) for t in rng.sample(CAPTION_TEMPLATES, rng.randint(0, 4))]
        boards = [q.title(), q, *rng.sample(BOARDS, rng.randint(0, 3))]
        items.append(
            {"title": r["title"], "description": r["description"], "captions": captions, "boards": boards}
        )
    return items


def run(repeats: int = 5, limit: int | None = None, max_chars: int = 1024) -> list[Result]:
    rows, source = load_products()
    items = build_items(rows)[:limit]
    spec = pinrel.AssemblySpec(max_chars=max_chars)

    def on_threads(n: int) -> Any:
        def run() -> list[str]:
            pinrel.set_num_threads(n)
            return pinrel.assemble(items, spec)

        return run

    before = pinrel.get_num_threads()
    try:
        t = compare(
            {
                "python": (lambda: py_assemble.assemble(items, max_chars), max(1, repeats // 2 + 1)),
                "pinrel1": (on_threads(1), repeats),
                "pinrel2": (on_threads(2), repeats),
            }
        )
        rust = on_threads(1)()
    finally:
        pinrel.set_num_threads(before)
    python = py_assemble.assemble(items, max_chars)

    def is_ascii(item: dict[str, Any]) -> bool:
        return all(str(v).isascii() for v in item.values())

    ascii_idx = [i for i, it in enumerate(items) if is_ascii(it)]
    agree_all = sum(a == b for a, b in zip(rust, python, strict=True))
    agree_ascii = sum(rust[i] == python[i] for i in ascii_idx)
    mismatches = [i for i in range(len(items)) if rust[i] != python[i]]

    chars = sum(len(x) for x in rust)
    print(
        f"data: {source}; {len(items)} items, {chars / len(items):.0f} chars out per item; "
        f"medians of {repeats} rounds"
    )
    print(f"machine: {machine_note()}")
    print_table(
        f"Assembly: 4 fields per item (title, description, captions, boards), max_chars={max_chars}",
        ["implementation", "threads", "wall s", "CPU s", "items/s"],
        [
            (name, threads, f"{x.wall:.3f}", f"{x.cpu:.3f}", f"{len(items) / x.wall:,.0f}")
            for name, threads, x in [
                ("pure Python (html, re, unicodedata, regex \\X)", 1, t["python"]),
                ("pinrel.assemble", 1, t["pinrel1"]),
                ("pinrel.assemble", 2, t["pinrel2"]),
            ]
        ],
    )
    print(f"single-threaded ratio by CPU time: {t['python'].cpu / t['pinrel1'].cpu:.1f}x")
    print(
        f"agreement with the Python rules: ASCII-only items {agree_ascii}/{len(ascii_idx)}, "
        f"all items {agree_all}/{len(items)}"
    )
    for i in mismatches[:3]:
        a, b = rust[i], python[i]
        at = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
        print(f"  item {i} differs at char {at}: pinrel {a[max(0, at - 30) : at + 30]!r}")
        print(f"  {' ' * len(f'item {i} differs at char {at}:')} python {b[max(0, at - 30) : at + 30]!r}")
    results = [
        Result("assemble: pinrel 1 thread vs pure Python", t["python"].wall / t["pinrel1"].wall, 10.0, "min"),
        Result("assemble: agreement on ASCII-only items", 100.0 * agree_ascii / max(len(ascii_idx), 1), 100.0,
               "min", unit="%"),
    ]  # fmt: skip
    print_results(results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N items")
    parser.add_argument("--max-chars", type=int, default=1024)
    args = parser.parse_args()
    run(args.repeats, args.limit, args.max_chars)
