"""The driver: plan the data and the dev set, check an earlier run in the output directory, run the
`TorchTrainer` and export the chosen epoch as a student directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from safetensors.torch import load_file

from .. import checkpoints
from ..assembly import AssemblySpec
from ..features import FeatureHasher
from ..io import as_stored_json, atomic_write_text, hash_file_ends, read_json_object
from ..killhook import kill_at_epoch
from ..predictor import RUN_DIR, check_model_out
from ..raycluster import ray_session
from ..student import KIND as STUDENT_KIND
from ..student import MANIFEST, WEIGHTS, StudentConfig, StudentModel, save_student
from .config import TRAINING_KEYS, DistillConfig, as_config
from .loop import CHECKPOINT_MODEL, CHECKPOINT_OPTIMIZER, train_loop
from .shards import LabelSet, count_dev, keep_split, scan_dev_records, scan_labels

RUN_NAME = "distill"  # fixed, so a second run with the same out_dir finds the first one's checkpoints
STORAGE = RUN_DIR
RUN_FILE = "run.json"


def _fingerprint(student: StudentConfig, hasher: FeatureHasher, spec: AssemblySpec) -> str:
    blob = json.dumps([student.to_dict(), hasher.get_params(), spec.to_dict()], sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _assembly_spec(cfg: DistillConfig, manifest: dict[str, Any]) -> AssemblySpec:
    # The teacher saw text assembled with its spec; the student should see the same text.
    if cfg.assembly is not None:
        return AssemblySpec.from_dict(dict(cfg.assembly))
    spec = manifest.get("assembly_spec")
    if isinstance(spec, dict):
        try:
            return AssemblySpec.from_dict(spec)
        except ValueError as e:
            raise ValueError(f"label manifest: bad assembly_spec ({e})") from None
    return AssemblySpec()


def _cpus_per_worker(cfg: DistillConfig) -> float:
    import ray

    total = float(ray.cluster_resources().get("CPU", 0.0))
    if cfg.cpus_per_worker is not None:
        cpw = float(cfg.cpus_per_worker)
    else:
        # Ray Data's read tasks need a CPU beside the workers, or the first batch never arrives.
        spare = total - 1.0
        if spare <= 0:
            raise ValueError(f"the Ray cluster has {total:g} CPU(s); distillation needs at least 2")
        cpw = min(1.0, math.floor(spare / cfg.workers * 100) / 100)
        if cpw <= 0:
            raise ValueError(f"{cfg.workers} workers do not fit on a Ray cluster with {total:g} CPUs")
    if cpw * cfg.workers > total:
        raise ValueError(
            f"{cfg.workers} workers x {cpw:g} CPUs need {cpw * cfg.workers:g} CPUs; the cluster has {total:g}"
        )
    if cfg.gpu and float(ray.cluster_resources().get("GPU", 0.0)) < cfg.workers:
        raise ValueError(
            f"gpu=true needs {cfg.workers} GPUs; the Ray cluster has {ray.cluster_resources().get('GPU', 0)}"
        )
    return cpw


@dataclass(frozen=True)
class _Plan:
    labels: LabelSet
    dev_set: LabelSet | None  # a separate dir of label shards
    dev_table: pa.Table | None  # a records file (human labels only)
    dev_fraction: float | None  # held-out queries of the training shards
    train_rows: int
    dev_rows: int
    dev_labeled: int  # dev rows with a human grade


def _plan(labels_dir: Path, cfg: DistillConfig) -> _Plan:
    labels = scan_labels(labels_dir, cfg.embedding_column)
    dev = cfg.dev
    if dev is None:
        return _Plan(labels, None, None, None, labels.rows, 0, 0)
    if not isinstance(dev, str):
        n_dev, n_labeled = count_dev(labels.files, float(dev))
        if n_dev == 0 or n_dev == labels.rows:
            raise ValueError(
                f"dev={dev}: holding out that fraction of queries leaves {n_dev} of {labels.rows} rows"
            )
        return _Plan(labels, None, None, float(dev), labels.rows - n_dev, n_dev, n_labeled)
    path = Path(dev)
    if path.is_dir():
        dev_set = scan_labels(path, cfg.embedding_column)
        if dev_set.grades != labels.grades:
            raise ValueError(
                f"dev shards have K={dev_set.grades} but the training shards have K={labels.grades}"
            )
        return _Plan(labels, dev_set, None, None, labels.rows, dev_set.rows, dev_set.labeled)
    if not path.is_file():
        raise FileNotFoundError(f"dev: {dev!r} is neither a fraction, a label-shard dir nor a records file")
    table = scan_dev_records(path, labels.grades, cfg.embedding_column)
    labeled = table.num_rows - table.column("label").null_count if "label" in table.column_names else 0
    return _Plan(labels, None, table, None, labels.rows, table.num_rows, labeled)


def _datasets(plan: _Plan) -> dict[str, Any]:
    import ray.data

    cols = plan.labels.columns
    train = ray.data.read_parquet(plan.labels.files).select_columns(cols)
    out: dict[str, Any] = {"train": train}
    if plan.dev_fraction is not None:
        keep_train = functools.partial(keep_split, fraction=plan.dev_fraction, dev=False)
        keep_dev = functools.partial(keep_split, fraction=plan.dev_fraction, dev=True)
        out["train"] = train.map_batches(keep_train, batch_format="pyarrow")
        out["dev"] = (
            ray.data.read_parquet(plan.labels.files)
            .select_columns(cols)
            .map_batches(keep_dev, batch_format="pyarrow")
        )
    elif plan.dev_set is not None:
        out["dev"] = ray.data.read_parquet(plan.dev_set.files).select_columns(plan.dev_set.columns)
    elif plan.dev_table is not None:
        out["dev"] = ray.data.from_arrow(plan.dev_table)
    return out


def _data_fingerprint(plan: _Plan, dev: Any) -> str:
    """What the run trains and selects on: the label shards and the dev set (a fraction of the
    training queries, other shards or a records file), hashed by file name, size and ends."""
    h = hashlib.sha256()
    for f in plan.labels.files:
        hash_file_ends(h, Path(f))
    h.update(b"\0dev\0")
    if plan.dev_fraction is not None:
        h.update(repr(plan.dev_fraction).encode())
    elif plan.dev_set is not None:
        for f in plan.dev_set.files:
            hash_file_ends(h, Path(f))
    elif plan.dev_table is not None:
        hash_file_ends(h, Path(dev))
    return h.hexdigest()[:16]


def _check_run_dir(storage: Path, run: dict[str, Any], restart: bool) -> None:
    """A second run in the same out_dir resumes the first, unless the model settings, the data or
    the training settings changed: resuming then would train one student on two datasets, or two
    learning rates."""
    if restart and storage.exists():
        shutil.rmtree(storage)
    run_file = storage / RUN_FILE
    if run_file.is_file():
        old = read_json_object(run_file)
        if old is None:
            raise ValueError(
                f"{run_file}: unreadable or not a JSON object; pass restart=True (--restart) to start over"
            )
        if old.get("fingerprint") != run["fingerprint"]:
            raise ValueError(
                f"{storage.parent} holds a run with other model settings (hasher, sizes or assembly); "
                "pass restart=True (--restart) to start over, or use another out dir"
            )
        # Runs from before pinrel recorded their data or training settings resume as before.
        if old.get("data", run["data"]) != run["data"]:
            raise ValueError(
                f"{storage.parent} holds a run on other data (the label shards or the dev set changed); "
                "pass restart=True (--restart) to start over, or use another out dir"
            )
        training = old.get("training", run["training"])
        changed = sorted(k for k, v in run["training"].items() if training.get(k, v) != v)
        if changed:
            raise ValueError(
                f"{storage.parent} holds a run with other training settings ({', '.join(changed)} "
                "changed); pass restart=True (--restart) to start over, or use another out dir"
            )
    _check_checkpoint(storage)
    storage.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_file, json.dumps(run))


def _student_without_run(out: Path, storage: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a finished student in `out` whose Ray run is gone (deleted to save space).

    The same command returns it as it is; anything else is refused, since training would replace
    a student that may be serving. None when there is a run to resume, or no student."""
    if (storage / RUN_FILE).is_file() or not (out / MANIFEST).is_file():
        return None
    manifest = read_json_object(out / MANIFEST) or {}
    if manifest.get("run") == run and (out / WEIGHTS).is_file():
        return manifest
    what = "was distilled from other labels or settings" if "run" in manifest else "records no run to compare"
    raise ValueError(
        f"out dir: {str(out)!r} holds a student that {what}, and no run to resume; pass restart=True "
        "(--restart) to replace it, or use another out dir"
    )


