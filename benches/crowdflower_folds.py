"""CrowdFlower teacher vs baselines over query-disjoint folds: every query held out once.

One 80/20 split holds out 52 CrowdFlower queries, and per-query nDCG@10 varies so much between queries
that the teacher-minus-baseline difference moves by more than the teacher's lead from one such split
to another (see the per-fold table this bench writes): a single split cannot say which model ranks
better. This bench splits the queries into `--folds` query-disjoint
parts (`split_by_query`, `--seed`; 5 folds = five 80/20 splits), and for each fold trains the teacher
(all-MiniLM-L6-v2, full fine-tuning on Ray Train, the settings of `crowdflower_quality.py`, on the whole
train part as the baselines are) and fits BM25 and hashed LR on the same train part. The held-out
predictions of all folds are pooled, so every metric covers all 261 queries and 10,158 pairs, and the
teacher-minus-baseline differences in accuracy and nDCG@10 get a paired bootstrap over queries.

    python benches/crowdflower_folds.py [--out bench-out/crowdflower-folds] [--folds 5] [--seed 0]
        [--teacher-epochs 2] [--teacher-lr 1e-4] [--max-length 128] [--teacher-seeds 1] [--bootstrap 10000]
        [--teacher-pairwise-weight 0] [--variance-weights]

About 13 minutes per fold on 2 idle CPUs (the teacher's 2 epochs). With the defaults (the teacher's
head reads the mean of MiniLM's token states, `--teacher-pooling auto`; one teacher per fold): pooled
accuracy 0.637 and nDCG@10 0.846 (hashed LR 0.618 and 0.813; bootstrap intervals of the differences
+0.006..+0.032 and +0.019..+0.046). Every other figure in this docstring came from the [CLS] head
(`--teacher-pooling cls`). max_length 128 cuts 30% of
CrowdFlower's assembled pairs short (their descriptions' tails; the report counts them) while the
baselines read every word; the teacher's own default, `--max-length 256`, cuts 2 of 10,158, takes
385 s per epoch instead of 310 and did no better here (pooled accuracy 0.613 vs 0.621 at 128,
nDCG@10 0.815 vs 0.820).

`--teacher-seeds N` trains N teachers per fold (seeds --seed, --seed+1, ...; the first keeps the
directory of a one-teacher run, so such a run resumes and only adds the others) and scores the mean
of their probabilities, as `pinrel label --teacher A --teacher B` labels; the report adds each seed's
own pooled metrics. With 2 seeds here: pooled accuracy 0.626 and nDCG@10 0.826 (one teacher: 0.621
and 0.820 for seed 0, 0.619 and 0.822 for seed 1; hashed LR 0.618 and 0.813). With 3: 0.625 and
0.826 (seed 2 alone: 0.614 and 0.817).

`--gpu` trains the teachers on a GPU (`use_gpu`, bf16 autocast) and scores the held-out pairs there
in fp32. A GPU teacher is not taken for a CPU one on resume.

Every fold writes its split, the teachers and the held-out probabilities of all three models under
`--out/foldN/` and is skipped when they are complete, so a re-run goes on where it stopped (the
teacher also resumes from its last Ray Train checkpoint). Results: `results.md` and `results.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

# shares the teacher settings, the teacher stage and the Ray helpers
import crowdflower_quality as cq

GRADES = cq.GRADES
NAMES = {"bm25": "BM25", "hashed_lr": "hashed LR"}


def baselines(args: argparse.Namespace) -> tuple[str, ...]:
    """The baselines of a run; on weighted data also fitted without the weights, as earlier runs were."""
    plain = ("bm25", "hashed_lr")
    return (*plain, *(f"{b}_unweighted" for b in plain)) if args.variance_weights else plain


def models(args: argparse.Namespace) -> tuple[str, ...]:
    return ("teacher", *baselines(args))


def display_name(model: str) -> str:
    base = model.removesuffix("_unweighted")
    return NAMES[base] + (" (unweighted)" if base != model else "")


HEADLINE = ("accuracy", "macro_f1", "ndcg@10", "ndcg@20", "spearman", "auroc>=2", "auroc>=3", "auroc>=4")
log = cq.log


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Atomic: a fold whose probabilities exist is complete, so a half-written file must never exist."""
    from pinrel.io import atomic_path

    # through a handle: np.save given a path would append ".npy" to the temp file's name
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def write_folds(args: argparse.Namespace, out: Path) -> list[Path]:
    from pinrel.records import split_by_query, write_records

    dirs = [out / f"fold{f}" for f in range(args.folds)]
    spec: dict[str, Any] = {"seed": args.seed, "folds": args.folds}
    if args.variance_weights:
        spec["variance_weights"] = True
    if cq.split_done(out / "folds.json", spec):
        return dirs
    import pyarrow as pa

    table = cq.load_table(args.variance_weights)
    parts = split_by_query(table, [1.0 / args.folds] * args.folds, args.seed)
    for f, d in enumerate(dirs):
        d.mkdir(parents=True, exist_ok=True)
        train = pa.concat_tables([p for i, p in enumerate(parts) if i != f])
        write_records(train, d / "train.parquet", grades=GRADES)
        write_records(parts[f], d / "heldout.parquet", grades=GRADES)
    cq.record_split(out / "folds.json", spec)
    log(f"{table.num_rows} pairs: {args.folds} query-disjoint folds of {[p.num_rows for p in parts]} pairs")
    return dirs


