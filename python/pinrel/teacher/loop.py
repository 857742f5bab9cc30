"""What runs on each Ray Train worker: restore the last checkpoint, train each remaining epoch, evaluate
on the dev set, checkpoint and report."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.hf import collate, tokenize
from ..batching import bucket_batches
from ..killhook import maybe_kill
from .config import TeacherError
from .data import plan_batches, worker_batches
from .model import (
    build_model,
    load_tokenizer,
    load_trainable,
    read_checkpoint,
    read_rng_states,
    save_checkpoint,
)

if TYPE_CHECKING:
    import torch


_LOG = logging.getLogger(__name__)


def linear_schedule(warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _all_reduce(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def evaluate(
    model: Any,
    ids: list[list[int]],
    labels: np.ndarray,
    plan: Mapping[str, Any],
    device: Any,
    pad_id: int,
    rank: int,
    world: int,
) -> dict[str, float]:
    """Dev loss, accuracy and mean absolute grade error over this worker's shard, summed across workers."""
    import torch

    mine = np.arange(rank, len(ids), world)
    sums = [0.0, 0.0, 0.0, 0.0]  # loss, correct, |expected grade - grade|, rows
    grades = torch.arange(1, int(plan["grades"]) + 1, dtype=torch.float32, device=device)
    model.eval()
    if len(mine):
        lengths = np.array([len(ids[i]) for i in mine])
        budget = int(plan["batch_size"]) * 2 * int(plan["max_length"])
        with torch.inference_mode(), _autocast(plan, device):
            for b in bucket_batches(lengths, budget, int(plan["batch_size"]) * 2):
                rows = mine[b]
                x, mask = collate([ids[i] for i in rows], pad_id, device)
                y = torch.as_tensor(labels[rows], device=device)
                logits = model(input_ids=x, attention_mask=mask).logits.float()
                probs = torch.softmax(logits, dim=-1)
                sums[0] += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                sums[1] += float((logits.argmax(-1) == y).sum())
                sums[2] += float(((probs @ grades) - (y + 1).float()).abs().sum())
                sums[3] += len(rows)
    loss, correct, abs_err, n = _all_reduce(sums, world)
    n = max(n, 1.0)
    return {"dev_loss": loss / n, "dev_accuracy": correct / n, "dev_mae": abs_err / n}


def _autocast(plan: Mapping[str, Any], device: Any) -> Any:
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(plan["bf16"]))


@dataclass
class _Progress:
    """Where training stands: restored from a checkpoint or fresh."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] | None = None


def _restore(model: Any) -> _Progress:
    """Load the weights of Ray's latest checkpoint for this run (if any) and return the saved progress."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return _Progress()
    with checkpoint.as_directory() as d:
        weights, optimizer_state, state = read_checkpoint(Path(d))
        rng = read_rng_states(Path(d))
    load_trainable(model, weights)
    return _Progress(
        int(state["epoch"]),
        int(state["global_step"]),
        list(state["history"]),
        optimizer_state,
        state["scheduler"],
        rng,
    )


def _gather_rng(world: int, device: Any) -> dict[str, torch.Tensor]:
    """Every worker's torch generator states (the CPU's, and the GPU's when training on one; dropout
    draws from them), stacked by rank. A collective: every worker calls it."""
    import torch

    local = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        local["cuda"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return {k: v.unsqueeze(0) for k, v in local.items()}
    import torch.distributed as dist

    out = {}
    for name, state in local.items():
        t = state.to(device) if dist.get_backend() == "nccl" else state
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        out[name] = torch.stack([p.cpu() for p in parts])
    return out


def _set_rng(states: dict[str, torch.Tensor] | None, rank: int, world: int, device: Any) -> None:
    """Put back this worker's generator states from a checkpoint, so the resumed epochs draw the dropout
    masks the uninterrupted run would have. A checkpoint from before they were kept, or from another
    number of workers, leaves the generators as seeded (the batches differ then anyway)."""
    import torch

    if states is None or int(states["cpu"].shape[0]) != world:
        return
    torch.set_rng_state(states["cpu"][rank].clone())
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"][rank].clone(), device)


def _optimizer(module: Any, plan: Mapping[str, Any], steps_per_epoch: int) -> tuple[Any, Any, list[Any]]:
    """AdamW over the trainable tensors (no decay on biases and norms) with linear warm-up and decay."""
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": float(plan["weight_decay"])},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=float(plan["lr"]))
    total = steps_per_epoch * int(plan["epochs"])
    warmup = math.ceil(float(plan["warmup_ratio"]) * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total))
    return optimizer, scheduler, params


