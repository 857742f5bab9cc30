"""`FeatureHasher.transform` against scikit-learn's `HashingVectorizer` with the same n-grams.

Baseline: word 1-2 grams plus char_wb 3-5 grams, two HashingVectorizers (alternate_sign, norm=None)
summed and l2-normalised, which is what pinrel's default hasher computes (up to tokenisation details
and the hash function). Both sides get the same raw product texts (title + description).

Targets (issue): pinrel >= 25x faster than the baseline single-threaded, and pinrel on 2 threads
>= 1.6x faster than on 1 thread.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pinrel
from _common import (
    Result,
    compare,
    critical_path_s,
    load_products,
    machine_note,
    print_results,
    print_table,
)

N_FEATURES = 2**20


def sklearn_baseline() -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.preprocessing import normalize

    words = HashingVectorizer(
        analyzer="word", ngram_range=(1, 2), n_features=N_FEATURES, alternate_sign=True, norm=None
    )
    chars = HashingVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), n_features=N_FEATURES, alternate_sign=True, norm=None
    )

    def transform(texts: list[str]) -> Any:
        return normalize(words.transform(texts) + chars.transform(texts), norm="l2", copy=False)

    return transform


def on_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` on a pool of `n` threads; resizing builds a new pool, a fraction of a millisecond."""

    def run() -> Any:
        pinrel.set_num_threads(n)
        return fn()

    return run


def kernel_cost(fn: Callable[[], Any], repeats: int) -> tuple[float | None, float]:
    """`(minor page faults, system CPU s)` per call of `fn`, means over `repeats` calls after a warm-up
    (`getrusage` of this process; `(None, 0)` where it is unavailable)."""
    try:
        import resource
    except ImportError:
        return None, 0.0
    fn()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        fn()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (r1.ru_minflt - r0.ru_minflt) / repeats, (r1.ru_stime - r0.ru_stime) / repeats


def run(repeats: int = 5, limit: int | None = None) -> list[Result]:
    rows, source = load_products()
    texts = [f"{r['title']} {r['description']}" for r in rows][:limit]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    hasher = pinrel.FeatureHasher(n_features=N_FEATURES, word_ngrams=(1, 2), char_ngrams=(3, 5))
    baseline = sklearn_baseline()
    before = pinrel.get_num_threads()
    try:
        t = compare(
            {
                # The baseline is slow, so fewer repeats; it is single-threaded by construction.
                "sklearn": (lambda: baseline(texts), max(1, repeats // 2 + 1)),
                "pinrel1": (on_threads(1, lambda: hasher.transform(texts)), repeats),
                "pinrel2": (on_threads(2, lambda: hasher.transform(texts)), repeats),
            }
        )
    finally:
        pinrel.set_num_threads(before)

    nnz_pinrel = hasher.transform(texts[:1000]).nnz
    nnz_sklearn = baseline(texts[:1000]).nnz
    print(f"data: {source}; {len(texts)} texts, {megabytes:.1f} MB UTF-8; medians of {repeats} rounds")
    print(f"machine: {machine_note()}")
    print_table(
        "Hashing: word 1-2 + char 3-5 grams into 2**20 columns, l2 rows",
        ["implementation", "threads", "wall s", "CPU s", "texts/s", "MB/s"],
        [
            (
                name,
                threads,
                f"{x.wall:.3f}",
                f"{x.cpu:.3f}",
                f"{len(texts) / x.wall:,.0f}",
                f"{megabytes / x.wall:.1f}",
            )
            for name, threads, x in [
                ("sklearn HashingVectorizer x2 (word + char_wb)", 1, t["sklearn"]),
                ("pinrel FeatureHasher", 1, t["pinrel1"]),
                ("pinrel FeatureHasher", 2, t["pinrel2"]),
            ]
        ],
    )
    print(f"non-zeros in the first 1000 rows: pinrel {nnz_pinrel:,}, sklearn {nnz_sklearn:,}")
    print(f"single-threaded ratio by CPU time: {t['sklearn'].cpu / t['pinrel1'].cpu:.1f}x")
    # Wall-time speed-up needs idle cores; the CPU-time critical path estimates it on a busy machine.
    paths = {}
    for n in (1, 2):
        pinrel.set_num_threads(n)
        paths[n] = critical_path_s(lambda: hasher.transform(texts), repeats)
    # The kernel's share: every call writes its output into fresh memory, faulted in a page at a time.
    kernel = {}
    for n in (1, 2):
        pinrel.set_num_threads(n)
        kernel[n] = kernel_cost(lambda: hasher.transform(texts), repeats)
    pinrel.set_num_threads(before)
    for n, (faults, system) in kernel.items():
        if faults is not None:
            print(
                f"kernel per call, {n} thread(s): {faults:,.0f} minor page faults, "
                f"{1e3 * system:.0f} ms system CPU"
            )
    if all(sum(p) > 0 for p in paths.values()):
        (s1, p1), (s2, p2) = paths[1], paths[2]
        print(
            f"CPU critical path (serial + busiest pool thread): 1 thread {s1:.3f} + {p1:.3f} s, "
            f"2 threads {s2:.3f} + {p2:.3f} s -> idle-machine estimate {(s1 + p1) / (s2 + p2):.2f}x"
        )
    results = [
        Result("hashing: pinrel 1 thread vs sklearn", t["sklearn"].wall / t["pinrel1"].wall, 25.0, "min"),
        Result("hashing: pinrel 2 threads vs 1 thread", t["pinrel1"].wall / t["pinrel2"].wall, 1.6, "min"),
    ]
    print_results(results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N texts")
    args = parser.parse_args()
    run(args.repeats, args.limit)
