"""Where one serving request's time goes, in-process: 1 query x 100 items on the default student.

Stages as a Serve replica runs them (parse, limits, assembly, hashing, match features, forward,
render), then the whole `Scorer.score` call with torch on 1 and on 2 threads, interleaved round by
round so both see the same machine; medians of `--repeats` calls. This is where the figures in
`serving.configure_threads` and the README's serving section come from.

    python benches/bench_request_path.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import default_student, sample_items


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()

    import torch

    import pinrel
    from pinrel.serving import check_limits, parse_score_request, render_response
    from pinrel.student import Scorer

    with tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer.load(default_student(Path(tmp) / "student"))
    body = json.dumps({"query": "red ceramic mug", "items": sample_items(100)}).encode()
    req = parse_score_request(body)
    items = req.items
    texts = pinrel.assemble(items, scorer.spec)
    queries = [req.query] * len(texts)
    scores = scorer.score(req.query, items)
    hasher, model, device = scorer.hasher, scorer._parts.model, scorer._parts.device
    from pinrel.student import featurize

    features = featurize(hasher, scorer.spec, queries, items)

    def forward() -> None:
        with torch.inference_mode():
            model(**features.tensors(device))

    torch.set_num_threads(1)
    stages = {
        "parse + validate (pydantic)": lambda: parse_score_request(body),
        "check_limits": lambda: check_limits(req, 1000, 20_000),
        "assemble (Rust)": lambda: pinrel.assemble(items, scorer.spec),
        "hash items (Rust)": lambda: hasher.transform(texts),
        "match features (Rust)": lambda: hasher.transform_pairs(queries, texts),
        "forward (torch, 1 thread)": forward,
        "render_response": lambda: render_response("x", req, scores),
    }
    n, threads = len(items), pinrel.get_num_threads()
    print(f"1 query x {n} items, pinrel threads {threads}, medians of {args.repeats}")
    for name, fn in stages.items():
        print(f"  {name:<30}{median_ms(fn, args.repeats):8.3f} ms")

    rounds: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(4):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            rounds[threads].append(median_ms(lambda: scorer.score(req.query, items), args.repeats // 4 or 1))
    print("Scorer.score, whole call (4 interleaved rounds, each a median):")
    for threads, ms in rounds.items():
        print(f"  torch {threads} thread(s): " + " / ".join(f"{m:.2f}" for m in ms) + " ms")
    ratio = statistics.median(rounds[2]) / statistics.median(rounds[1])
    print(f"  2 torch threads / 1: {ratio:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
