"""`pinrel candidates`: the unlabeled (query, item) pairs to label, from BM25 over the catalog."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "candidates",
        help="build the (query, item) pairs to label: BM25 top-k per query plus random negatives",
        description="Per query, the top-k catalog items by BM25 over the assembled item text, plus "
        "seeded random negatives; written as records Parquet (label null) with a 'source' column.",
    )
    p.add_argument("--queries", required=True, help="queries file (Parquet/CSV/JSONL) with a 'query' column")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="FILE",
        help="queries or records file whose queries get no candidates (repeatable): pass the dev and "
        "test sets, so that the student is not distilled on the queries it is evaluated on",
    )
    p.add_argument("--catalog", required=True, help="catalog Parquet with item fields (streamed in chunks)")
    p.add_argument("--k", type=int, default=50, help="BM25 candidates per query (default 50)")
    p.add_argument("--negatives", type=int, default=0, help="random negatives per query (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random negatives")
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=1_000_000,
        help="catalog rows indexed at a time; BM25 stays corpus-wide across chunks",
    )
    p.add_argument("--out", required=True, help="output .parquet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..candidates import build_candidates, write_candidates
    from ..io import check_output_file

    check_output_file(args.out, {"queries": args.queries, "catalog": args.catalog, "exclude": args.exclude})
    table, stats = build_candidates(
        args.queries,
        args.catalog,
        k=args.k,
        negatives=args.negatives,
        seed=args.seed,
        chunk_rows=args.chunk_rows,
        exclude=args.exclude,
    )
    path = write_candidates(table, args.out)
    excluded = f" ({stats.excluded_queries:,} excluded)" if args.exclude else ""
    print(
        f"pinrel candidates: {table.num_rows:,} pairs ({stats.bm25_pairs:,} bm25 + {stats.random_pairs:,} "
        f"random) for {stats.queries:,} queries{excluded} over {stats.catalog_rows:,} items in "
        f"{stats.chunks} chunk(s), {stats.seconds:.1f}s; {stats.queries_without_hits} queries without a "
        f"BM25 hit, {stats.empty_items} items without text -> {path}",
        file=sys.stderr,
    )
    for note in stats.notes:
        print(f"pinrel candidates: note: {note}", file=sys.stderr)
    return 0
