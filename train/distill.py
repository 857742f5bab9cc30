"""Ray job entrypoint for distillation; all logic lives in `pinrel.distill`.

    ray job submit --working-dir . -- python train/distill.py --config train/distill.yaml

Paths in the config should be absolute (or on shared storage): the job runs in an uploaded copy of
the working dir, possibly on another machine.
"""

from __future__ import annotations

import argparse
import json
import sys

from pinrel.distill import distill, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="train/distill.yaml", help="YAML config with labels and out")
    parser.add_argument("--labels", help="overrides 'labels' in the config")
    parser.add_argument("--out", help="overrides 'out' in the config")
    parser.add_argument("--restart", action="store_true", help="discard checkpoints and start over")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    labels, out = args.labels or cfg.labels, args.out or cfg.out
    if not labels or not out:
        parser.error("the config (or --labels/--out) must name the labels dir and the output dir")
    summary = distill(labels, out, cfg, restart=args.restart)
    print(json.dumps({k: summary[k] for k in ("model_dir", "epoch", "metrics")}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
