"""Ray job entrypoint for pseudo-labeling: `pinrel label --ray` with train/label.yaml by default.

    ray job submit --working-dir . -- python train/label.py --config train/label.yaml \
        --pairs $PWD/runs/pairs.parquet --teacher $PWD/runs/teacher --out $PWD/runs/labels

A Ray Data pipeline over the shards still to write, run by an actor pool that loads the teacher once
per actor; every shard is written atomically, so resubmitting the job after a failure finishes the
remaining shards only. Every flag of `pinrel label` works here (see `--help`); the YAML holds the
same settings. Under `--working-dir`, paths must be absolute: the job runs in an uploaded copy of
the working dir. Labeling connects to the cluster in RAY_ADDRESS (set by `ray job submit`).
"""

from __future__ import annotations

import sys

from pinrel.jobs import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(["label", "--ray"], "train/label.yaml", argv)


if __name__ == "__main__":
    sys.exit(main())
