"""Inference backends for Hugging Face `*ForSequenceClassification` checkpoints.

Every backend takes pair texts (already assembled) and returns grade probabilities `[n, K]` as float32.
`hf` runs anywhere torch runs; `vllm` (GPU, optional extra) is for labeling at scale.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

BackendName = Literal["auto", "hf", "vllm"]
BACKENDS: tuple[str, ...] = ("auto", "hf", "vllm")
# The dtype names both backends take ("auto" aside), by their canonical torch name.
DTYPE_NAMES: dict[str, str] = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}


def dtype_name(dtype: str) -> str:
    """The canonical name of a dtype given by name; a ValueError names the choices."""
    if dtype not in DTYPE_NAMES:
        raise ValueError(
            f"dtype: expected 'auto', one of {sorted(DTYPE_NAMES)} or a torch.dtype, got {dtype!r}"
        )
    return DTYPE_NAMES[dtype]


@runtime_checkable
class Backend(Protocol):
    """What the teacher and the labeler need from an inference engine."""

    grades: int

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...


def vllm_usable() -> bool:
    """vLLM is worth choosing only when it is installed and a CUDA device is present."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_backend_name(name: str, model_dirs: Sequence[str | os.PathLike[str]] = ()) -> str:
    """The backend `name` stands for; 'auto' is vLLM where it is usable and runs every model in
    `model_dirs` (teacher or Hugging Face folders), else hf."""
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {name!r}")
    if name == "auto":
        if not vllm_usable():
            return "hf"
        from ..pooled import is_mean_pooled_dir

        # vLLM has no mean-pooling classification head (pinrel.pooled); hf runs those teachers.
        return "hf" if any(is_mean_pooled_dir(_hf_folder(Path(d))) for d in model_dirs) else "vllm"
    return name


def _hf_folder(path: Path) -> Path:
    """The Hugging Face folder of a teacher directory, or `path` itself."""
    from ..predictor import MANIFEST, TEACHER_MODEL_DIR

    return path / TEACHER_MODEL_DIR if (path / MANIFEST).is_file() else path


def get_backend(name: str, model_dir: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Build backend `name` ('auto' | 'hf' | 'vllm') over the checkpoint in `model_dir`."""
    resolved = resolve_backend_name(name, [model_dir])
    if resolved == "hf":
        from .hf import HFBackend

        return HFBackend(model_dir, **kwargs)
    try:
        module = importlib.import_module("pinrel.backends.vllm")
    except ModuleNotFoundError as e:
        if e.name == "pinrel.backends.vllm":
            raise ValueError(
                "backend 'vllm': pinrel.backends.vllm is not part of this pinrel build; use backend='hf'"
            ) from e
        if e.name == "vllm":
            raise ValueError(
                "backend 'vllm': the vllm package is not installed (pip install 'pinrel[vllm]')"
            ) from e
        raise
    return module.VLLMBackend(model_dir, **kwargs)


__all__ = ["BACKENDS", "Backend", "BackendName", "get_backend", "resolve_backend_name", "vllm_usable"]
