"""Padding waste of `bucket_batches` against arrival-order batching, on real length distributions.

Lengths are those of CrowdFlower product texts (title + description, cleaned): whitespace tokens and
chars, each capped at 512 as a tokenizer's truncation would. Both batchings obey the same limits: at
most `max_batch_size` sequences and `max_len * len(batch) <= max_tokens` per batch. Arrival order
fills batches greedily in input order, which is what a server without bucketing does.

Target (issue): bucketed padding waste < 5%.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pinrel
from _common import Result, load_products, print_results, print_table
from pinrel.backends.hf import arrival_batches  # the baseline the labeler's bench uses too

CAP = 512


def run(max_tokens: int = 8192, max_batch_size: int = 64) -> list[Result]:
    rows, source = load_products()
    texts = pinrel.clean_text([f"{r['title']} {r['description']}" for r in rows])
    distributions = {
        "whitespace tokens": np.minimum([len(t.split()) for t in texts], CAP).astype(np.int64),
        "chars": np.minimum([len(t) for t in texts], CAP).astype(np.int64),
    }
    print(f"data: {source}; {len(texts)} texts; max_tokens={max_tokens}, max_batch_size={max_batch_size}")
    table = []
    results = []
    for name, lengths in distributions.items():
        start = time.perf_counter()
        bucketed = pinrel.bucket_batches(lengths, max_tokens=max_tokens, max_batch_size=max_batch_size)
        elapsed = time.perf_counter() - start
        arrival = arrival_batches(lengths, max_tokens, max_batch_size)
        for label, batches in (("bucket_batches", bucketed), ("arrival order", arrival)):
            waste = pinrel.padding_waste(lengths, batches)
            slots = sum(int(lengths[b].max()) * len(b) for b in batches)
            table.append(
                (
                    f"{name}: {label}",
                    f"{np.median(lengths):.0f} / {lengths.mean():.0f} / {lengths.max()}",
                    len(batches),
                    f"{slots:,}",
                    f"{100 * waste:.2f}%",
                )
            )
            if label == "bucket_batches":
                results.append(Result(f"batching waste ({name}), bucketed", 100 * waste, 5.0, "max", "%"))
        print(f"bucket_batches on {len(lengths)} {name} lengths: {1e3 * elapsed:.1f} ms")
    print_table(
        "Padding waste: padded-but-empty slots / all slots",
        ["batching", "length median / mean / max", "batches", "slots", "waste"],
        table,
    )
    print_results(results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--max-batch-size", type=int, default=64)
    args = parser.parse_args()
    run(args.max_tokens, args.max_batch_size)
