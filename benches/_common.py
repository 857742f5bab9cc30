"""Shared pieces of the benchmark scripts: the product texts, timing and result tables.

Benchmarks report; they never gate. Each script prints its own table and returns `Result`s so that
`run_all.py` can print one summary with the targets from the issue.
"""

from __future__ import annotations

import csv
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    name: str
    value: float
    target: float
    # "min": value must be >= target (speed-ups); "max": value must be < target (waste).
    kind: str
    unit: str = "x"

    @property
    def passed(self) -> bool:
        return self.value >= self.target if self.kind == "min" else self.value < self.target

    def target_text(self) -> str:
        op = ">=" if self.kind == "min" else "<"
        return f"{op} {self.target:g}{self.unit}"

    def value_text(self) -> str:
        return f"{self.value:.1f}{self.unit}" if self.unit == "x" else f"{self.value:.2f}{self.unit}"


def shared_data() -> Path | None:
    """The shared data folder (the library's rule), when it holds the CrowdFlower folds."""
    from pinrel.datasets import shared_data_dir

    root = shared_data_dir()
    return root if root is not None and (root / "crowdflower").is_dir() else None


def load_products() -> tuple[list[dict[str, str]], str]:
    """CrowdFlower rows as `{query, title, description}`, and where they came from.

    Without the shared data, synthetic rows of a similar length stand in so that the scripts still
    run; the source string says so and every table repeats it.
    """
    root = shared_data()
    if root is not None:
        rows: list[dict[str, str]] = []
        for path in sorted((root / "crowdflower").glob("fold*.csv")):
            with path.open(newline="", encoding="utf-8") as fh:
                for r in csv.DictReader(fh):
                    rows.append(
                        {
                            "query": r["query"],
                            "title": r["product_title"],
                            "description": r["product_description"],
                        }
                    )
        if rows:
            return rows, f"crowdflower ({len(rows)} products, {root / 'crowdflower'})"
    return synthetic_products(10_000), "SYNTHETIC texts (../shared/data/crowdflower not found)"


def synthetic_products(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    vocab = [
        "red", "blue", "ceramic", "mug", "coffee", "led", "light", "bulb", "pack", "of", "25", "wall",
        "clock", "radio", "controlled", "girls", "halloween", "costume", "pillow", "decorative", "steel",
        "stainless", "kitchen", "the", "and", "with", "for", "in", "cotton", "quartz", "digital", "set",
    ]  # fmt: skip
    rows = []
    for _ in range(n):
        title = " ".join(rng.choice(vocab).title() for _ in range(rng.randint(3, 12)))
        n_desc = int(min(rng.lognormvariate(4.0, 1.0), 3000))
        desc = " ".join(rng.choice(vocab) for _ in range(n_desc))
        if rng.random() < 0.1:
            desc = f"<p>{desc}</p> &amp; <b>more</b>"
        rows.append({"query": " ".join(rng.sample(vocab, 2)), "title": title, "description": desc})
    return rows


@dataclass
class Timing:
    """Medians over the timed runs: wall time, and CPU time of the whole process (all threads)."""

    wall: float
    cpu: float


def compare(cases: dict[str, tuple[Callable[[], Any], int]], warmup: int = 1) -> dict[str, Timing]:
    """Time every case `(fn, repeats)` round-robin, so that a change in machine load between rounds
    hits all cases alike instead of whichever happened to run then; medians per case."""
    for fn, _ in cases.values():
        for _ in range(warmup):
            fn()
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(max(r for _, r in cases.values())):
        for name, (fn, repeats) in cases.items():
            if round_ >= repeats:
                continue
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            walls[name].append(time.perf_counter() - w0)
            cpus[name].append(time.process_time() - c0)
    return {name: Timing(statistics.median(walls[name]), statistics.median(cpus[name])) for name in cases}


def thread_cpu_ns() -> dict[int, tuple[str, int]]:
    """CPU time so far of each thread of this process, `{tid: (name, ns)}` (Linux; empty elsewhere)."""
    out: dict[int, tuple[str, int]] = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[int(task.name)] = (name, ns)
    return out


def critical_path_s(fn: Callable[[], Any], repeats: int, pool_prefix: str = "pinrel-") -> tuple[float, float]:
    """`(serial, parallel)` CPU seconds of `fn`, medians over `repeats` runs.

    `serial` is CPU time of the threads outside the pool (argument conversion, result assembly), and
    `parallel` the CPU time of the busiest pool thread. Their sum is what the run would take on an
    idle machine, which wall time on a busy one cannot show; with one thread, it is the total.
    """
    serial, parallel = [], []
    for _ in range(repeats):
        before = thread_cpu_ns()
        fn()
        after = thread_cpu_ns()
        pool, other = [], 0
        for tid, (name, ns) in after.items():
            delta = ns - before.get(tid, (name, 0))[1]
            if name.startswith(pool_prefix):
                pool.append(delta)
            else:
                other += delta
        serial.append(other / 1e9)
        parallel.append(max(pool, default=0) / 1e9)
    return statistics.median(serial), statistics.median(parallel)


def machine_note() -> str:
    """CPU count and load, printed with every table: on a busy machine, ratios between runs of
    different thread counts mean little, and single-threaded ratios are better read from CPU time."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load}"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "-+-".join("-" * w for w in widths)
    print(f"\n{title}")
    print(line)
    for i, r in enumerate(cells):
        print(
            " | ".join(
                c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            print(line)
    print(line)


def print_results(results: Sequence[Result]) -> None:
    print_table(
        "Targets",
        ["ratio", "measured", "target", "status"],
        [(r.name, r.value_text(), r.target_text(), "PASS" if r.passed else "FAIL") for r in results],
    )
