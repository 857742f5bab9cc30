"""The teacher's model: the base model with a fresh K-way head (wrapped in LoRA where planned), its
tokenizer, and the checkpoint files of its trainable tensors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import checkpoints
from ..backends.hf import ensure_pad_token
from .config import TeacherError

if TYPE_CHECKING:
    import torch


CHECKPOINT_WEIGHTS = "trainable.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.pt"
CHECKPOINT_RNG = "rng.safetensors"


def load_tokenizer(source: str, decoder: bool) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    ensure_pad_token(tokenizer, decoder)
    return tokenizer


def classifier_head(model: Any) -> str:
    """Name of the freshly initialised classification layer, which LoRA must train in full."""
    import torch

    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    raise TeacherError(f"{type(model).__name__}: no 'score' or 'classifier' head to train")


def build_model(
    plan: Mapping[str, Any],
    pad_token_id: int,
    *,
    dtype: Any = None,
    device: Any = None,
    quantize: bool = False,
) -> Any:
    """The base model with a fresh K-way head, wrapped in LoRA when the plan says so."""
    import torch
    from transformers import AutoModelForSequenceClassification

    grades = int(plan["grades"])
    kwargs: dict[str, Any] = {
        "num_labels": grades,
        "id2label": {i: str(i + 1) for i in range(grades)},
        "label2id": {str(i + 1): i for i in range(grades)},
        "problem_type": "single_label_classification",
        # A base checkpoint that already has a head of another width gets a new one instead of an error.
        "ignore_mismatched_sizes": True,
        "dtype": dtype or torch.float32,
    }
    if quantize:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": device}
    if plan["pooling"] == "mean":
        from ..pooled import MeanPooledClassifier

        head = {k: kwargs.pop(k) for k in ("num_labels", "id2label", "label2id", "problem_type")}
        model = MeanPooledClassifier.from_encoder(plan["source"], dtype=kwargs["dtype"], **head)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(plan["source"], **kwargs)
    # The decoder head pools the last token that is not pad_token_id; it must match the tokenizer's pad.
    model.config.pad_token_id = pad_token_id
    if not plan["lora"]:
        return model
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if quantize:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=plan["gradient_checkpointing"]
        )
    lora = plan["lora_settings"]
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        modules_to_save=[classifier_head(model)],
    )
    return get_peft_model(model, config)


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """Only what training changes: the adapters and head with LoRA, every parameter without."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, weights: Mapping[str, torch.Tensor]) -> None:
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise TeacherError(
            f"checkpoint does not match the model: {len(missing)} missing tensor(s) (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    params = dict(model.named_parameters())
    import torch

    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def save_checkpoint(
    path: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    rng: dict[str, torch.Tensor] | None = None,
) -> None:
    """Weights in safetensors, optimizer state by torch.save of tensors and numbers only (so it loads with
    weights_only=True), the rest as JSON: nothing in a checkpoint can run code when it is read. `rng`
    (every worker's generator states, rows by rank) goes to safetensors too."""
    import torch
    from safetensors.torch import save_file

    save_file(trainable_state(model), str(path / CHECKPOINT_WEIGHTS))
    if rng is not None:
        save_file({k: v.contiguous() for k, v in rng.items()}, str(path / CHECKPOINT_RNG))
    torch.save(optimizer.state_dict(), path / CHECKPOINT_OPTIMIZER)
    checkpoints.write_state(path, {**state, "scheduler": scheduler.state_dict()})


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(weights, optimizer state, training state) of a checkpoint folder."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(path / CHECKPOINT_WEIGHTS))
    optimizer = torch.load(path / CHECKPOINT_OPTIMIZER, map_location="cpu", weights_only=True)
    return weights, optimizer, checkpoints.read_state(path)


def read_rng_states(path: Path) -> dict[str, torch.Tensor] | None:
    """The workers' generator states of a checkpoint folder, or None (written before they were kept)."""
    from safetensors.torch import load_file

    f = path / CHECKPOINT_RNG
    return load_file(str(f)) if f.is_file() else None
