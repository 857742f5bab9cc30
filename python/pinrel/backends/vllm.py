"""vLLM inference for teacher checkpoints: the backend for labeling pair sets far larger than training sets.

`VLLMBackend` has the interface of `HFBackend` (`predict_proba`, `predict_logits`, `embed`, `stats`,
`grades`) but hands scheduling to vLLM: continuous batching packs sequences without padding, and the
classification head runs through vLLM's pooling runner (`LLM(runner="pooling").classify`), which applies the
same softmax over the K grade logits as transformers.

vLLM is optional and imported only when a backend is built. On a GPU machine `pip install 'pinrel[vllm]'`;
on a CPU-only machine vLLM needs its CPU build in a virtualenv of its own, which `tools/vllm_env.sh` creates.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..predictor import MANIFEST, TEACHER_KIND, TEACHER_MODEL_DIR, ModelDirError, read_manifest
from . import dtype_name
from .hf import BackendStats

INSTALL_HINT = (
    "install it with `pip install 'pinrel[vllm]'` (GPU); on a machine without a GPU build the CPU "
    "environment with `bash tools/vllm_env.sh` and run pinrel from `.venv-vllm`"
)
GPU_MEMORY_UTILIZATION = 0.9
# On CPU the "GPU memory" fraction sizes the KV cache out of system RAM; 0.9 would starve everything else.
CPU_MEMORY_UTILIZATION = 0.3


def import_vllm() -> Any:
    """`import vllm`, or an ImportError that says how to get it (the raw one is often a CUDA linker error)."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"the vLLM backend cannot import vllm ({e}); {INSTALL_HINT}") from e
    return vllm


