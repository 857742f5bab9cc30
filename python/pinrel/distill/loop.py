"""What runs on every Ray Train worker: featurize its shard once, train a DDP replica, evaluate the
dev split and checkpoint (safetensors weights, optimizer state as tensors plus JSON) each epoch.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import torch
from safetensors.torch import load_file, save_file

from .. import checkpoints
from ..assembly import AssemblySpec
from ..features import FeatureHasher
from ..io import json_safe
from ..killhook import maybe_kill
from ..student import Features, StudentConfig, StudentModel, featurize
from .loss import distill_loss

_LOG = logging.getLogger(__name__)
CHECKPOINT_MODEL = "model.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.safetensors"
_EVAL_CHUNK = 8192


@dataclass(frozen=True)
class _Data:
    features: Features
    probs: npt.NDArray[np.float32] | None  # [n, K] teacher soft labels (None for a records dev set)
    labels: npt.NDArray[np.int64]  # 0-based human grade, -1 when absent
    groups: npt.NDArray[np.object_]  # query ids for nDCG
    weights: npt.NDArray[np.float32]  # of the human-grade term, mean 1 over the labelled rows

    def __len__(self) -> int:
        return len(self.features)


def _table_data(table: pa.Table, hasher: FeatureHasher, spec: AssemblySpec, cfg: StudentConfig) -> _Data:
    from ..records import query_key

    queries = table.column("query").to_pylist()
    features = featurize(hasher, spec, queries, table, cfg.extra_column, cfg.extra_dim)
    probs = None
    if "probs" in table.column_names:
        col = table.column("probs").combine_chunks()
        probs = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(col), -1)
    if "label" in table.column_names and not pa.types.is_null(table.column("label").type):
        labels = pc.fill_null(table.column("label"), 0).to_numpy(zero_copy_only=False).astype(np.int64) - 1
    else:
        labels = np.full(table.num_rows, -1, dtype=np.int64)
    ids = table.column("query_id").to_pylist() if "query_id" in table.column_names else [None] * len(queries)
    groups = np.array([i if i else query_key(q) for i, q in zip(ids, queries, strict=True)], dtype=object)
    return _Data(features, probs, labels, groups, _grade_weights(table, labels))


def _grade_weights(table: pa.Table, labels: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """The records' `weight` (null = 1) scaled to mean 1 over the labelled rows, as the teacher scales
    its own, so that weights change how the human grades share the term, not the term's size."""
    weights = np.ones(table.num_rows, dtype=np.float32)
    if "weight" not in table.column_names or pa.types.is_null(table.column("weight").type):
        return weights
    raw = pc.fill_null(pc.cast(table.column("weight"), pa.float64()), 1.0).to_numpy(zero_copy_only=False)
    labelled = labels >= 0
    if not labelled.any():
        return weights
    # Weights all 1 have mean exactly 1, so unweighted records still get exactly ones here.
    return (raw / raw[labelled].mean()).astype(np.float32)


def _read_shard(iterator: Any) -> pa.Table:
    batches = list(iterator.iter_batches(batch_size=8192, batch_format="pyarrow"))
    if not batches:
        return pa.table({"query": pa.array([], pa.string())})
    return pa.concat_tables(batches, promote_options="default")