def _load_for_training(plan: Mapping[str, Any], pad_id: int, device: Any) -> Any:
    import torch

    quantize = bool(plan["load_in_4bit"])
    # With LoRA the frozen base may sit in bf16; fully fine-tuned weights stay fp32 under bf16 autocast.
    base_dtype = torch.bfloat16 if plan["bf16"] and plan["lora"] else torch.float32
    model = build_model(
        plan, pad_id, dtype=base_dtype, device=device.index if quantize else None, quantize=quantize
    )
    if plan["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
        if plan["lora"]:
            model.enable_input_require_grads()  # else checkpointed blocks see no input that needs grad
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # AdamW on bf16 weights loses small updates; keep trained tensors fp32
    return model


def _report(
    metrics: dict[str, Any],
    state: dict[str, Any],
    module: Any,
    optimizer: Any,
    scheduler: Any,
    rank: int,
    world: int,
    device: Any,
) -> None:
    """Every worker reports (it is a barrier); only rank 0 writes the checkpoint."""
    import ray.train

    name = f"epoch_{state['epoch']:04d}"
    rng = _gather_rng(world, device)
    with tempfile.TemporaryDirectory() as tmp:
        if rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        save_checkpoint(Path(tmp), module, optimizer, scheduler, state, rng)
        ray.train.report(
            metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name
        )


def train_loop_per_worker(plan: dict[str, Any]) -> None:
    """The Ray Train loop: restore, train each remaining epoch, evaluate, checkpoint and report."""
    import ray
    import ray.train
    import torch
    from ray.train.torch import get_device, prepare_model

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(int(plan["seed"]))
    if not plan["use_gpu"]:
        torch.set_num_threads(int(plan["cpus_per_worker"]))
    device = get_device()
    data = ray.get(plan["data"])
    tokenizer = load_tokenizer(plan["source"], plan["decoder"])
    pad_id = int(tokenizer.pad_token_id)
    train_ids = tokenize(tokenizer, data["train_texts"], int(plan["max_length"]))
    dev_ids = tokenize(tokenizer, data["dev_texts"], int(plan["max_length"]))
    lengths = np.array([len(x) for x in train_ids], dtype=np.int64)
    epochs = int(plan["epochs"])

    module = _load_for_training(plan, pad_id, device)
    progress = _restore(module)
    model = prepare_model(module, move_to_device=not plan["load_in_4bit"])
    groups = np.asarray(data["train_groups"], dtype=np.int64)
    steps_per_epoch = len(worker_batches(plan_batches(lengths, groups, plan, 0), rank, world))
    if steps_per_epoch == 0:
        raise TeacherError(f"{len(train_ids)} training pairs make fewer batches than the {world} workers")
    optimizer, scheduler, params = _optimizer(module, plan, steps_per_epoch)
    if progress.optimizer_state is not None:
        optimizer.load_state_dict(progress.optimizer_state)
        scheduler.load_state_dict(progress.scheduler_state)
        if rank == 0:
            _LOG.info("pinrel teacher: resuming after epoch %d (step %d)", progress.epoch, progress.step)

    labels = np.asarray(data["train_labels"], dtype=np.int64)
    weights = None if data["train_weights"] is None else np.asarray(data["train_weights"], dtype=np.float32)
    dev_labels = np.asarray(data["dev_labels"], dtype=np.int64)
    step, history = progress.step, progress.history
    _set_rng(progress.rng, rank, world, device)
    for epoch in range(progress.epoch, epochs):
        t0 = time.perf_counter()
        batches = worker_batches(plan_batches(lengths, groups, plan, epoch), rank, world)
        desc = f"epoch {epoch + 1}/{epochs}"
        loss = _train_epoch(
            model,
            params,
            optimizer,
            scheduler,
            batches,
            train_ids,
            labels,
            groups,
            weights,
            plan,
            device,
            pad_id,
            rank,
            desc,
        )
        step += len(batches)
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "global_step": step,
            "train_loss": _all_reduce([loss], world)[0] / world,
            # 0, or the epoch this run went on from: a rerun's, or Ray's restart after a worker died.
            "resumed_from_epoch": progress.epoch,
        }
        if dev_ids:
            metrics.update(evaluate(module, dev_ids, dev_labels, plan, device, pad_id, rank, world))
        metrics["seconds"] = time.perf_counter() - t0
        history.append(metrics)
        state = {
            "epoch": epoch + 1,
            "global_step": step,
            "history": history,
            "fingerprint": plan["fingerprint"],
        }
        _report(metrics, state, module, optimizer, scheduler, rank, world, device)
        maybe_kill(plan["kill_at_epoch"], plan["kill_marker"], epoch + 1, rank)


