"""Evaluate any model (teacher, student or a baseline) on labelled records, next to the two baselines.

`evaluate` writes three kinds of output into the report directory, each atomically:
* `metrics.json`: `{"model": {...}, "baselines": {"bm25": {...}, "hashed_lr": {...}}}`, every entry with
  the keys of `pinrel.metrics.metric_keys(K)` plus `per_language`; undefined values are null;
* `report.md`: the same numbers as tables, how the baselines were fitted, calibration errors and the
  confusion matrix of the model;
* `confusion.png`, `calibration.png`, `per_language.png`.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import metrics
from .baselines import BASELINES, baseline_names, make_baseline, query_keys, record_weights
from .checks import check_int
from .io import atomic_write_text, atomic_write_with, check_output_dir, json_safe, not_empty, read_json_object
from .predictor import MANIFEST, Predictor, load_predictor, read_manifest
from .records import SCHEMA, make_records, num_grades, read_records

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PLOTS", "evaluate", "format_table", "load_eval_records"]

PLOTS: tuple[str, ...] = ("confusion.png", "calibration.png", "per_language.png")
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class _Scored:
    """One model's probabilities on the evaluation records, with how they came to be."""

    name: str
    probs: npt.NDArray[np.float64]
    how: str


# ---------------------------------------------------------------------------------------------------
# inputs


def load_eval_records(
    source: pa.Table | str | os.PathLike[str],
    what: str,
    mapping: Mapping[str, str] | None = None,
    grades: int | None = None,
) -> pa.Table:
    """Records from a table or a file, conformed to `records.SCHEMA` (in-memory tables may be partial)."""
    if isinstance(source, pa.Table):
        if source.schema.remove_metadata().equals(SCHEMA) and not mapping:
            return source
        return make_records(source, mapping=mapping, grades=grades, source=what)
    if isinstance(source, (str, os.PathLike)):
        return read_records(source, mapping=mapping, grades=grades)
    raise TypeError(f"{what}: expected a pyarrow Table or a path, got {type(source).__name__}")


def _labels(table: pa.Table, what: str, grades: int) -> npt.NDArray[np.int64]:
    column = table.column("label")
    if table.num_rows == 0:
        raise ValueError(f"{what}: no records to evaluate")
    if column.null_count == table.num_rows:
        raise ValueError(
            f"{what}: the records have no labels; evaluation needs graded (query, item) pairs "
            "(map the grade column with --map COLUMN=label)"
        )
    if column.null_count:
        raise ValueError(
            f"{what}: {column.null_count} of {table.num_rows} records have no label; "
            "evaluate graded pairs only (filter the unlabeled ones out first)"
        )
    return metrics.check_labels(column.to_numpy(zero_copy_only=False), grades, f"{what} label")


def _is_baseline_name(model: Any) -> bool:
    if not isinstance(model, str) or model not in BASELINES:
        return False
    # A model directory that happens to be called "bm25" wins over the baseline of that name.
    return not (Path(model) / MANIFEST).is_file()


def _describe_dir(path: str | os.PathLike[str]) -> str:
    manifest = read_manifest(path)
    return f"{manifest['kind']} model `{path}`"


def _stored_grades(source: pa.Table | str | os.PathLike[str] | None) -> int | None:
    """K recorded with the records (table or Parquet metadata), read before the records themselves."""
    if source is None:
        return None
    if isinstance(source, pa.Table):
        return num_grades(source)
    path = Path(source)
    if not (path.is_file() and path.suffix.lower() in (".parquet", ".pq")):
        return None
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError):
        return None  # read_records reports a broken file with its own, better message
    return num_grades(schema.empty_table())


def _resolve_grades(claims: Sequence[tuple[str, int | None]]) -> tuple[int | None, str]:
    """K and who said so; any two sources that disagree are an error naming both."""
    known = [(who, metrics.check_grades(k)) for who, k in claims if k is not None]
    for (name_a, k_a), (name_b, k_b) in itertools.pairwise(known):
        if k_a != k_b:
            raise ValueError(f"grades disagree: {name_a} says K={k_a} but {name_b} says K={k_b}")
    return (known[0][1], known[0][0]) if known else (None, "")