def probs_file(d: Path, args: argparse.Namespace, seed: int) -> Path:
    return d / f"{cq.teacher_dir(d, args, seed).name}_probs.npy"


def teacher_args(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """The namespace `crowdflower_quality`'s teacher stage reads: same model and settings, no dev set."""
    return argparse.Namespace(
        model=args.model,
        teacher_epochs=args.teacher_epochs,
        teacher_lr=args.teacher_lr,
        max_length=args.max_length,
        teacher_dev_share=0.0,
        teacher_ordinal_weight=0.0,
        teacher_pairwise_weight=args.teacher_pairwise_weight,
        teacher_pooling=args.teacher_pooling,
        variance_weights=args.variance_weights,
        seed=seed,
        gpu=args.gpu,
    )


def run_fold(args: argparse.Namespace, d: Path) -> None:
    from pinrel.baselines import make_baseline
    from pinrel.records import read_records
    from pinrel.teacher import load_teacher

    paths = {"teacher_train": d / "train.parquet"}
    heldout = read_records(d / "heldout.parquet", grades=GRADES)
    for seed in cq.teacher_seeds(args):
        tdir, pfile = cq.teacher_dir(d, args, seed), probs_file(d, args, seed)
        if not cq.teacher_done(tdir, teacher_args(args, seed)):
            cq.ensure_ray()
            # refuses a finished teacher of other settings
            cq.train_teacher_stage(teacher_args(args, seed), paths, tdir)
            # held-out probabilities on disk predate the teacher just trained
            pfile.unlink(missing_ok=True)
        if not pfile.is_file():
            # fp32 on either device: the held-out probabilities are what the table reports
            device = "cuda" if args.gpu else "cpu"
            teacher = load_teacher(tdir, backend="hf", device=device, dtype="float32", progress=False)
            save_npy(pfile, np.asarray(teacher.predict_proba(heldout), dtype=np.float32))
    train = read_records(d / "train.parquet", grades=GRADES)
    for name in baselines(args):
        if not (d / f"{name}_probs.npy").is_file():
            fit_on = train.drop_columns(["weight"]) if name.endswith("_unweighted") else train
            probs = make_baseline(name.removesuffix("_unweighted"), GRADES).fit(fit_on).predict_proba(heldout)
            save_npy(d / f"{name}_probs.npy", np.asarray(probs, dtype=np.float32))


def fold_done(args: argparse.Namespace, d: Path) -> bool:
    teachers_done = all(
        cq.teacher_done(cq.teacher_dir(d, args, s), teacher_args(args, s))
        and probs_file(d, args, s).is_file()
        for s in cq.teacher_seeds(args)
    )
    return teachers_done and all((d / f"{m}_probs.npy").is_file() for m in baselines(args))


def load_probs(path: Path) -> np.ndarray:
    p = np.load(path).astype(np.float64)
    return p / p.sum(axis=1, keepdims=True)  # float32 rounding; the metrics check rows sum to 1


def teacher_probs(d: Path, args: argparse.Namespace) -> tuple[np.ndarray, list[np.ndarray]]:
    """The fold's teacher probabilities (the mean over its seeds' teachers) and each seed's own."""
    singles = [load_probs(probs_file(d, args, s)) for s in cq.teacher_seeds(args)]
    return np.mean(singles, axis=0), singles


def paired_bootstrap(
    per_query: dict[str, np.ndarray], weights: np.ndarray, reps: int, seed: int
) -> dict[str, float]:
    """Mean of teacher-minus-baseline over queries and its 5th/95th percentiles over query resamples.

    `per_query` holds one value per query for both models, `weights` the share each query gets (its
    pair count for accuracy, 1 for nDCG), so a resample reweights exactly as the pooled metric does.
    """
    diff = per_query["teacher"] - per_query["baseline"]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(reps, diff.size))
    w = weights[idx]
    stats = (diff[idx] * w).sum(axis=1) / w.sum(axis=1)
    lo, hi = np.percentile(stats, [5, 95])
    return {
        "mean": float((diff * weights).sum() / weights.sum()),
        "p05": float(lo),
        "p95": float(hi),
        "share_above_0": float((stats > 0).mean()),
    }


