"""The driver: `train_teacher` checks every input before Ray starts, trains or resumes the run under
`TorchTrainer`, and exports the model directory with its manifest."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .. import checkpoints
from ..assembly import AssemblySpec
from ..io import as_stored_json, make_shareable
from ..killhook import kill_at_epoch
from ..predictor import ModelDirError, check_model_out, read_manifest, write_manifest
from ..raycluster import ray_session
from .config import (
    ADAPTER_DIR,
    KIND,
    LATER_KEYS,
    MODEL_DIR,
    RAY_DIR,
    RUN_NAME,
    ModelInfo,
    TeacherConfig,
    TeacherError,
    fingerprint,
    inspect_model,
    legacy_pooling,
    lora_settings,
    manifest_pooling,
)
from .data import label_indices, load_records, pair_texts, query_groups, train_weights
from .loop import train_loop_per_worker
from .model import (
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_RNG,
    CHECKPOINT_WEIGHTS,
    build_model,
    load_tokenizer,
    load_trainable,
    read_checkpoint,
)


def _run_result(run_dir: Path) -> Any:
    """Ray's record of this run, or None when there is no run yet."""
    try:
        return checkpoints.run_result(run_dir)
    except checkpoints.CheckpointError as e:
        raise TeacherError(f"{run_dir}: {e}; pass resume=False (CLI: --fresh) to start over") from e


def _readable_checkpoint(checkpoint: Any, run_dir: Path) -> dict[str, Any]:
    """The state of the checkpoint a rerun would resume from, after reading every file in it."""
    try:
        return checkpoints.readable_state(
            checkpoint, [CHECKPOINT_WEIGHTS], archives=[CHECKPOINT_OPTIMIZER], optional=[CHECKPOINT_RNG]
        )
    except checkpoints.CheckpointError as e:
        raise TeacherError(f"{run_dir}: {e}; pass resume=False (CLI: --fresh) to start over") from e


def _check_resumable(state: dict[str, Any], fp: dict[str, Any], epochs: int, run_dir: Path) -> None:
    old = dict(state.get("fingerprint", {}))
    if "pooling" not in old and "pooling" in fp:  # written before pinrel chose the pooling
        old["pooling"] = legacy_pooling(fp["pooling"] == "last")
    keys = (set(old) | set(fp)) - {k for k in LATER_KEYS if k not in old}
    changed = sorted(k for k in keys if old.get(k) != fp.get(k))
    if changed:
        raise TeacherError(
            f"{run_dir} holds a checkpoint of a different run ({', '.join(changed)} changed); "
            "pass resume=False (CLI: --fresh) to start over, or use another output directory"
        )
    if int(state["epoch"]) > epochs:
        raise TeacherError(
            f"{run_dir} holds a checkpoint after {state['epoch']} epochs but epochs={epochs}; "
            "pass resume=False (CLI: --fresh) to start over"
        )


SELECT_METRIC = "dev_loss"


def _fit(plan: dict[str, Any], cfg: TeacherConfig, storage: Path, select: bool) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = None if cfg.use_gpu else {"CPU": cfg.cpus_per_worker}
    # Ray keeps the best checkpoint by the metric and, for restarts, always the latest as well.
    keep = (
        CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=SELECT_METRIC, checkpoint_score_order="min"
        )
        if select
        else CheckpointConfig(num_to_keep=1)
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=plan,
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            storage_path=str(storage.resolve()),
            name=RUN_NAME,
            checkpoint_config=keep,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise TeacherError("training finished without a checkpoint")