def _grades_from_labels(table: pa.Table) -> int:
    # Only a baseline on files that do not record K (CSV, JSONL) gets here: the labels are all we know.
    labels = table.column("label")
    top = pc.max(labels).as_py() if labels.null_count < table.num_rows else None
    return max(int(top or 2), 2)


# ---------------------------------------------------------------------------------------------------
# scoring


def _progress(iterable: Any, total: int, desc: str, enabled: bool, unit: str) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False)


def _check_probs(probs: Any, n: int, grades: int, who: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.shape != (n, grades):
        raise ValueError(f"{who}: predict_proba returned shape {arr.shape}, expected ({n}, {grades})")
    return arr


def _predict(
    predictor: Predictor, table: pa.Table, grades: int, who: str, batch_size: int, progress: bool
) -> npt.NDArray[np.float64]:
    """Score in slices so a long evaluation shows progress and never holds all model inputs at once."""
    starts = range(0, table.num_rows, batch_size)
    parts = [
        _check_probs(
            predictor.predict_proba(table.slice(s, batch_size)),
            min(batch_size, table.num_rows - s),
            grades,
            who,
        )
        for s in _progress(starts, len(starts), f"scoring {who}", progress, "batch")
    ]
    return np.concatenate(parts) if parts else np.zeros((0, grades))


def _query_folds(keys: npt.NDArray[np.object_], n_folds: int, seed: int) -> npt.NDArray[np.int64]:
    """Fold of every row; all rows of a query share one, and the assignment ignores row order."""
    unique, inverse = np.unique(keys, return_inverse=True)
    if unique.size < 2:
        raise ValueError(
            "cross-fitting the baselines needs at least 2 distinct queries in the evaluation data; "
            "pass train records instead"
        )
    folds = min(n_folds, unique.size)
    fold_of_query = np.random.default_rng(seed).permutation(unique.size) % folds
    return fold_of_query[inverse.reshape(-1)]


def _cross_fit(
    name: str, grades: int, table: pa.Table, n_folds: int, seed: int, progress: bool
) -> npt.NDArray[np.float64]:
    """Out-of-fold probabilities: each query is scored by a baseline that never saw it."""
    fold = _query_folds(query_keys(table), n_folds, seed)
    probs = np.zeros((table.num_rows, grades))
    n = int(fold.max()) + 1
    for k in _progress(range(n), n, f"cross-fitting {name}", progress, "fold"):
        held_out = np.flatnonzero(fold == k)
        model = make_baseline(name, grades).fit(table.filter(pa.array(fold != k)))
        probs[held_out] = _check_probs(
            model.predict_proba(table.take(pa.array(held_out))), held_out.size, grades, name
        )
    return probs


def _score_baseline(
    name: str, grades: int, table: pa.Table, train: pa.Table | None, n_folds: int, seed: int, progress: bool
) -> _Scored:
    if train is not None:
        model = make_baseline(name, grades).fit(train)
        probs = _check_probs(model.predict_proba(table), table.num_rows, grades, name)
        weighted = " (weighted by their `weight`)" if record_weights(train) is not None else ""
        return _Scored(name, probs, f"fitted on the {train.num_rows} train records{weighted}")
    probs = _cross_fit(name, grades, table, n_folds, seed, progress)
    how = f"{min(n_folds, np.unique(query_keys(table)).size)}-fold cross-fitting grouped by query"
    return _Scored(name, probs, f"{how} on the evaluation records")


# ---------------------------------------------------------------------------------------------------
# tables (markdown for the report, plain text for the terminal)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def _columns(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("model", results["model"]), *results["baselines"].items()]


def format_table(results: dict[str, Any], markdown: bool = False) -> str:
    """Metrics (rows) by model and baselines (columns), from `evaluate`'s result or metrics.json."""
    cols = _columns(results)
    keys = [k for k in results["model"] if k != "per_language"]
    rows = [["metric", *[name for name, _ in cols]]] + [[k, *[_fmt(m.get(k)) for _, m in cols]] for k in keys]
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def _language_table(results: dict[str, Any]) -> str:
    per_lang = results["model"].get("per_language", {})
    keys = [k for k in results["model"] if k != "per_language"]
    cols = _columns(results)
    header = ["lang", *keys, *[f"{name} ndcg@10" for name, _ in cols[1:]]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for lang, m in per_lang.items():
        base = [_fmt(b.get("per_language", {}).get(lang, {}).get("ndcg@10")) for _, b in cols[1:]]
        lines.append("| " + " | ".join([lang, *[_fmt(m.get(k)) for k in keys], *base]) + " |")
    return "\n".join(lines)


def _confusion_table(cm: npt.NDArray[np.int64]) -> str:
    k = cm.shape[0]
    lines = [
        "| true \\ predicted | " + " | ".join(str(g) for g in range(1, k + 1)) + " |",
        "|" + "---|" * (k + 1),
    ]
    lines += [f"| {g + 1} | " + " | ".join(str(int(c)) for c in cm[g]) + " |" for g in range(k)]
    return "\n".join(lines)


def _calibration_lines(scored: Sequence[_Scored], labels: npt.NDArray[np.int64]) -> list[str]:
    lines = []
    for s in scored:
        top = metrics.calibration_bins(s.probs.max(axis=1), s.probs.argmax(axis=1) + 1 == labels)
        lines.append(f"| {s.name} | {_fmt(json_safe(top.ece))} |")
    return ["| model | ECE (top grade, 10 bins) |", "|---|---|", *lines]


def _report_markdown(
    results: dict[str, Any],
    scored: Sequence[_Scored],
    labels: npt.NDArray[np.int64],
    keys: npt.NDArray[np.object_],
    grades: int,
    context: dict[str, str],
) -> str:
    n_queries = int(np.unique(keys).size)
    model = scored[0]
    _, per_query = metrics.ndcg_per_query(keys, labels, model.probs.argmax(axis=1) + 1, 10)
    ranked = int(np.count_nonzero(~np.isnan(per_query)))
    cm = metrics.confusion_matrix(labels, model.probs.argmax(axis=1) + 1, grades)
    fitted = [f"- **{s.name}**: {s.how}" for s in scored[1:]] or ["- (no baselines requested)"]
    parts = [
        "# pinrel evaluation",
        "",
        f"- model: {context['model']}",
        f"- data: {context['data']} — {labels.size} graded pairs, {n_queries} queries, K={grades} "
        f"(from {context['grades_from']}); {ranked} queries have two or more grades and count in nDCG",
        "- model scores: " + model.how,
        "- baselines:",
        *[f"  {line}" for line in fitted],
        "",
        "Accuracy and macro-F1 use the most probable grade; AUROC>=t ranks by P(grade >= t); nDCG@k "
        "(gain 2^(grade-1)-1) and Spearman rank by the expected grade. nDCG averages over queries with at "
        "least two different grades (a query whose items share one grade has no ranking to get right). "
        "Empty cells (–) are undefined on this data, e.g. AUROC when one side of a threshold is empty.",
        "",
        "## Model and baselines",
        "",
        format_table(results, markdown=True),
        "",
        "## Per language",
        "",
        _language_table(results),
        "",
        "![per-language metrics](per_language.png)",
        "",
        "## Confusion matrix (model)",
        "",
        _confusion_table(cm),
        "",
        "![confusion matrices](confusion.png)",
        "",
        "## Calibration",
        "",
        *_calibration_lines(scored, labels),
        "",
        "![reliability diagrams](calibration.png)",
        "",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------
# plots


def _save_png(fig: Figure, path: Path) -> None:
    # the temp file has no .png suffix, so the format must be explicit
    atomic_write_with(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))


def _plot_confusion(scored: Sequence[_Scored], labels: npt.NDArray[np.int64], grades: int) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * len(scored), 3.6))
    axes = fig.subplots(1, len(scored), squeeze=False)[0]
    ticks = np.arange(grades)
    for ax, s in zip(axes, scored, strict=True):
        cm = metrics.confusion_matrix(labels, s.probs.argmax(axis=1) + 1, grades)
        # rows normalised so a rare grade's errors are as visible as a common one's
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(grades):
            for j in range(grades):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black",
                )
        ax.set(
            title=s.name,
            xlabel="predicted grade",
            ylabel="true grade",
            xticks=ticks,
            yticks=ticks,
            xticklabels=ticks + 1,
            yticklabels=ticks + 1,
        )
    return fig