def _check_checkpoint(storage: Path) -> None:
    """Read through the checkpoint a rerun resumes from: a damaged one is refused here, not by every
    worker in turn after Ray has started."""
    try:
        result = checkpoints.run_result(storage / RUN_NAME)
        if result is not None and result.checkpoint is not None:
            checkpoints.readable_state(result.checkpoint, [CHECKPOINT_MODEL, CHECKPOINT_OPTIMIZER])
    except checkpoints.CheckpointError as e:
        raise ValueError(f"{storage.parent}: {e}; pass restart=True (--restart) to start over") from e


def _select_metric(cfg: DistillConfig, plan: _Plan) -> str | None:
    """The dev metric keep_best minimises, or None to keep the last epoch; refuses one the dev set
    cannot measure, before any training.

    Label shards carry the teacher's probabilities, so the dev loss (KL to the teacher, the
    training objective) is available; a records file has human grades only, hence their
    cross-entropy. `keep_best_by: dev_ce` picks the epoch by the human grades on label shards too.
    """
    if not cfg.keep_best or plan.dev_rows == 0:
        return None
    has_teacher = plan.dev_table is None
    metric = cfg.keep_best_by or ("dev_loss" if has_teacher else "dev_ce")
    what = f"keep_best_by={metric}" if cfg.keep_best_by else f"keep_best (by {metric})"
    if metric == "dev_loss" and not has_teacher:
        raise ValueError(
            f"{what}: a records-file dev set has human grades only, no teacher probabilities; use dev_ce"
        )
    if metric == "dev_ce" and plan.dev_labeled == 0:
        raise ValueError(
            f"{what}: needs human grades in the dev set, and none of its {plan.dev_rows} rows has one"
        )
    return metric


