"""`pinrel distill`: train the student on label shards with Ray Train."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _dev(value: str) -> float | str:
    """`--dev 0.1` holds out a fraction of queries; anything else is a label-shard dir or records file."""
    try:
        return float(value)
    except ValueError:
        return value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "distill",
        help="distill the student from the teacher's soft labels (Ray Train)",
        description=(
            "Train the compact student on label shards written by `pinrel label`. Runs on the Ray "
            "cluster in RAY_ADDRESS (or one started with `ray start`), else on a local one. Running "
            "again with the same --out resumes from the last checkpoint."
        ),
    )
    p.add_argument("--labels", help="directory of label shards (default: 'labels' in the config)")
    p.add_argument("--out", help="student directory to write (default: 'out' in the config)")
    p.add_argument("--config", help="YAML config (see train/distill.yaml); flags override it")
    p.add_argument("--workers", type=int, help="number of Ray Train workers")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker")
    p.add_argument("--epochs", type=int, help="total epochs (a resumed run trains up to this many)")
    p.add_argument("--dev", type=_dev, help="held-out query fraction, label-shard dir or records file")
    p.add_argument(
        "--max-failures", type=int, help="restarts from the last checkpoint after a worker dies (default 1)"
    )
    p.add_argument("--restart", action="store_true", help="discard checkpoints in --out and start over")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..distill import DistillConfig, distill, load_config
    from ..jobs import check_job_paths

    cfg = load_config(args.config) if args.config else DistillConfig()
    cfg = cfg.with_overrides(
        workers=args.workers, gpu=args.gpu, epochs=args.epochs, dev=args.dev, max_failures=args.max_failures
    )
    labels = args.labels or cfg.labels
    out = args.out or cfg.out
    if not labels:
        raise ValueError("no labels dir: pass --labels or set 'labels' in the config")
    if not out:
        raise ValueError("no output dir: pass --out or set 'out' in the config")
    check_job_paths({"labels": labels, "out": out, "dev": cfg.dev if isinstance(cfg.dev, str) else None})
    summary = distill(labels, out, cfg, restart=args.restart)
    print(json.dumps({k: summary[k] for k in ("model_dir", "epoch", "metrics")}, indent=2, sort_keys=True))
    return 0