def _reliability(ax: Any, probability: np.ndarray, outcome: np.ndarray, label: str) -> None:
    bins = metrics.calibration_bins(probability, outcome)
    used = bins.count > 0
    ax.plot(bins.confidence[used], bins.frequency[used], marker="o", label=f"{label} (ECE {bins.ece:.3f})")


def _plot_calibration(scored: Sequence[_Scored], labels: npt.NDArray[np.int64], grades: int) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.4))
    top, threshold = fig.subplots(1, 2)
    for s in scored:
        _reliability(top, s.probs.max(axis=1), (s.probs.argmax(axis=1) + 1 == labels).astype(float), s.name)
    model = scored[0].probs
    at_least = np.cumsum(model[:, ::-1], axis=1)[:, ::-1]
    for t in range(2, grades + 1):
        _reliability(
            threshold, np.clip(at_least[:, t - 1], 0.0, 1.0), (labels >= t).astype(float), f"grade >= {t}"
        )
    for ax, title, xlabel in (
        (top, "top grade: confidence vs accuracy", "P(most probable grade)"),
        (threshold, f"{scored[0].name}: per threshold", "P(grade >= t)"),
    ):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set(title=title, xlabel=xlabel, ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper left")
    return fig


def _plot_languages(results: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    cols = _columns(results)
    langs = list(results["model"].get("per_language", {}))
    fig = Figure(figsize=(max(6.0, 1.2 * len(langs) * len(cols)), 4.0))
    axes = fig.subplots(1, 2)
    width = 0.8 / len(cols)
    x = np.arange(len(langs))
    for ax, key in zip(axes, ("accuracy", "ndcg@10"), strict=True):
        for i, (name, m) in enumerate(cols):
            values = [m.get("per_language", {}).get(lang, {}).get(key) for lang in langs]
            ax.bar(x + i * width, [np.nan if v is None else v for v in values], width, label=name)
        ax.set(title=key, xticks=x + width * (len(cols) - 1) / 2, ylim=(0, 1))
        ax.set_xticklabels(langs)
        ax.legend(fontsize=7)
    return fig


def _write_plots(
    report_dir: Path,
    results: dict[str, Any],
    scored: Sequence[_Scored],
    labels: npt.NDArray[np.int64],
    grades: int,
) -> None:
    figures: dict[str, Callable[[], Figure]] = {
        "confusion.png": lambda: _plot_confusion(scored, labels, grades),
        "calibration.png": lambda: _plot_calibration(scored, labels, grades),
        "per_language.png": lambda: _plot_languages(results),
    }
    for name, draw in figures.items():
        _save_png(draw(), report_dir / name)


# ---------------------------------------------------------------------------------------------------
# the entry point


def _resolve_model(model: Any) -> tuple[Predictor | str, str, int | None]:
    """(predictor or baseline name, description, grades if the model knows them)."""
    if isinstance(model, (list, tuple)) and len(model) == 1:
        model = model[0]
    if isinstance(model, (list, tuple)) and model:
        named = [m for m in model if _is_baseline_name(m)]
        if named:
            raise ValueError(f"model: a baseline ({named[0]!r}) cannot be a member of an ensemble")
        # Every member is checked before the descriptions read them; `_predict` draws the one bar.
        predictor = load_predictor(model, progress=False)
        members = ", ".join(_describe_dir(m) for m in model)
        return predictor, f"ensemble (mean probabilities) of {members}", int(predictor.grades)
    if _is_baseline_name(model):
        assert isinstance(model, str)
        return model, f"baseline `{model}`", None
    if isinstance(model, (str, os.PathLike)):
        description = _describe_dir(model)
        predictor = load_predictor(model, progress=False)
        return predictor, description, int(predictor.grades)
    if isinstance(model, Predictor):
        return model, f"`{type(model).__name__}` (in memory)", int(model.grades)
    raise TypeError(
        f"model: expected a Predictor, a model directory or one of {sorted(BASELINES)}, "
        f"got {type(model).__name__}"
    )


def _check_report_dir(out: Path) -> None:
    """Before any scoring: the report may go into a new or empty directory, or replace an earlier
    pinrel report; never into a model or data directory, nor over someone else's metrics.json."""
    ours = {METRICS_FILE, REPORT_FILE, *PLOTS}

    def problem(entries: list[str]) -> str | None:
        foreign = [e for e in entries if e not in ours]
        if foreign:
            return not_empty(foreign, "pinrel report")
        if METRICS_FILE in entries and not {"model", "baselines"} <= set(
            read_json_object(out / METRICS_FILE) or {}
        ):
            return f"holds a {METRICS_FILE} that pinrel eval did not write"
        return None

    check_output_dir(out, "report_dir", "pinrel report", problem)


def evaluate(
    model: Predictor | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    data: pa.Table | str | os.PathLike[str],
    report_dir: str | os.PathLike[str],
    train: pa.Table | str | os.PathLike[str] | None = None,
    grades: int | None = None,
    baselines: Sequence[str] = ("bm25", "hashed_lr"),
    *,
    mapping: Mapping[str, str] | None = None,
    n_folds: int = 5,
    seed: int = 0,
    batch_size: int = 1024,
    progress: bool = True,
) -> dict[str, Any]:
    """Score `data` with `model` and the baselines, write the report, and return metrics.json's content.

    `model` is a Predictor, a model directory, a list of model directories (an `Ensemble`: the mean
    of their probabilities), or a baseline name ('bm25', 'hashed_lr') to report a baseline alone.
    Baselines are fitted on `train` when given, else by `n_folds`-fold cross-fitting grouped by query
    on `data` itself, so no query is ever scored by a baseline that saw it.
    """
    names = baseline_names(baselines)
    batch_size = check_int(batch_size, "batch_size")
    n_folds = check_int(n_folds, "n_folds", 2)
    seed = check_int(seed, "seed", 0)
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected True or False, got {progress!r}")
    _check_report_dir(Path(report_dir))
    resolved, description, model_grades = _resolve_model(model)
    known, k_from = _resolve_grades(
        [
            ("the grades argument", grades),
            ("the model", model_grades),
            ("the data's metadata", _stored_grades(data)),
            ("the train records' metadata", _stored_grades(train)),
        ]
    )
    table = load_eval_records(data, "data", mapping, known)
    train_table = load_eval_records(train, "train", mapping, known) if train is not None else None
    k = known if known is not None else _grades_from_labels(table)
    k_from = k_from or "the largest label in the data; pass grades to override"
    labels = _labels(table, "data", k)
    if train_table is not None:
        _labels(train_table, "train", k)

    scored_baselines = {n: _score_baseline(n, k, table, train_table, n_folds, seed, progress) for n in names}
    if isinstance(resolved, str):
        own = scored_baselines.get(resolved) or _score_baseline(
            resolved, k, table, train_table, n_folds, seed, progress
        )
        model_scored = _Scored("model", own.probs, f"the {resolved} baseline, {own.how}")
    else:
        probs = _predict(resolved, table, k, "model", batch_size, progress)
        model_scored = _Scored("model", probs, "predicted directly on the evaluation records")

    keys = query_keys(table)
    langs = table.column("lang").to_pylist()
    results = json_safe(
        {
            "model": metrics.compute_all(model_scored.probs, labels, keys, langs),
            "baselines": {
                n: metrics.compute_all(s.probs, labels, keys, langs) for n, s in scored_baselines.items()
            },
        }
    )
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored = [model_scored, *scored_baselines.values()]
    _write_plots(out, results, scored, labels, k)
    context = {
        "model": description,
        "data": f"`{data}`" if not isinstance(data, pa.Table) else "an in-memory table",
        "grades_from": k_from,
    }
    atomic_write_text(out / REPORT_FILE, _report_markdown(results, scored, labels, keys, k, context))
    # metrics.json last: its presence means the whole report is there
    text = json.dumps(results, indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_text(out / METRICS_FILE, text + "\n")
    return results
