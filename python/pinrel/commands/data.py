"""`pinrel data sample|convert|split`: the embedded sample and conversion of public formats."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("data", help="generate the embedded sample data or convert/split records")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    s = data_sub.add_parser("sample", help="write the seeded multilingual sample catalog and pair sets")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--items", type=int, default=2000)
    s.add_argument("--queries", type=int, default=300)
    s.add_argument("--labeled", type=int, default=3000)
    s.add_argument("--unlabeled", type=int, default=30000)
    s.set_defaults(func=_sample)

    c = data_sub.add_parser("convert", help="read a public data set or any records file into pinrel records")
    c.add_argument("--dataset", help="crowdflower, esci, stsb or wands (omit for a plain records file)")
    c.add_argument("--input", required=True, help="file or directory to read")
    c.add_argument("--out", required=True, help="output records file (.parquet, .csv or .jsonl)")
    c.add_argument("--map", action="append", default=[], metavar="SRC=FIELD", help="rename a source column")
    c.add_argument("--label-bins", help="bin a float label column: 'lo:hi' (equal width) or 'e0,e1,...'")
    c.add_argument("--grades", type=int, help="number of grades K")
    c.add_argument(
        "--variance-weights",
        action="store_true",
        help="crowdflower: weigh each pair by 1 / (1 + relevance_variance), the raters' disagreement",
    )
    c.set_defaults(func=_convert)

    sp = data_sub.add_parser("split", help="split records by query (no query in two splits)")
    sp.add_argument("--input", required=True)
    sp.add_argument("--out", required=True, nargs="+", help="one output file per fraction")
    sp.add_argument("--fractions", required=True, type=float, nargs="+")
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=_split)


def _sample(args: argparse.Namespace) -> int:
    from ..datasets import sample

    manifest = sample.generate(
        args.out,
        seed=args.seed,
        n_items=args.items,
        n_queries=args.queries,
        n_labeled=args.labeled,
        n_unlabeled=args.unlabeled,
    )
    print(
        json.dumps(
            {"out": str(Path(args.out)), **{k: manifest[k] for k in manifest if k != "files"}}, indent=2
        )
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ..datasets import load_dataset
    from ..io import check_output_file
    from ..records import parse_mapping, read_records, write_records

    check_output_file(args.out, {"input": args.input})
    mapping = parse_mapping(args.map) if args.map else None
    if args.dataset:
        if mapping or args.label_bins:
            raise ValueError("--map/--label-bins apply to plain records files, not to --dataset loaders")
        if args.variance_weights and args.dataset.lower() != "crowdflower":
            raise ValueError(f"--variance-weights applies to --dataset crowdflower, not {args.dataset!r}")
        options = {"variance_weights": True} if args.variance_weights else {}
        table = load_dataset(args.dataset, args.input, **options)
    else:
        if args.variance_weights:
            raise ValueError("--variance-weights applies to --dataset crowdflower (map a column to 'weight')")
        table = read_records(args.input, mapping=mapping, label_bins=args.label_bins, grades=args.grades)
    path = write_records(table, args.out, grades=args.grades)
    print(f"wrote {table.num_rows} records to {path}")
    return 0


def _split(args: argparse.Namespace) -> int:
    from ..io import check_distinct_outputs, check_output_file
    from ..records import read_records, split_by_query, write_records

    if len(args.out) != len(args.fractions):
        raise ValueError(f"--out has {len(args.out)} files but --fractions has {len(args.fractions)} values")
    check_distinct_outputs(args.out)
    for out in args.out:
        check_output_file(out, {"input": args.input})
    parts = split_by_query(read_records(args.input), tuple(args.fractions), seed=args.seed)
    for part, out in zip(parts, args.out, strict=True):
        write_records(part, out)
        print(f"wrote {part.num_rows} records to {out}")
    return 0