def _optimizer_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as safetensors tensors plus JSON (no pickle): `state.<param>.<name>`."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            key = f"state.{pid}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().to("cpu").contiguous()
            else:
                scalars[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    groups = [
        {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _write_checkpoint(
    d: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, Any]],
    fp: str,
) -> None:
    from ..student import _state_dict

    save_file(_state_dict(model), str(d / CHECKPOINT_MODEL))
    tensors, meta = _optimizer_files(opt)
    save_file(tensors, str(d / CHECKPOINT_OPTIMIZER))
    state = {"epoch": epoch, "history": history, "fingerprint": fp, "optimizer": meta}
    checkpoints.write_state(d, state)


def _all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        reduce_op = torch.distributed.ReduceOp.MIN if op == "min" else torch.distributed.ReduceOp.SUM
        torch.distributed.all_reduce(t, op=reduce_op)
    return [float(x) for x in t.cpu().tolist()]


def _batch(
    data: _Data, rows: npt.NDArray[np.int64], device: torch.device
) -> tuple[dict[str, Any], Any, Any, Any]:
    assert data.probs is not None
    inputs = data.features.take(rows).tensors(device)
    probs = torch.from_numpy(data.probs[rows]).to(device)
    labels = torch.from_numpy(data.labels[rows]).to(device)
    weights = torch.from_numpy(data.weights[rows]).to(device)
    return inputs, probs, labels, weights


def _train_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: _Data,
    steps: int,
    cfg: dict[str, Any],
    rng: np.random.Generator,
    device: torch.device,
) -> dict[str, float]:
    model.train()
    order = rng.permutation(len(data))
    bs = cfg["batch_size"]
    sums = np.zeros(7)  # loss, kl, ce, rows, labelled rows, correct on labelled, agreement with teacher
    for step in range(steps):
        rows = order[step * bs : (step + 1) * bs]
        inputs, probs, labels, weights = _batch(data, rows, device)
        logits = model(**inputs)
        loss, kl, ce = distill_loss(logits, probs, labels, cfg["temperature"], cfg["label_weight"], weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            pred = logits.argmax(dim=1)
            has = labels >= 0
            n = len(rows)
            sums += [
                float(loss) * n,
                float(kl) * n,
                float(ce) * int(has.sum()),
                n,
                int(has.sum()),
                int((pred == labels)[has].sum()),
                int((pred == probs.argmax(dim=1)).sum()),
            ]
    loss_s, kl_s, ce_s, n_all, n_lab, correct, agree = _all_reduce(sums.tolist(), device)
    return {
        "loss": loss_s / max(n_all, 1),
        "kl": kl_s / max(n_all, 1),
        "ce": ce_s / n_lab if n_lab else math.nan,
        "train_accuracy": correct / n_lab if n_lab else math.nan,
        "train_agreement": agree / max(n_all, 1),
        "rows_seen": n_all,
    }


def _predict(model: StudentModel, data: _Data, device: torch.device) -> npt.NDArray[np.float32]:
    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(data), _EVAL_CHUNK):
            rows = np.arange(start, min(start + _EVAL_CHUNK, len(data)))
            logits = model(**data.features.take(rows).tensors(device))
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.grades), np.float32)


def _ndcg(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    from ..metrics import ndcg_at_k

    if labels.size == 0:
        return math.nan
    return ndcg_at_k(groups, labels, scores, 10)


def _evaluate(
    model: StudentModel, data: _Data, cfg: dict[str, Any], device: torch.device
) -> dict[str, float]:
    """Dev metrics: agreement with the teacher, accuracy on human labels, nDCG@10 against both."""
    probs = _predict(model, data, device)
    k = probs.shape[1]
    score = probs @ np.arange(1, k + 1, dtype=np.float32)
    pred = probs.argmax(axis=1)
    has = data.labels >= 0
    out = {
        "dev_rows": float(len(data)),
        "dev_accuracy": float((pred[has] == data.labels[has]).mean()) if has.any() else math.nan,
        "dev_ndcg@10": _ndcg(data.groups[has], data.labels[has] + 1, score[has]),
    }
    if has.any():
        # Cross-entropy on the human grades: what keep_best minimises when the dev set has no
        # teacher probabilities (a records file).
        picked = probs[np.flatnonzero(has), data.labels[has]]
        out["dev_ce"] = float(-np.log(np.clip(picked, 1e-12, None)).mean())
    if data.probs is not None:
        teacher = data.probs.argmax(axis=1)
        with torch.no_grad():
            labels = torch.from_numpy(data.labels)
            logits = torch.log(torch.from_numpy(probs).clamp_min(1e-12))
            loss, _, _ = distill_loss(logits, torch.from_numpy(data.probs), labels, cfg["temperature"], 0.0)
        out["dev_loss"] = float(loss)
        out["dev_agreement"] = float((pred == teacher).mean())
        out["dev_ndcg@10_teacher"] = _ndcg(data.groups, teacher + 1, score)
    return out


def _restore(model: StudentModel, fp: str) -> tuple[dict[str, Any], Path] | None:
    """Load the latest checkpoint's weights, if Ray handed one over; returns its state and folder
    (the optimizer is restored from both once the model is wrapped)."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    d = Path(tempfile.mkdtemp(prefix="pinrel-restore-"))
    ckpt.to_directory(str(d))
    state = checkpoints.read_state(d)
    if state.get("fingerprint") != fp:
        shutil.rmtree(d, ignore_errors=True)
        raise RuntimeError("checkpoint was written with other model settings; rerun with restart")
    model.load_state_dict(load_file(str(d / CHECKPOINT_MODEL)), strict=True)
    return state, d


def _steps_per_epoch(n: int, batch_size: int, device: torch.device) -> int:
    # DDP needs every worker to take the same number of steps; the smallest shard sets the pace.
    steps = math.ceil(n / batch_size)
    return int(_all_reduce([float(steps)], device, op="min")[0])


def _seed_epoch(seed: int, epoch: int, rank: int) -> np.random.Generator:
    """The epoch's batch order (the returned generator) and dropout masks (torch's global generator)
    from (seed, epoch, rank) alone: an epoch resumed from a checkpoint then trains exactly as it would
    have without the interruption, and the workers do not share dropout masks."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank, 1]).generate_state(1)[0]))
    return np.random.default_rng([seed, epoch, rank])


