"""`pinrel teacher train`: fine-tune the relevance teacher on graded records (Ray Train)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("teacher", help="fine-tune the LLM / cross-encoder teacher")
    actions = p.add_subparsers(dest="teacher_command", metavar="ACTION")
    t = actions.add_parser("train", help="train a teacher on graded (query, item) records")
    t.add_argument("--train", help="training records (Parquet, CSV, TSV or JSONL); or data.train in --config")
    t.add_argument("--dev", help="dev records, evaluated after every epoch; or data.dev in --config")
    t.add_argument(
        "--model", help="base model: Hugging Face name or local folder; or teacher.model in --config"
    )
    t.add_argument("--out", help="output model directory; or data.out in --config")
    t.add_argument(
        "--config", help="YAML with `teacher:` settings and optional `data:` paths (train/teacher.yaml)"
    )
    t.add_argument("--grades", type=int, help="number of grades K (labels are 1..K)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--lr", type=float, help="peak learning rate (default: 2e-4 with LoRA, 3e-5 without)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--max-length", type=int, help="tokens per pair after truncation")
    t.add_argument("--workers", type=int, help="Ray Train workers (one GPU each with --gpu)")
    t.add_argument("--cpus-per-worker", type=int)
    t.add_argument("--gpu", action="store_true", default=None, help="train on GPUs")
    t.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (GPU)")
    t.add_argument(
        "--lora",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="LoRA adapters (default: yes for decoder LLMs, no for encoders)",
    )
    t.add_argument(
        "--pooling",
        choices=("cls", "mean", "last"),
        help="what the head reads: 'last' token (decoders), 'cls' or 'mean' (encoders); default: the "
        "encoder's own pooling where its sentence-transformers config names one, else 'cls'",
    )
    t.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SRC=FIELD",
        help="rename a source column to a record field (repeatable), e.g. --map product_title=title",
    )
    t.add_argument(
        "--keep-best",
        action="store_true",
        default=None,
        help="export the epoch with the lowest dev loss instead of the last (needs --dev)",
    )
    t.add_argument(
        "--ordinal-weight",
        type=float,
        default=None,
        help="weight of a squared-error term on the expected grade beside cross-entropy (default 0)",
    )
    t.add_argument(
        "--pairwise-weight",
        type=float,
        default=None,
        help="weight of a pairwise (RankNet) term on the expected grade over pairs of the same query; "
        "above 0, each batch holds one query's pairs (default 0)",
    )
    t.add_argument(
        "--seed",
        type=int,
        help="seed of the head's initialisation, dropout and batch order (default 0); teachers of other "
        "seeds make an ensemble (`pinrel label --teacher A --teacher B`)",
    )
    t.add_argument(
        "--max-failures",
        type=int,
        help="restarts from the last checkpoint after a worker dies (default 1; 0 = fail at once)",
    )
    t.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out and start over")
    t.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bars"
    )
    t.set_defaults(func=run_train)
    p.set_defaults(func=lambda _args: p.print_help() or 2)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "grades": args.grades,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "num_workers": args.workers,
        "cpus_per_worker": args.cpus_per_worker,
        "use_gpu": args.gpu,
        "bf16": args.bf16,
        "lora": args.lora,
        "pooling": args.pooling,
        "progress": False if args.no_progress else None,
        "keep_best": args.keep_best,
        "ordinal_weight": args.ordinal_weight,
        "pairwise_weight": args.pairwise_weight,
        "seed": args.seed,
        "max_failures": args.max_failures,
    }


def resolve(args: argparse.Namespace) -> tuple[Any, str, str | None, str, dict[str, str]]:
    """(config, train path, dev path, out dir, column mapping) from the flags over the YAML file."""
    from ..jobs import check_job_paths
    from ..records import parse_mapping
    from ..teacher import TeacherConfig, load_yaml_sections

    teacher_section: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if args.config:
        teacher_section, data = load_yaml_sections(args.config)
    config = TeacherConfig.from_dict(teacher_section, **_overrides(args))
    train, dev, out = (
        args.train or data.get("train"),
        args.dev or data.get("dev"),
        args.out or data.get("out"),
    )
    if not train:
        raise ValueError("--train is required (or data.train in --config)")
    if not out:
        raise ValueError("--out is required (or data.out in --config)")
    check_job_paths({"train": train, "dev": dev, "out": out})
    mapping = dict(data.get("mapping") or {})
    mapping.update(parse_mapping(args.map))
    return config, str(train), str(dev) if dev else None, str(out), mapping


def run_train(args: argparse.Namespace) -> int:
    from ..teacher import train_teacher

    config, train, dev, out, mapping = resolve(args)
    manifest = train_teacher(train, dev, config, out, mapping=mapping or None, resume=not args.fresh)
    summary = {k: manifest[k] for k in ("architecture", "epochs", "train_rows", "dev_rows", "metrics")}
    print(f"pinrel teacher: wrote {out}\n{json.dumps(summary, indent=2)}")
    return 0
