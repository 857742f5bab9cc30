"""Ray job entrypoint for pseudo-labeling; all logic lives in `pinrel.label.label_pairs_ray`.

    ray job submit --working-dir . -- python train/label.py --config train/label.yaml

A Ray Data pipeline over the shards still to write, run by an actor pool that loads the teacher once
per actor; every shard is written atomically, so resubmitting the job after a failure finishes the
remaining shards only. `label_pairs_ray` connects to the cluster named by RAY_ADDRESS (set by
`ray job submit`) or starts a local Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

DEFAULTS: dict[str, Any] = {
    "pairs": None,
    "teacher": None,
    "out": None,
    "backend": "auto",
    "actors": 1,
    "gpus_per_actor": 0.0,
    "cpus_per_actor": 1.0,
    "shard_size": 10_000,
    "max_tokens": 16_384,
    "grades": None,
}


def load_config(path: str | None) -> dict[str, Any]:
    """DEFAULTS updated from the YAML file; unknown keys are errors, so typos do not pass silently."""
    cfg = dict(DEFAULTS)
    if path is None:
        return cfg
    from pinrel.io import read_yaml_mapping

    p = Path(path)
    data = read_yaml_mapping(p)
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config: {p}: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    cfg.update(data)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="train/label.yaml", help="YAML settings (see train/label.yaml)")
    for key in ("pairs", "teacher", "out", "backend"):
        parser.add_argument(f"--{key}", help=f"overrides '{key}' in the config")
    for key, kind in (
        ("actors", int),
        ("gpus_per_actor", float),
        ("cpus_per_actor", float),
        ("shard_size", int),
        ("max_tokens", int),
        ("grades", int),
    ):
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, help=f"overrides '{key}'")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    cfg.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    missing = [k for k in ("pairs", "teacher", "out") if not cfg[k]]
    if missing:
        parser.error(f"the config (or flags) must set {', '.join(missing)}")

    from pinrel.jobs import check_job_paths
    from pinrel.label import label_pairs_ray

    check_job_paths({k: cfg[k] for k in ("pairs", "teacher", "out")})

    summary = label_pairs_ray(
        cfg["pairs"],
        cfg["teacher"],
        cfg["out"],
        actors=int(cfg["actors"]),
        gpus_per_actor=float(cfg["gpus_per_actor"]),
        cpus_per_actor=float(cfg["cpus_per_actor"]),
        backend=cfg["backend"],
        shard_size=int(cfg["shard_size"]),
        max_tokens=int(cfg["max_tokens"]),
        grades=cfg["grades"],
        progress=True,
    )
    print(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    from pinrel.jobs import run_entrypoint

    sys.exit(run_entrypoint("train/label.py", main))
