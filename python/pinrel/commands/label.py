"""`pinrel label`: the teacher grades a pair set into resumable Parquet shards of soft labels."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "label",
        help="pseudo-label pairs with a teacher into Parquet shards (resumable)",
        description="Writes OUT/part-NNNNN.parquet shards (pair_id, record fields, probs, grade, "
        "expected_grade) and OUT/manifest.json; a re-run resumes, and refuses an OUT made by another "
        "teacher, pairs file or shard size.",
    )
    p.add_argument(
        "--pairs", required=True, help="pairs to label (records Parquet; CSV/JSONL in-process only)"
    )
    p.add_argument(
        "--teacher",
        required=True,
        action="append",
        help="teacher directory (pinrel.json + model/); repeat it for an ensemble, whose soft labels "
        "are the mean of the teachers' probabilities",
    )
    p.add_argument("--out", required=True, help="output directory of shards")
    p.add_argument(
        "--backend",
        choices=("auto", "hf", "vllm"),
        default="auto",
        help="auto: vLLM when installed and a GPU is present, else hf",
    )
    p.add_argument("--shard-size", type=int, default=10_000, help="pairs per shard (default 10000)")
    p.add_argument("--max-tokens", type=int, default=16_384, help="token budget per batch (default 16384)")
    p.add_argument("--grades", type=int, default=None, help="expected grade scale K; must match the teacher")
    p.add_argument("--device", default=None, help="hf backend device (default: cuda if available, else cpu)")
    p.add_argument("--ray", action="store_true", help="run on Ray Data with an actor pool")
    p.add_argument("--actors", type=int, default=1, help="with --ray: number of labeling actors")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="with --ray: GPUs per actor")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="with --ray: CPUs per actor")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs import check_job_paths
    from ..label import label_pairs, label_pairs_ray

    check_job_paths({"pairs": args.pairs, "teacher": args.teacher, "out": args.out})
    extra = {"device": args.device} if args.device else None
    common = dict(
        backend=args.backend,
        shard_size=args.shard_size,
        max_tokens=args.max_tokens,
        grades=args.grades,
        progress=not args.quiet,
        backend_kwargs=extra,
    )
    if args.ray:
        summary = label_pairs_ray(
            args.pairs,
            args.teacher,
            args.out,
            actors=args.actors,
            gpus_per_actor=args.gpus_per_actor,
            cpus_per_actor=args.cpus_per_actor,
            **common,
        )  # type: ignore[arg-type]
    else:
        summary = label_pairs(args.pairs, args.teacher, args.out, **common)  # type: ignore[arg-type]
    for warning in summary.warnings:
        print(f"pinrel label: warning: {warning}", file=sys.stderr)
    return 0
