"""`pinrel label`: the teacher grades a pair set into resumable Parquet shards of soft labels."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from ..label import CONFIG_DEFAULTS as D

    p = sub.add_parser(
        "label",
        help="pseudo-label pairs with a teacher into Parquet shards (resumable)",
        description="Writes OUT/part-NNNNN.parquet shards (pair_id, record fields, probs, grade, "
        "expected_grade) and OUT/manifest.json; a re-run resumes, and refuses an OUT made by another "
        "teacher, pairs file or shard size. Settings come from flags, else from --config, else the "
        "defaults shown.",
    )
    p.add_argument("--config", help="YAML settings (see train/label.yaml); flags override it")
    p.add_argument("--pairs", help="pairs to label (records Parquet; CSV/JSONL in-process only)")
    p.add_argument(
        "--teacher",
        action="append",
        help="teacher directory (pinrel.json + model/); repeat it for an ensemble, whose soft labels "
        "are the mean of the teachers' probabilities",
    )
    p.add_argument("--out", help="output directory of shards")
    p.add_argument(
        "--backend",
        choices=("auto", "hf", "vllm"),
        help=f"auto: vLLM when installed and a GPU is present, else hf (default {D['backend']})",
    )
    p.add_argument("--shard-size", type=int, help=f"pairs per shard (default {D['shard_size']})")
    p.add_argument("--max-tokens", type=int, help=f"token budget per batch (default {D['max_tokens']})")
    p.add_argument("--grades", type=int, help="expected grade scale K; must match the teacher")
    p.add_argument("--device", help="hf backend device (default: cuda if available, else cpu)")
    p.add_argument("--ray", action="store_true", help="run on Ray Data with an actor pool")
    p.add_argument("--actors", type=int, help=f"with --ray: labeling actors (default {D['actors']})")
    p.add_argument(
        "--gpus-per-actor", type=float, help=f"with --ray: GPUs per actor (default {D['gpus_per_actor']})"
    )
    p.add_argument(
        "--cpus-per-actor", type=float, help=f"with --ray: CPUs per actor (default {D['cpus_per_actor']})"
    )
    p.add_argument(
        "--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar or summary line"
    )
    p.set_defaults(func=run)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's settings (or the defaults) with the flags given on top."""
    from ..label import CONFIG_DEFAULTS, load_config

    cfg = load_config(args.config) if args.config else dict(CONFIG_DEFAULTS)
    cfg.update({k: getattr(args, k) for k in CONFIG_DEFAULTS if getattr(args, k) is not None})
    missing = [k for k in ("pairs", "teacher", "out") if not cfg[k]]
    if missing:
        raise ValueError(
            f"{', '.join(missing)}: not set; pass --{' --'.join(missing)} or set them in --config"
        )
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..jobs import check_job_paths
    from ..label import label_pairs, label_pairs_ray

    cfg = settings(args)
    check_job_paths({k: cfg[k] for k in ("pairs", "teacher", "out")})
    common = dict(
        backend=cfg["backend"],
        shard_size=cfg["shard_size"],
        max_tokens=cfg["max_tokens"],
        grades=cfg["grades"],
        progress=not args.quiet,
        backend_kwargs={"device": cfg["device"]} if cfg["device"] else None,
    )
    if args.ray:
        summary = label_pairs_ray(
            cfg["pairs"],
            cfg["teacher"],
            cfg["out"],
            actors=cfg["actors"],
            gpus_per_actor=cfg["gpus_per_actor"],
            cpus_per_actor=cfg["cpus_per_actor"],
            **common,
        )  # type: ignore[arg-type]
    else:
        summary = label_pairs(cfg["pairs"], cfg["teacher"], cfg["out"], **common)  # type: ignore[arg-type]
    for warning in summary.warnings:
        print(f"pinrel label: warning: {warning}", file=sys.stderr)
    return 0