def train_loop(cfg: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg["seed"])
    hasher = FeatureHasher.from_params(cfg["hasher"])
    spec = AssemblySpec.from_dict(cfg["assembly_spec"])
    scfg = StudentConfig.from_dict(cfg["student"])

    train = _table_data(_read_shard(ray.train.get_dataset_shard("train")), hasher, spec, scfg)
    dev = None
    if rank == 0 and cfg["has_dev"]:
        dev = _table_data(_read_shard(ray.train.get_dataset_shard("dev")), hasher, spec, scfg)

    bare = StudentModel(scfg)
    if len(train):
        bare.set_match_scaling(train.features.match)  # DDP broadcasts rank 0's statistics
    restored = _restore(bare, cfg["fingerprint"])
    start, history = (int(restored[0]["epoch"]), list(restored[0]["history"])) if restored else (0, [])
    model = ray.train.torch.prepare_model(bare)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if restored is not None:
        state, d = restored
        opt.load_state_dict(_optimizer_state(load_file(str(d / CHECKPOINT_OPTIMIZER)), state["optimizer"]))
        shutil.rmtree(d, ignore_errors=True)
    steps = _steps_per_epoch(len(train), cfg["batch_size"], device)
    if steps == 0:
        raise RuntimeError("a training worker received no rows; use fewer workers or more data")

    for epoch in range(start + 1, cfg["epochs"] + 1):
        rng = _seed_epoch(cfg["seed"], epoch, rank)
        metrics: dict[str, Any] = {"epoch": epoch, "resumed_from_epoch": start}
        metrics.update(_train_epoch(model, opt, train, steps, cfg, rng, device))
        if dev is not None:
            metrics.update(_evaluate(bare, dev, cfg, device))
        metrics = json_safe(metrics)  # an undefined metric (NaN) is null in JSON, Ray's report and the log
        history.append(metrics)
        with tempfile.TemporaryDirectory(prefix="pinrel-ckpt-") as tmp:
            ckpt = None
            if rank == 0:
                _write_checkpoint(Path(tmp), model, opt, epoch, history, cfg["fingerprint"])
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
        if rank == 0:
            # One line per epoch in the driver's (and `ray job logs`) output. A logger, not print: Ray
            # Train patches print in its workers to write each line twice (stdout and its logger).
            _LOG.info("pinrel distill: %s", json.dumps(metrics, sort_keys=True))
        maybe_kill(cfg["kill_at_epoch"], cfg["kill_marker"], epoch, rank)