def resolve_model_dir(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any] | None]:
    """The Hugging Face folder to serve and the teacher manifest, if `path` is a teacher directory.

    Accepts a teacher directory (`pinrel.json` + `model/`) or a plain Hugging Face checkpoint folder; checks
    both before vLLM spends its start-up time on them.
    """
    root = Path(path)
    if not root.is_dir():
        raise ModelDirError(f"model dir {str(root)!r} does not exist or is not a directory")
    manifest: dict[str, Any] | None = None
    folder = root
    if (root / MANIFEST).is_file():
        manifest = read_manifest(root)
        if manifest["kind"] != TEACHER_KIND:
            raise ModelDirError(
                f"{root}: holds a {manifest['kind']!r}; the vLLM backend serves teachers only"
            )
        folder = root / TEACHER_MODEL_DIR
    if not (folder / "config.json").is_file():
        raise ModelDirError(
            f"model dir {str(folder)!r} has no config.json; expected a Hugging Face checkpoint"
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelDirError(f"model dir {str(folder)!r} has no weights (*.safetensors)")
    return folder, manifest


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{folder / 'config.json'}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise ModelDirError(f"{folder / 'config.json'}: expected a JSON object")
    return config


def _resolve_dtype(dtype: Any, on_cpu: bool) -> Any:
    # vLLM's "auto" gives float16 on CPU even for a float32 checkpoint; HFBackend uses float32 there, and the
    # two backends should agree on the same machine.
    if dtype is None or dtype == "auto":
        return "float32" if on_cpu else "auto"
    if isinstance(dtype, str):
        return dtype_name(dtype)
    return dtype  # a torch.dtype; vLLM validates it


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts: expected a list of strings, got a single str")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
    return out


class VLLMBackend:
    """Grade probabilities from a `*ForSequenceClassification` checkpoint served by vLLM.

    `model_dir` is a teacher directory or a plain Hugging Face folder. Defaults depend on the platform vLLM
    was built for: on a GPU, `dtype="auto"` follows the checkpoint, 90% of GPU memory goes to vLLM, and CUDA
    graphs are captured; on CPU the model runs in float32 (like HFBackend), the KV cache gets 30% of RAM (or
    `VLLM_CPU_KVCACHE_SPACE` GiB), and `enforce_eager` skips torch.compile, whose warm-up costs minutes and
    pays off only on long runs. On CPU, `VLLM_ENABLE_V1_MULTIPROCESSING=0` in the environment also saves the
    ~30 s that each spawned engine process spends importing vLLM again.

    The HFBackend knobs the labeler passes keep their meaning: `max_length` is the truncation length (a
    teacher's `pinrel.json` supplies it; it also caps `max_model_len`), `max_tokens` is the per-step token
    budget (`max_num_batched_tokens`), `max_batch_size` is vLLM's `max_num_seqs`, and `progress` shows vLLM's
    own tqdm bar. `memory_share` scales the default memory budget, for engines that share one device (the
    teachers of an ensemble). Everything in `llm_kwargs` goes to `vllm.LLM` unchanged and wins over these
    defaults.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        tensor_parallel_size: int = 1,
        dtype: Any = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool | None = None,
        *,
        max_length: int | None = None,
        max_tokens: int | None = None,
        max_batch_size: int | None = None,
        progress: bool = True,
        device: str | None = None,
        memory_share: float = 1.0,
        **llm_kwargs: Any,
    ) -> None:
        if not (isinstance(memory_share, (int, float)) and 0.0 < memory_share <= 1.0):
            raise ValueError(f"memory_share: expected a number in (0, 1], got {memory_share!r}")
        self.model_dir, self.manifest = resolve_model_dir(model_dir)
        config = _read_config(self.model_dir)
        from ..pooled import MODEL_TYPE

        if config.get("model_type") == MODEL_TYPE:
            raise ModelDirError(
                f"model dir {str(self.model_dir)!r}: a teacher with pinrel's mean-pooling head "
                f"({MODEL_TYPE}), which vLLM cannot run; use the hf backend"
            )
        import_vllm()
        from vllm import LLM, PoolingParams
        from vllm.config import PoolerConfig
        from vllm.platforms import current_platform

        self._pooling_params = PoolingParams
        on_cpu = bool(current_platform.is_cpu())
        platform = str(current_platform.device_type)
        if device is not None and device.split(":")[0] != platform:
            raise ValueError(
                f"device={device!r}: this vLLM build runs on {platform!r} only; leave device unset"
            )
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size: must be >= 1, got {tensor_parallel_size}")

        if max_length is None and self.manifest is not None:
            max_length = self.manifest.get("max_length")
        if max_length is not None:
            if int(max_length) < 1:
                raise ValueError(f"max_length: must be >= 1, got {max_length}")
            positions = config.get("max_position_embeddings")
            # Same clamp as HFBackend, so a manifest's max_length never asks vLLM for more than the model has.
            limit = min(int(max_length), int(positions)) if positions else int(max_length)
            max_model_len = min(max_model_len, limit) if max_model_len is not None else limit
        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"max_model_len: must be >= 1, got {max_model_len}")

        kwargs: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": _resolve_dtype(dtype, on_cpu),
            "gpu_memory_utilization": gpu_memory_utilization
            if gpu_memory_utilization is not None
            else memory_share * (CPU_MEMORY_UTILIZATION if on_cpu else GPU_MEMORY_UTILIZATION),
            "enforce_eager": on_cpu if enforce_eager is None else enforce_eager,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        if max_tokens is not None:
            # vLLM refuses a step budget below one full sequence.
            kwargs["max_num_batched_tokens"] = max(int(max_tokens), int(max_model_len or 0))
        if max_batch_size is not None:
            kwargs["max_num_seqs"] = int(max_batch_size)
        architectures = [str(a) for a in config.get("architectures") or []]
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            # Some checkpoints support both pooling tasks, and vLLM would pick "embed"; an engine serves one.
            try:
                kwargs["pooler_config"] = PoolerConfig(task="classify")
            except (TypeError, ValueError):  # a vLLM without the field infers "classify" from the head
                pass
        kwargs.update(llm_kwargs)

        self.progress = progress
        self.architectures = architectures
        self.llm_kwargs = kwargs
        try:
            self.llm: Any = LLM(model=str(self.model_dir), runner="pooling", **kwargs)
        except (OSError, ValueError) as e:
            raise ModelDirError(f"model dir {str(self.model_dir)!r}: vLLM cannot serve it ({e})") from e
        self.pooling_task: str | None = getattr(self.llm, "pooling_task", None)
        self.supported_tasks: tuple[str, ...] = tuple(getattr(self.llm, "supported_tasks", ()))
        model_config = self.llm.llm_engine.model_config
        self.max_model_len = int(model_config.max_model_len)
        self.grades: int = int(getattr(model_config.hf_config, "num_labels", 0) or 0)
        if (
            self.manifest is not None
            and self.pooling_task == "classify"
            and self.grades != self.manifest["grades"]
        ):
            grades = self.manifest["grades"]
            self.close()
            raise ModelDirError(
                f"{self.model_dir}: the model has {self.grades} outputs but {MANIFEST} says {grades}"
            )
        # Truncate like HFBackend (keep the first max_model_len tokens) instead of vLLM's default of rejecting
        # the request, so one over-long item cannot fail a labeling shard.
        self._tokenization = {"truncate_prompt_tokens": -1, "truncation_side": "right"}
        self.stats = BackendStats()

    def reset_stats(self) -> None:
        self.stats = BackendStats()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax over the K grade logits, `[n, K]` float32, rows in the order of `texts`."""
        return self._classify(texts, activation=True)

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw grade logits `[n, K]` (for calibration and distillation with a temperature)."""
        return self._classify(texts, activation=False)

    def _classify(self, texts: Sequence[str], activation: bool) -> np.ndarray:
        texts = _check_texts(texts)
        if self.pooling_task != "classify":
            raise NotImplementedError(
                f"{self.model_dir} ({self._architecture}) is served for {self.pooling_task!r}, not "
                "'classify': grade probabilities need a *ForSequenceClassification checkpoint"
            )
        out = np.empty((len(texts), self.grades), dtype=np.float32)
        if not texts:
            return out
        start = time.perf_counter()
        results = self.llm.classify(
            texts,
            pooling_params=self._pooling_params(use_activation=activation),
            use_tqdm=self.progress,
            tokenization_kwargs=dict(self._tokenization),
        )
        for i, r in enumerate(results):
            out[i] = r.outputs.probs
        self._count(results, time.perf_counter() - start)
        return out

    def embed(self, texts: Sequence[str], pooling: str = "auto") -> np.ndarray:
        """Pooled final hidden states `[n, hidden]` float32, where vLLM has an embedding pooler for the model.

        vLLM serves one pooling task per engine and has no embedding pooler for `*ForSequenceClassification`
        checkpoints (the teachers), so this works only for embedding checkpoints (e.g. a sentence encoder
        folder), with their own pooling and no normalisation. A teacher's hidden states: HFBackend.embed.
        """
        texts = _check_texts(texts)
        if pooling != "auto":
            raise ValueError(f"pooling: the vLLM backend uses the checkpoint's own pooler; got {pooling!r}")
        if self.pooling_task != "embed":
            raise NotImplementedError(
                f"vLLM serves {self.model_dir} ({self._architecture}) for "
                f"{self.pooling_task!r} (supported: {', '.join(self.supported_tasks) or 'none'}); it has no "
                "'embed' pooling for this checkpoint. Use the hf backend for embeddings: "
                "pinrel.backends.get_backend('hf', model_dir).embed(texts)"
            )
        if not texts:
            return np.empty((0, int(self.llm.llm_engine.model_config.get_hidden_size())), dtype=np.float32)
        start = time.perf_counter()
        results = self.llm.embed(
            texts,
            pooling_params=self._pooling_params(use_activation=False),
            use_tqdm=self.progress,
            tokenization_kwargs=dict(self._tokenization),
        )
        out = np.asarray([r.outputs.embedding for r in results], dtype=np.float32)
        self._count(results, time.perf_counter() - start)
        return out

    @property
    def _architecture(self) -> str:
        return ", ".join(self.architectures) or "unknown architecture"

    def _count(self, results: Sequence[Any], seconds: float) -> None:
        tokens = sum(len(r.prompt_token_ids or ()) for r in results)
        self.stats.pairs += len(results)
        self.stats.tokens += tokens
        # vLLM packs sequences back to back, so no slot is padding; one engine call counts as one batch.
        self.stats.padded_tokens += tokens
        self.stats.batches += 1
        self.stats.seconds += seconds

    def close(self) -> None:
        """Stop vLLM's engine processes and free its memory (KV cache included) now, not at exit."""
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        del llm
        gc.collect()

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VLLMBackend({str(self.model_dir)!r}, task={self.pooling_task!r}, "
            f"dtype={self.llm_kwargs.get('dtype')!r}, max_model_len={getattr(self, 'max_model_len', None)})"
        )


__all__ = ["INSTALL_HINT", "VLLMBackend", "import_vllm", "resolve_model_dir"]
