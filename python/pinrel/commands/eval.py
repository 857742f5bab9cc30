"""`pinrel eval`: metrics, plots and a report for any model (or a baseline alone) on labelled records."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

BASELINE_CHOICES = ("bm25", "hashed_lr")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "eval",
        help="evaluate a model and the BM25 / hashed-LR baselines on labelled records",
        description="Writes REPORT/metrics.json, REPORT/report.md and PNG plots (confusion, calibration, "
        "per language). Baselines are fitted on --train when given, else by 5-fold cross-fitting "
        "grouped by query on --data.",
    )
    p.add_argument(
        "--model",
        required=True,
        action="append",
        help="a model directory (teacher or student), or 'bm25' / 'hashed_lr' to evaluate a baseline alone; "
        "repeat it to evaluate an ensemble (the mean of the models' probabilities)",
    )
    p.add_argument(
        "--data", required=True, help="labelled records to evaluate on (Parquet, CSV, TSV or JSONL)"
    )
    p.add_argument("--report", required=True, help="output directory for metrics.json, report.md and plots")
    p.add_argument("--train", help="records to fit the baselines on (default: cross-fitting on --data)")
    p.add_argument("--grades", type=int, help="number of grades K (default: from the model or the data)")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SRC=FIELD",
        help="rename a source column to a record field (repeatable), e.g. --map median_relevance=label",
    )
    p.add_argument(
        "--baselines",
        default=",".join(BASELINE_CHOICES),
        help="comma-separated baselines to report next to the model, or 'none' (default: %(default)s)",
    )
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds when there is no --train")
    p.add_argument("--seed", type=int, default=0, help="seed of the query-grouped fold assignment")
    p.add_argument("--batch-size", type=int, default=1024, help="records per predict_proba call")
    p.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bars"
    )
    p.set_defaults(func=_run)


def _baselines(spec: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    return () if names in ((), ("none",)) else names


def _run(args: argparse.Namespace) -> int:
    from ..eval import evaluate, format_table
    from ..records import parse_mapping

    results: dict[str, Any] = evaluate(
        args.model,  # a list of one is that model; more make an ensemble
        args.data,
        args.report,
        train=args.train,
        grades=args.grades,
        baselines=_baselines(args.baselines),
        mapping=parse_mapping(args.map) if args.map else None,
        n_folds=args.folds,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(format_table(results))
    print(f"report written to {Path(args.report) / 'report.md'}")
    return 0