def training_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    ordinal_weight: float = 0.0,
    pairwise_weight: float = 0.0,
    groups: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the K-way logits against the 0-based grades `y`, plus `ordinal_weight`
    times the mean squared error of the expected grade (`sum_k p_k * k`, grades 1..K), plus
    `pairwise_weight` times the RankNet loss `log(1 + exp(s_j - s_i))` of the expected grades `s`, averaged
    over the pairs (i, j) of the same query (`groups`; None: one query) where i has the higher grade.

    `weights` (one per row, normalised to mean 1 over the training set) scale each row's terms and each
    ordered pair's by `w_i * w_j`; means stay means over the batch, so a batch of doubtful pairs moves the
    model less than a batch of sure ones.  None is the unweighted loss exactly."""
    import torch

    f = torch.nn.functional
    logits = logits.float()
    if weights is None:  # the unweighted losses as they always were, to the last bit
        loss = f.cross_entropy(logits, y)
    else:
        weights = weights.float()
        loss = (weights * f.cross_entropy(logits, y, reduction="none")).mean()
    if ordinal_weight == 0 and pairwise_weight == 0:
        return loss
    grades = torch.arange(1, logits.shape[-1] + 1, dtype=torch.float32, device=logits.device)
    expected = torch.softmax(logits, dim=-1) @ grades
    if ordinal_weight > 0:
        target = (y + 1).float()
        if weights is None:
            loss = loss + ordinal_weight * f.mse_loss(expected, target)
        else:
            loss = loss + ordinal_weight * (weights * (expected - target) ** 2).mean()
    if pairwise_weight > 0:
        ordered = y[:, None] > y[None, :]
        if groups is not None:
            ordered &= groups[:, None] == groups[None, :]
        # a batch without two grades of one query has nothing to order: the term is 0, not NaN
        if bool(ordered.any()):
            ranknet = f.softplus(-(expected[:, None] - expected[None, :])[ordered])
            if weights is not None:
                ranknet = (weights[:, None] * weights[None, :])[ordered] * ranknet
            loss = loss + pairwise_weight * ranknet.mean()
    return loss


def _train_epoch(
    model: Any,
    params: list[Any],
    optimizer: Any,
    scheduler: Any,
    batches: list[np.ndarray],
    ids: list[list[int]],
    labels: np.ndarray,
    groups: np.ndarray,
    weights: np.ndarray | None,
    plan: Mapping[str, Any],
    device: Any,
    pad_id: int,
    rank: int,
    desc: str,
) -> float:
    import torch
    from tqdm.auto import tqdm

    model.train()
    total, seen = 0.0, 0
    ordinal, pairwise = float(plan["ordinal_weight"]), float(plan["pairwise_weight"])
    bar = tqdm(batches, desc=desc, unit="batch", disable=rank != 0 or not plan["progress"], mininterval=2.0)
    for idx in bar:
        x, mask = collate([ids[i] for i in idx], pad_id, device)
        y = torch.as_tensor(labels[idx], device=device)
        with _autocast(plan, device):
            logits = model(input_ids=x, attention_mask=mask).logits
        g = torch.as_tensor(groups[idx], device=device) if pairwise > 0 else None
        w = torch.as_tensor(weights[idx], device=device) if weights is not None else None
        loss = training_loss(logits, y, ordinal, pairwise, g, w)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, float(plan["max_grad_norm"]))
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(idx)
        seen += len(idx)
        bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
    return total / max(seen, 1)
