"""`pinrel embed`: pooled teacher embeddings of queries or items, for retrieval and student features."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "embed",
        help="write pooled teacher embeddings of queries or items (Parquet id+embedding, or .npy)",
        description="OUT.parquet gets columns id (string) and embedding (fixed_size_list<float32>[D]); "
        "OUT.npy gets a bare float32 [n, D] matrix in input row order.",
    )
    p.add_argument("--model", required=True, help="teacher directory, or a Hugging Face model folder")
    p.add_argument("--texts", required=True, help="input file (Parquet/CSV/JSONL)")
    p.add_argument("--out", required=True, help="output .parquet or .npy")
    p.add_argument(
        "--column",
        default=None,
        help="column to embed (default: text, else query); 'item' embeds the assembled item fields",
    )
    p.add_argument(
        "--id-column", default=None, help="id column (default: query_id/item_id/id, else row number)"
    )
    p.add_argument(
        "--pooling",
        choices=("auto", "mean", "cls", "last"),
        default="auto",
        help="auto: mean for encoders, last token for decoders",
    )
    p.add_argument("--max-tokens", type=int, default=16_384, help="token budget per batch")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..embed import embed_file

    s = embed_file(
        args.model,
        args.texts,
        args.out,
        column=args.column,
        id_column=args.id_column,
        pooling=args.pooling,
        max_tokens=args.max_tokens,
        device=args.device,
        progress=not args.quiet,
    )
    if not args.quiet:
        print(
            f"pinrel embed: {s.rows:,} rows of {s.column!r} -> {s.dim}-d embeddings in {s.seconds:.1f}s "
            f"(padding waste {s.padding_waste:.1%}) -> {s.out}",
            file=sys.stderr,
        )
    return 0