def _checkpoint_config(cfg: DistillConfig, plan: _Plan) -> Any:
    from ray.train import CheckpointConfig

    metric = _select_metric(cfg, plan)
    if metric is None:
        return CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep)
    # Ray keeps the best `num_to_keep` by the metric and, for restarts, always the latest as well.
    return CheckpointConfig(
        num_to_keep=cfg.checkpoints_to_keep,
        checkpoint_score_attribute=metric,
        checkpoint_score_order="min",
    )


def _trainer(cfg: DistillConfig, loop_cfg: dict[str, Any], plan: _Plan, storage: Path) -> Any:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    scaling = ScalingConfig(
        num_workers=cfg.workers, use_gpu=cfg.gpu, resources_per_worker={"CPU": _cpus_per_worker(cfg)}
    )
    run = RunConfig(
        name=RUN_NAME,
        storage_path=str(storage),
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=_checkpoint_config(cfg, plan),
    )
    return TorchTrainer(
        train_loop,
        train_loop_config=loop_cfg,
        scaling_config=scaling,
        run_config=run,
        datasets=_datasets(plan),
        dataset_config=_data_config(),
    )


def _data_config() -> Any:
    """Every worker sees the whole dev set; the train split is the same from run to run.

    Without preserve_order, Ray Data hands each block to whichever split asks first, so the two
    workers' shards (and the student) changed between runs on the same labels. In order, Ray's
    splitter gives each block to the split with the fewest rows so far and ignores locality.
    """
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return DataConfig(datasets_to_split=["train"], execution_options=options)