def _chosen_checkpoint(run_dir: Path, select: bool) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(checkpoint to export, its state, the run's latest state): the lowest dev loss with `select`,
    else the last epoch."""
    result = _run_result(run_dir)
    if result is None or result.checkpoint is None:
        raise TeacherError(f"{run_dir}: the run has no checkpoint")
    latest = checkpoints.checkpoint_state(result.checkpoint)
    best = result.get_best_checkpoint(SELECT_METRIC, "min") if select else None
    if best is None or best.path == result.checkpoint.path:
        return result.checkpoint, latest, latest
    return best, checkpoints.checkpoint_state(best), latest


def _replace_dir(staged: Path, final: Path) -> None:
    """Swap a fully written folder into place; a reader sees the old folder or the new, never a half."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(checkpoint_dir: Path, plan: dict[str, Any], out: Path) -> str:
    """Write out/model (merged, safetensors, with tokenizer) and out/adapter; returns the architecture."""
    import torch

    tokenizer = load_tokenizer(plan["source"], plan["decoder"])
    dtype = torch.bfloat16 if plan["bf16"] else torch.float32
    model = build_model(plan, int(tokenizer.pad_token_id), dtype=dtype)
    weights, _, _ = read_checkpoint(checkpoint_dir)
    load_trainable(model, weights)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        if plan["lora"]:
            model.save_pretrained(staging / ADAPTER_DIR)
            model = model.merge_and_unload()
        model.config.pad_token_id = int(tokenizer.pad_token_id)
        model.save_pretrained(staging / MODEL_DIR)
        tokenizer.save_pretrained(staging / MODEL_DIR)
        make_shareable(staging)  # vLLM and labeling actors may run as other users
        _replace_dir(staging / MODEL_DIR, out / MODEL_DIR)
        if plan["lora"]:
            _replace_dir(staging / ADAPTER_DIR, out / ADAPTER_DIR)
        elif (out / ADAPTER_DIR).exists():
            shutil.rmtree(out / ADAPTER_DIR)  # an adapter from an earlier LoRA run would contradict the model
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return type(model).__name__


def train_teacher(
    train: pa.Table | str | os.PathLike[str],
    dev: pa.Table | str | os.PathLike[str] | None,
    config: TeacherConfig | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    mapping: Mapping[str, str] | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Fine-tune a teacher on graded records and write its model directory; returns the manifest.

    `train`/`dev` are records tables or files (Parquet/CSV/JSONL; `mapping` renames their columns). With
    `resume`, an unfinished run in `out_dir` continues from its last epoch; otherwise it starts over.
    """
    cfg = config if isinstance(config, TeacherConfig) else TeacherConfig.from_dict(config)
    out = Path(out_dir)
    try:
        check_model_out(out, KIND, RAY_DIR, "out_dir")
    except ValueError as e:
        raise TeacherError(str(e)) from None
    if cfg.use_gpu:
        _require_gpu(cfg)
    info = inspect_model(cfg)
    spec = cfg.assembly_spec()
    train_table = load_records(train, "train", cfg.grades, mapping)
    dev_table = load_records(dev, "dev", cfg.grades, mapping) if dev is not None else None
    fp = fingerprint(cfg, info, train_table, dev_table)

    run_dir = out / RAY_DIR / RUN_NAME
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    previous = _run_result(run_dir)
    if resume and previous is None:
        kept = _export_without_run(out, cfg, fp)
        if kept is not None:
            return kept
    prev_state = None
    if previous is not None and previous.checkpoint is not None:
        prev_state = _readable_checkpoint(previous.checkpoint, run_dir)
    if prev_state is not None:
        _check_resumable(prev_state, fp, cfg.epochs, run_dir)

    plan = _plan(cfg, info, fp)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    select = cfg.keep_best and dev_table is not None and dev_table.num_rows > 0
    # Already trained this far: only the export may be missing.
    trained = prev_state is not None and int(prev_state["epoch"]) >= cfg.epochs
    if not trained:
        _run_training(plan, cfg, train_table, dev_table, spec, out, select)
    checkpoint, chosen, latest = _chosen_checkpoint(run_dir, select)
    manifest = _manifest(cfg, info, spec, chosen, latest, prev_state)
    manifest.update(
        train_rows=train_table.num_rows,
        weighted_rows=train_table.num_rows - train_table.column("weight").null_count,
        dev_rows=dev_table.num_rows if dev_table is not None else 0,
        train_sha256=fp["train_data"]["sha256"],
        dev_sha256=fp["dev_data"]["sha256"] if fp["dev_data"] else None,
    )
    if trained:
        kept = _current_export(out, manifest)
        if kept is not None:
            return kept
    with checkpoint.as_directory() as d:
        manifest["architecture"] = export(Path(d), plan, out)
    manifest["seconds"] = time.perf_counter() - started
    write_manifest(out, manifest)
    return manifest


# What a rerun changes in the manifest without changing the model.
_BOOKKEEPING = ("architecture", "seconds", "resumed_from_epoch")


# Settings of how a run is carried out, not of what it trains. A manifest written before one of them
# existed lacks it, and must still count as current, or an upgrade would rewrite every export.
_RUNTIME_SETTINGS = ("progress", "max_failures")
_PLACEMENT = ("num_workers", "cpus_per_worker", "use_gpu", "gradient_checkpointing")


def _current_export(out: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest already in `out` when it describes this very export and the model files are there.

    Exporting again would rewrite the same weights (gigabytes for an LLM) and a new pinrel.json, and
    labels made from the teacher would then count as another teacher's and be refused.
    """
    try:
        existing = read_manifest(out)
    except ModelDirError:
        return None
    if not _export_complete(out, bool(manifest["lora"])):
        return None

    def model_part(m: dict[str, Any]) -> dict[str, Any]:
        part = {k: v for k, v in m.items() if k not in _BOOKKEEPING}
        part["pooling"] = manifest_pooling(m)
        part["config"] = _model_settings(m.get("config", {}))
        return part

    return existing if model_part(as_stored_json(manifest)) == model_part(existing) else None


def _export_complete(out: Path, lora: bool) -> bool:
    model = out / MODEL_DIR
    if not (model / "config.json").is_file() or not any(model.glob("*.safetensors")):
        return False
    return not lora or (out / ADAPTER_DIR).is_dir()


def _model_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a stored config that decide the model; one newer than the manifest had its
    default when that teacher was trained."""
    defaults = as_stored_json(TeacherConfig(model=str(config.get("model") or "-")).to_dict())
    return {k: v for k, v in {**defaults, **config}.items() if k not in _RUNTIME_SETTINGS}


def _export_without_run(out: Path, cfg: TeacherConfig, fp: dict[str, Any]) -> dict[str, Any] | None:
    """A finished export in `out` whose Ray run is gone (deleted to save space), so nothing can resume.

    The same command returns the export as it is, rather than train it again (hours, for an LLM).
    Other data or settings are refused: training would replace a teacher that labels may come from."""
    try:
        existing = read_manifest(out)
    except ModelDirError:
        return None
    if existing.get("kind") != KIND or not _export_complete(out, bool(existing.get("lora"))):
        return None
    new = _model_settings(as_stored_json(cfg.to_dict()))
    old = _model_settings({"model": cfg.model, **(existing.get("config") or {})})
    # Where the run would go does not change what it trains; the manifest keeps where it went.
    keys = (set(old) | set(new)) - set(_PLACEMENT)
    changed = sorted(k for k in keys if old.get(k) != new.get(k))
    # The same settings can pool otherwise now (pooling: null is decided by the checkpoint).
    if manifest_pooling(existing) != fp["pooling"] and "pooling" not in changed:
        changed.append("pooling")
    data = {"train_sha256": fp["train_data"], "dev_sha256": fp["dev_data"]}
    for key, identity in data.items():
        # Manifests from before pinrel recorded its data lack the key: only the settings can be compared.
        if key in existing and existing[key] != (identity["sha256"] if identity else None):
            changed.append(key.removesuffix("_sha256") + " data")
    if changed:
        raise TeacherError(
            f"out_dir: {str(out)!r} holds a teacher trained with other data or settings "
            f"({', '.join(changed)} changed) and no checkpoint to resume; pass resume=False "
            "(CLI: --fresh) to replace it, or use another output directory"
        )
    return existing


def _manifest(
    cfg: TeacherConfig,
    info: ModelInfo,
    spec: AssemblySpec,
    chosen: dict[str, Any],
    latest: dict[str, Any],
    prev_state: dict[str, Any] | None,
) -> dict[str, Any]:
    """`chosen` is the state of the exported checkpoint; `latest` (the last epoch's) holds the whole run.
    The export adds the architecture, and the run its seconds."""
    import pinrel

    selected = chosen["history"][-1]
    return {
        "kind": KIND,
        "version": pinrel.__version__,
        "grades": cfg.grades,
        "base_model": cfg.model,
        "decoder": info.decoder,
        "pooling": info.pooling,
        "lora": lora_settings(cfg, info),
        "max_length": cfg.max_length,
        "assembly_spec": spec.to_dict(),
        # The exported epoch's dev metrics, unprefixed (loss, accuracy, mae); `history` keeps every epoch.
        "metrics": {k.removeprefix("dev_"): v for k, v in selected.items() if k.startswith("dev_")},
        "history": latest["history"],
        "epochs": int(latest["epoch"]),
        "selected_epoch": int(chosen["epoch"]),
        "resumed_from_epoch": int(prev_state["epoch"]) if prev_state is not None else None,
        "lr": info.lr,
        "config": cfg.to_dict(),
    }


def _require_gpu(cfg: TeacherConfig) -> None:
    import torch

    if not torch.cuda.is_available():
        what = "load_in_4bit" if cfg.load_in_4bit else "use_gpu"
        raise TeacherError(f"{what}: no CUDA GPU is visible on this machine")


def _plan(cfg: TeacherConfig, info: ModelInfo, fp: dict[str, Any]) -> dict[str, Any]:
    """What the workers need, as plain data (it travels through Ray's object store)."""
    return {
        **cfg.to_dict(),
        "source": info.source,
        "decoder": info.decoder,
        "pooling": info.pooling,
        "lora": info.lora,
        "lr": info.lr,
        "lora_settings": lora_settings(cfg, info),
        "fingerprint": fp,
    }


def _run_training(
    plan: dict[str, Any],
    cfg: TeacherConfig,
    train: pa.Table,
    dev: pa.Table | None,
    spec: AssemblySpec,
    out: Path,
    select: bool,
) -> None:
    import ray

    with ray_session(num_cpus=max(cfg.num_workers * cfg.cpus_per_worker, os.cpu_count() or 1)):
        data = {
            "train_texts": pair_texts(train, spec),
            "train_labels": label_indices(train),
            "train_groups": query_groups(train),
            "train_weights": train_weights(train),
            "dev_texts": pair_texts(dev, spec) if dev is not None else [],
            "dev_labels": label_indices(dev) if dev is not None else np.zeros(0, dtype=np.int64),
        }
        # One copy in the object store, shared by every worker, instead of one per pickled config.
        storage = out / RAY_DIR
        hook = {"kill_at_epoch": kill_at_epoch(), "kill_marker": str(storage.resolve() / "killed.marker")}
        _fit({**plan, **hook, "data": ray.put(data)}, cfg, storage, select)
