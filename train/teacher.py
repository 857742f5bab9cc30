"""Ray job entrypoint for teacher training: `pinrel teacher train` with train/teacher.yaml by default.

    ray job submit --working-dir . -- python train/teacher.py --config train/teacher.yaml \
        --train $PWD/runs/data/train.parquet --dev $PWD/runs/data/dev.parquet --out $PWD/runs/teacher

Every flag of `pinrel teacher train` works here (see `--help`); the YAML holds the `teacher:` settings
and `data:` paths. Under `--working-dir`, paths must be absolute: the job runs in an uploaded copy of
the working dir. Training connects to the cluster in RAY_ADDRESS (set by `ray job submit`).
"""

from __future__ import annotations

import sys

from pinrel.jobs import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(["teacher", "train"], "train/teacher.yaml", argv)


if __name__ == "__main__":
    sys.exit(main())
