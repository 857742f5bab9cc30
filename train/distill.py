"""Ray job entrypoint for distillation: `pinrel distill` with train/distill.yaml by default.

    ray job submit --working-dir . -- python train/distill.py --config train/distill.yaml \
        --labels $PWD/runs/labels --out $PWD/runs/student

Every flag of `pinrel distill` works here (see `--help`). Under `--working-dir`, paths must be
absolute (or on shared storage): the job runs in an uploaded copy of the working dir, possibly on
another machine.
"""

from __future__ import annotations

import sys

from pinrel.jobs import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(["distill"], "train/distill.yaml", argv)


if __name__ == "__main__":
    sys.exit(main())