def _finish(
    result: Any,
    out: Path,
    student: StudentConfig,
    hasher: FeatureHasher,
    spec: AssemblySpec,
    teacher: dict[str, Any],
    run: dict[str, Any],
) -> dict[str, Any]:
    select_metric = run["select"]
    if result.error is not None:
        raise RuntimeError(f"distillation failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError("distillation ended without a checkpoint")
    chosen = result.checkpoint
    if select_metric is not None:
        chosen = result.get_best_checkpoint(select_metric, "min") or result.checkpoint
    with result.checkpoint.as_directory() as d:
        # The latest checkpoint holds the whole run's history; the chosen one only its prefix.
        history = list(checkpoints.read_state(Path(d))["history"])
    with chosen.as_directory() as d:
        state = checkpoints.read_state(Path(d))
        model = StudentModel(student)
        model.load_state_dict(load_file(str(Path(d) / CHECKPOINT_MODEL)), strict=True)
    metrics = dict(state["history"][-1]) if state["history"] else {}
    metrics["selected_epoch"] = int(state["epoch"])
    # One headline number for summaries: agreement with the teacher's grade, on dev when there is one.
    agreement = metrics.get("dev_agreement")
    metrics["teacher_agreement"] = agreement if agreement is not None else metrics.get("train_agreement")
    save_student(out, model, hasher, spec, metrics=metrics, teacher=teacher, history=history, run=run)
    return {"model_dir": str(out), "epoch": int(state["epoch"]), "metrics": metrics, "history": history}


def distill(
    labels_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: DistillConfig | Mapping[str, Any] | None = None,
    *,
    restart: bool = False,
) -> dict[str, Any]:
    """Distill a student from label shards into `out_dir`; returns a summary (metrics, history).

    Ray state lives in `out_dir/_ray`: running again with the same `out_dir` resumes from the last
    checkpoint (raise `epochs` to train further); `restart=True` starts over.
    """
    cfg = as_config(config)
    if not isinstance(restart, bool):
        raise TypeError(f"restart: expected bool, got {type(restart).__name__}")
    out = Path(out_dir)
    check_model_out(out, STUDENT_KIND, STORAGE, "out dir")
    plan = _plan(Path(labels_dir), cfg)
    if plan.train_rows < cfg.workers:
        raise ValueError(f"{plan.train_rows} training rows cannot feed {cfg.workers} workers")
    hasher = FeatureHasher.from_params(dict(cfg.hasher))
    spec = _assembly_spec(cfg, plan.labels.manifest)
    student = StudentConfig(
        grades=plan.labels.grades,
        n_features=hasher.n_features,
        extra_column=cfg.embedding_column,
        extra_dim=plan.labels.extra_dim,
        **dict(cfg.student),
    )
    fp = _fingerprint(student, hasher, spec)
    storage = out.resolve() / STORAGE
    run: dict[str, Any] = {
        "fingerprint": fp,
        "data": _data_fingerprint(plan, cfg.dev),
        "training": {k: getattr(cfg, k) for k in TRAINING_KEYS},
    }
    # What the saved student is, for a rerun after its Ray run is deleted; epochs may grow in a run.
    finished = as_stored_json({**run, "epochs": cfg.epochs, "select": _select_metric(cfg, plan)})
    kept = None if restart else _student_without_run(out, storage, finished)
    if kept is not None:
        metrics = kept.get("metrics") or {}
        summary = {
            "model_dir": str(out),
            "epoch": metrics.get("selected_epoch"),
            "metrics": metrics,
            "history": kept.get("history") or [],
        }
    else:
        _check_run_dir(storage, run, restart)
        loop_cfg = {
            "student": student.to_dict(),
            "hasher": hasher.get_params(),
            "assembly_spec": spec.to_dict(),
            "fingerprint": fp,
            "has_dev": plan.dev_rows > 0,
            "kill_at_epoch": kill_at_epoch(),
            "kill_marker": str(storage / "killed.marker"),
            "epochs": cfg.epochs,
            **run["training"],
        }
        teacher = {
            **plan.labels.manifest,
            "labels_dir": str(Path(labels_dir).resolve()),
            "rows": plan.labels.rows,
        }
        with ray_session():
            result = _trainer(cfg, loop_cfg, plan, storage).fit()
            summary = _finish(result, out, student, hasher, spec, teacher, finished)
    summary.update(
        train_rows=plan.train_rows,
        dev_rows=plan.dev_rows,
        labeled_rows=plan.labels.labeled,
        grades=plan.labels.grades,
    )
    return summary