def over_max_length(d: Path, heldout: Any) -> int:
    """Held-out pairs whose text, as the fold's teacher assembles and tokenizes it, is longer than its
    max_length: the ones it reads cut short (the baselines read every word)."""
    from pinrel.assembly import AssemblySpec
    from pinrel.teacher.data import pair_texts
    from pinrel.teacher.model import load_tokenizer

    m = cq.read_json(d / "teacher" / "pinrel.json")
    tokenizer = load_tokenizer(str(d / "teacher" / "model"), decoder=bool(m["decoder"]))
    texts = pair_texts(heldout, AssemblySpec.from_dict(m["assembly_spec"]))
    return sum(len(ids) > m["max_length"] for ids in tokenizer(texts)["input_ids"])


def per_query_accuracy(groups: np.ndarray, counts: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Accuracy per query; `groups` are query indices 0..Q-1 and `counts` their pair counts."""
    return np.bincount(groups, weights=correct.astype(np.float64), minlength=counts.size) / counts


def pooled(dirs: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    from pinrel import metrics
    from pinrel.baselines import query_keys
    from pinrel.records import read_records

    models_ = models(args)
    labels, groups, probs = [], [], {m: [] for m in models_}
    singles: list[list[np.ndarray]] = [[] for _ in cq.teacher_seeds(args)]
    per_fold: list[dict[str, Any]] = []
    for d in dirs:
        heldout = read_records(d / "heldout.parquet", grades=GRADES)
        y = np.asarray(heldout.column("label").to_pylist(), dtype=np.int64)
        q = query_keys(heldout)
        fold: dict[str, Any] = {
            "pairs": int(y.size),
            "queries": len(set(q.tolist())),
            "over_max_length": over_max_length(d, heldout),
        }
        mean, per_seed = teacher_probs(d, args)
        for i, p in enumerate(per_seed):
            singles[i].append(p)
        for m in models_:
            p = mean if m == "teacher" else load_probs(d / f"{m}_probs.npy")
            probs[m].append(p)
            fold[m] = metrics.compute_all(p, y, q)
        per_fold.append(fold)
        labels.append(y)
        groups.append(q)
    y, q = np.concatenate(labels), np.concatenate(groups)
    p_all = {m: np.concatenate(probs[m]) for m in models_}
    overall = {m: metrics.compute_all(p_all[m], y, q) for m in models_}
    seeds = cq.teacher_seeds(args)
    single_teachers = {
        str(s): metrics.compute_all(np.concatenate(ps), y, q) for s, ps in zip(seeds, singles, strict=True)
    }

    _, group, counts = np.unique(q, return_inverse=True, return_counts=True)
    group, counts = group.reshape(-1), counts.astype(np.float64)
    ndcg: dict[str, np.ndarray] = {}
    acc: dict[str, np.ndarray] = {}
    for m in models_:
        _, ndcg[m] = metrics.ndcg_per_query(q, y, metrics.expected_grade(p_all[m]), 10)
        acc[m] = per_query_accuracy(group, counts, p_all[m].argmax(axis=1) + 1 == y)
    rankable = ~np.isnan(ndcg["teacher"])
    paired = {}
    for b in baselines(args):
        paired[b] = {
            "accuracy": paired_bootstrap(
                {"teacher": acc["teacher"], "baseline": acc[b]}, counts, args.bootstrap, args.seed
            ),
            "ndcg@10": paired_bootstrap(
                {"teacher": ndcg["teacher"][rankable], "baseline": ndcg[b][rankable]},
                np.ones(int(rankable.sum())),
                args.bootstrap,
                args.seed,
            ),
            "folds_won": {
                k: sum(f["teacher"][k] > f[b][k] for f in per_fold) for k in ("accuracy", "ndcg@10")
            },
        }
    return {
        "pairs": int(y.size),
        "queries": len(set(q.tolist())),
        "rankable_queries": int(rankable.sum()),
        "over_max_length": sum(f["over_max_length"] for f in per_fold),
        "overall": overall,
        "single_teachers": single_teachers,
        "per_fold": per_fold,
        "paired": paired,
    }


def report(args: argparse.Namespace, out: Path, res: dict[str, Any], manifests: list[dict]) -> str:
    from pinrel.io import atomic_write_text

    ov = res["overall"]
    seeds = cq.teacher_seeds(args)
    teacher = "teacher" if len(seeds) == 1 else f"teacher (mean of {len(seeds)} seeds)"
    models_ = models(args)
    names = {"teacher": teacher, **{b: display_name(b) for b in baselines(args)}}
    bars = {
        f"teacher beats BM25 and hashed LR on {k} (all folds pooled)": all(
            ov["teacher"][k] > ov[b][k] for b in baselines(args)
        )
        for k in ("accuracy", "ndcg@10")
    }
    secs = [h["seconds"] for m in manifests for h in m.get("history", [])]
    lines = [
        "# pinrel on CrowdFlower: teacher vs baselines over query-disjoint folds",
        "",
        f"CrowdFlower (K=4), {args.folds} query-disjoint folds (seed {args.seed}): every query is held out "
        f"once; pooled over the folds: {res['pairs']} pairs, {res['queries']} queries "
        f"({res['rankable_queries']} with two or more grades, the ones nDCG counts). Teacher per fold: "
        f"{args.model or 'all-MiniLM-L6-v2'}, full fine-tuning on the fold's whole train part, "
        + (
            f"trained {len(seeds)} times with seeds {', '.join(map(str, seeds))} (initialisation of the "
            "classification head, batch order) and their probabilities averaged, "
            if len(seeds) > 1
            else ""
        )
        + f"{args.teacher_epochs} epoch(s), max_length {args.max_length} (longer than that: "
        f"{res['over_max_length'] / res['pairs']:.1%} of the pairs, which it reads cut short), batch 16, "
        f"lr {args.teacher_lr}, "
        + (
            f"loss: cross-entropy + {args.teacher_pairwise_weight} x RankNet over pairs of one query "
            "(one query per batch), "
            if args.teacher_pairwise_weight > 0
            else ""
        )
        + "on "
        + ("Ray Train (1 worker x 1 GPU, bf16 autocast" if args.gpu else "Ray Train (1 worker x 2 CPUs")
        + (f"; {np.median(secs):.0f} s/epoch here" if secs else "")
        + "). Baselines fitted on the same train part"
        + (
            "; the teacher's loss and the baselines' fits weigh each train pair by 1 / (1 + "
            "relevance_variance), and the '(unweighted)' baselines are fitted without the weights."
            if args.variance_weights
            else "."
        ),
        "",
        "| metric (pooled) | " + " | ".join(names.values()) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for k in HEADLINE:
        best = max(models_, key=lambda m: ov[m][k])
        cells = [f"**{ov[m][k]:.4f}**" if m == best else f"{ov[m][k]:.4f}" for m in models_]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "Teacher minus baseline, paired bootstrap over queries (mean [5th, 95th percentile]):", ""]
    lines += ["| baseline | accuracy | nDCG@10 | folds won (acc / nDCG@10) |", "|---|---|---|---|"]
    for b in baselines(args):
        pr = res["paired"][b]
        cell = {
            k: f"{pr[k]['mean']:+.4f} [{pr[k]['p05']:+.4f}, {pr[k]['p95']:+.4f}]"
            for k in ("accuracy", "ndcg@10")
        }
        won = pr["folds_won"]
        lines.append(
            f"| {names[b]} | {cell['accuracy']} | {cell['ndcg@10']} | "
            f"{won['accuracy']}/{args.folds} / {won['ndcg@10']}/{args.folds} |"
        )
    if len(seeds) > 1:
        lines += ["", "Each seed's teacher alone (pooled), against the mean of their probabilities:", ""]
        lines += ["| teacher | accuracy | macro_f1 | ndcg@10 | spearman |", "|---|---:|---:|---:|---:|"]
        rows = [(f"seed {s}", res["single_teachers"][str(s)]) for s in seeds] + [(teacher, ov["teacher"])]
        for name, r in rows:
            cells = " | ".join(f"{r[k]:.4f}" for k in ("accuracy", "macro_f1", "ndcg@10", "spearman"))
            lines.append(f"| {name} | {cells} |")
    lines += ["", "Per fold (accuracy / nDCG@10):", ""]
    lines += ["| fold | queries | " + " | ".join(names.values()) + " |", "|---|---:|" + "---:|" * len(names)]
    for i, f in enumerate(res["per_fold"]):
        cells = [f"{f[m]['accuracy']:.3f} / {f[m]['ndcg@10']:.3f}" for m in models_]
        lines.append(f"| {i} | {f['queries']} | " + " | ".join(cells) + " |")
    lines += ["", "Bars:"] + [f"- [{'x' if ok else ' '}] {name}" for name, ok in bars.items()]
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "results.md", md)
    result = {
        **res,
        "bars": bars,
        "args": vars(args),
        "teacher_history": [m.get("history") for m in manifests],
    }
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(cq.REPO / "bench-out" / "crowdflower-folds"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-epochs", type=int, default=2)
    ap.add_argument("--teacher-lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument(
        "--teacher-seeds",
        type=int,
        default=1,
        help="teachers per fold, seeds --seed, --seed+1, ...; the teacher's probabilities are their mean",
    )
    ap.add_argument("--bootstrap", type=int, default=10000, help="query resamples for the paired bootstrap")
    ap.add_argument("--model", default=None, help="teacher base model (default: all-MiniLM-L6-v2)")
    cq.add_pairwise_flag(ap)
    cq.add_pooling_flag(ap)
    cq.add_weights_flag(ap)
    cq.add_gpu_flag(ap)
    args = ap.parse_args(argv)
    cq.check_gpu_flag(ap, args)
    if not 2 <= args.folds <= 20:
        ap.error(f"--folds: expected 2..20, got {args.folds}")
    if not 1 <= args.teacher_seeds <= 10:
        ap.error(f"--teacher-seeds: expected 1..10, got {args.teacher_seeds}")
    if args.bootstrap < 100:
        ap.error(f"--bootstrap: expected at least 100 resamples, got {args.bootstrap}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cq.set_threads()
    dirs = write_folds(args, out)
    try:
        for f, d in enumerate(dirs):
            if fold_done(args, d):
                log(f"=== fold {f + 1}/{args.folds}: complete, skipped")
                continue
            log(f"=== fold {f + 1}/{args.folds}: running")
            run_fold(args, d)
            log(f"--- fold {f + 1}/{args.folds}: done")
    finally:
        cq.stop_ray()
    manifests = [
        cq.read_json(cq.teacher_dir(d, args, s) / "pinrel.json") for d in dirs for s in cq.teacher_seeds(args)
    ]
    md = report(args, out, pooled(dirs, args), manifests)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
