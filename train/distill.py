"""Ray job entrypoint for distillation; all logic lives in `pinrel.distill`.

    ray job submit --working-dir . -- python train/distill.py --config train/distill.yaml

Paths in the config should be absolute (or on shared storage): the job runs in an uploaded copy of
the working dir, possibly on another machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from pinrel.distill import distill, load_config
from pinrel.jobs import check_job_paths, run_entrypoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="train/distill.yaml", help="YAML config with labels and out")
    parser.add_argument("--labels", help="overrides 'labels' in the config")
    parser.add_argument("--out", help="overrides 'out' in the config")
    parser.add_argument("--restart", action="store_true", help="discard checkpoints and start over")
    parser.add_argument("--max-failures", type=int, help="overrides 'max_failures' (worker restarts)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if args.max_failures is not None:
        cfg = dataclasses.replace(cfg, max_failures=args.max_failures)
    labels, out = args.labels or cfg.labels, args.out or cfg.out
    if not labels or not out:
        parser.error("the config (or --labels/--out) must name the labels dir and the output dir")
    dev = cfg.dev if isinstance(cfg.dev, str) else None  # a number is a held-out fraction, not a path
    check_job_paths({"labels": labels, "out": out, "dev": dev})
    summary = distill(labels, out, cfg, restart=args.restart)
    print(json.dumps({k: summary[k] for k in ("model_dir", "epoch", "metrics")}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(run_entrypoint("train/distill.py", main))
