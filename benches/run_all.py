"""Run every benchmark and print one summary of the ratios against the issue's targets.

Benchmarks report and never gate: the exit status is 0 whatever the numbers, so `make bench` can
run anywhere (timings on a shared or busy machine are noisy; see the machine line of each table).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_assemble
import bench_batching
import bench_hashing
from _common import Result, machine_note, print_table


def main() -> int:
    results: list[Result] = []
    failures: list[str] = []
    for module in (bench_hashing, bench_assemble, bench_batching):
        name = module.__name__
        print(f"\n{'=' * 30} {name} {'=' * 30}")
        try:
            results += module.run()
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failures.append(name)
    print(f"\n{'=' * 30} summary {'=' * 30}")
    print(f"machine: {machine_note()}")
    rows = [(r.name, r.value_text(), r.target_text(), "PASS" if r.passed else "FAIL") for r in results]
    rows += [(f"{name} (did not run)", "-", "-", "ERROR") for name in failures]
    print_table("Benchmarks against targets", ["ratio", "measured", "target", "status"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
