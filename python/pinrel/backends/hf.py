"""Plain transformers inference with length-bucketed batches: the backend that runs on any machine.

Texts are tokenised once without padding, grouped by `pinrel.bucket_batches` so each batch holds sequences of
similar length (little padding, so little wasted compute), right-padded by `pinrel.pad`, and the results are
scattered back into input order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..batching import bucket_batches, pad
from ..devices import resolve_device
from ..predictor import ModelDirError
from . import dtype_name

if TYPE_CHECKING:
    import torch

Pooling = Literal["auto", "last", "mean", "cls"]

# Encoders whose own tokenizer has no sensible limit get this many tokens unless told otherwise.
FALLBACK_MAX_LENGTH = 512


def is_decoder_config(config: Any) -> bool:
    """Decoder-only LMs (Llama, Qwen, Mistral, ...) pool the last token; masked-LM encoders pool [CLS] (or
    the mean, with pinrel's head in `pinrel.pooled`).

    A model type that has a masked-LM head in transformers is an encoder; everything else that has a sequence
    classification head is a decoder. This needs only the config, so it works before any weights load.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    from ..pooled import is_mean_pooled

    if is_mean_pooled(config):
        return False  # an encoder with pinrel's mean-pooling head
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"model type {config.model_type!r} is an encoder-decoder; pinrel needs an encoder or a decoder"
        )
    return config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def ensure_pad_token(tokenizer: Any, decoder: bool) -> None:
    """Decoder tokenizers often lack a pad token; reuse EOS, which never ends our inputs, so pooling still
    finds the last real token."""
    if tokenizer.pad_token_id is not None:
        return
    if decoder and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        return
    raise ValueError(
        f"tokenizer {tokenizer.name_or_path!r} has neither a pad token nor an EOS token to pad with"
    )


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated but unpadded: padding is decided per batch, after bucketing."""
    if not texts:
        return []
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return [list(ids) for ids in enc["input_ids"]]


def collate(
    token_ids: Sequence[Sequence[int]], pad_id: int, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    ids, mask = pad(token_ids, pad_id=pad_id)
    return torch.from_numpy(ids).to(device, non_blocking=True), torch.from_numpy(mask).to(
        device, non_blocking=True
    )


def arrival_batches(lengths: Sequence[int], max_tokens: int, max_batch_size: int) -> list[np.ndarray]:
    """The no-sorting baseline: fill batches in arrival order under the same token and size limits."""
    batches: list[np.ndarray] = []
    start, widest = 0, 0
    for i, n in enumerate(lengths):
        n = max(int(n), 1)
        size = i - start
        if size and (size >= max_batch_size or max(widest, n) * (size + 1) > max_tokens):
            batches.append(np.arange(start, i, dtype=np.int64))
            start, widest = i, 0
        widest = max(widest, n)
    if start < len(lengths):
        batches.append(np.arange(start, len(lengths), dtype=np.int64))
    return batches


def resolve_dtype(dtype: Any, device: str) -> torch.dtype:
    """bf16 where the GPU supports it (half the memory and bandwidth, same range as fp32); fp32 on CPU."""
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str):
        raise TypeError(f"dtype: expected a name or a torch.dtype, got {type(dtype).__name__}")
    return getattr(torch, dtype_name(dtype))  # type: ignore[no-any-return]


@dataclass
class BackendStats:
    """Running totals since construction (or `reset_stats()`); `padding_waste` is padded slots / all slots."""

    pairs: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def padding_waste(self) -> float:
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "pairs": self.pairs,
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
            "batches": self.batches,
            "seconds": self.seconds,
            "padding_waste": self.padding_waste,
            "pairs_per_second": self.pairs_per_second,
        }


def _check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise ModelDirError(f"model dir {str(model_dir)!r} does not exist or is not a directory")
    if not (model_dir / "config.json").is_file():
        raise ModelDirError(
            f"model dir {str(model_dir)!r} has no config.json; expected a Hugging Face checkpoint"
        )
    weights = list(model_dir.glob("*.safetensors")) + list(model_dir.glob("*.bin"))
    if not weights:
        raise ModelDirError(f"model dir {str(model_dir)!r} has no weights (*.safetensors)")


class HFBackend:
    """Grade probabilities and embeddings from a `*ForSequenceClassification` folder with plain transformers.

    `embed` pools the final hidden state: the last non-pad token for decoders (what their classification head
    reads) and the attention-masked mean for encoders (what sentence encoders such as MiniLM are trained for);
    pass `pooling="cls"` to get the [CLS] vector instead.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        device: str | None = None,
        dtype: Any = None,
        max_tokens: int = 16384,
        max_batch_size: int = 128,
        max_length: int | None = None,
        bucketed: bool = True,
        progress: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir)
        _check_model_dir(self.model_dir)
        if max_tokens < 1 or max_batch_size < 1:
            raise ValueError(
                f"max_tokens and max_batch_size must be >= 1, got {max_tokens}, {max_batch_size}"
            )
        self.device = str(resolve_device(device))
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.bucketed = bucketed
        self.progress = progress
        self.model, self.tokenizer = self._load()
        self.decoder = is_decoder_config(self.model.config)
        self.max_length = self._resolve_max_length(max_length)
        self.grades: int = int(self.model.config.num_labels)
        self.stats = BackendStats()

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from .. import pooled  # noqa: F401  (registers pinrel's mean-pooled classifier with transformers)

        # transformers draws its own "Loading weights" bar; without progress, none at all.
        quiet = not self.progress and hf_logging.is_progress_bar_enabled()
        try:
            if quiet:
                hf_logging.disable_progress_bar()
            config = AutoConfig.from_pretrained(self.model_dir)
            tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, dtype=self.dtype)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            # transformers and safetensors raise a zoo of types for truncated or foreign files.
            raise ModelDirError(f"model dir {str(self.model_dir)!r}: cannot load the checkpoint ({e})") from e
        except Exception as e:
            if type(e).__name__ == "SafetensorError":
                raise ModelDirError(
                    f"model dir {str(self.model_dir)!r}: corrupt safetensors file ({e})"
                ) from e
            raise
        finally:
            if quiet:
                hf_logging.enable_progress_bar()
        ensure_pad_token(tokenizer, is_decoder_config(config))
        if model.config.pad_token_id is None:
            # The decoder head finds the last real token by looking for the first pad id from the right.
            model.config.pad_token_id = tokenizer.pad_token_id
        model.to(self.device)
        model.eval()
        return model, tokenizer

    def _resolve_max_length(self, max_length: int | None) -> int:
        limit = getattr(self.model.config, "max_position_embeddings", None) or FALLBACK_MAX_LENGTH
        if max_length is None:
            tok_limit = self.tokenizer.model_max_length
            max_length = (
                tok_limit if isinstance(tok_limit, int) and tok_limit < 1_000_000 else FALLBACK_MAX_LENGTH
            )
        max_length = min(int(max_length), int(limit))
        if max_length < 1:
            raise ValueError(f"max_length: must be >= 1, got {max_length}")
        if max_length > self.max_tokens:
            raise ValueError(
                f"max_tokens={self.max_tokens} is below max_length={max_length}; no batch could hold it"
            )
        return max_length

    def reset_stats(self) -> None:
        self.stats = BackendStats()

    def _batches(self, lengths: list[int]) -> list[np.ndarray]:
        if self.bucketed:
            return bucket_batches(lengths, self.max_tokens, self.max_batch_size)
        return arrival_batches(lengths, self.max_tokens, self.max_batch_size)

    def _run(
        self,
        texts: Sequence[str],
        forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        width: int,
        unit: str = "pair",
    ) -> np.ndarray:
        """Run `forward` over bucketed batches and return its rows, float32, in input order."""
        import torch
        from tqdm.auto import tqdm

        if isinstance(texts, str):
            raise TypeError("texts: expected a list of strings, got a single str")
        out = np.empty((len(texts), width), dtype=np.float32)
        if not texts:
            return out
        start = time.perf_counter()
        token_ids = tokenize(self.tokenizer, texts, self.max_length)
        lengths = [len(ids) for ids in token_ids]
        pad_id = int(self.tokenizer.pad_token_id)
        with torch.inference_mode(), tqdm(total=len(texts), disable=not self.progress, unit=unit) as bar:
            for idx in self._batches(lengths):
                ids, mask = collate([token_ids[i] for i in idx], pad_id, self.device)
                out[idx] = forward(ids, mask).float().cpu().numpy()
                self._count(len(idx), int(mask.sum()), int(mask.numel()))
                bar.update(len(idx))
        self.stats.seconds += time.perf_counter() - start
        return out

    def _count(self, pairs: int, tokens: int, slots: int) -> None:
        self.stats.pairs += pairs
        self.stats.tokens += tokens
        self.stats.padded_tokens += slots
        self.stats.batches += 1

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax over the K grade logits, `[n, K]` float32, rows in the order of `texts`."""
        import torch

        def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            return torch.softmax(logits.float(), dim=-1)

        return self._run(texts, forward, self.grades)

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw grade logits `[n, K]` (for calibration and distillation with a temperature)."""

        return self._run(
            texts, lambda ids, mask: self.model(input_ids=ids, attention_mask=mask).logits, self.grades
        )

    def embed(self, texts: Sequence[str], pooling: Pooling = "auto") -> np.ndarray:
        """Pooled final hidden states `[n, hidden]` float32 (see the class docstring for the pooling)."""

        if pooling not in ("auto", "last", "mean", "cls"):
            raise ValueError(f"pooling: expected 'auto', 'last', 'mean' or 'cls', got {pooling!r}")
        mode = ("last" if self.decoder else "mean") if pooling == "auto" else pooling
        body = self.model.base_model

        def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            return pool(hidden, mask, mode)

        return self._run(texts, forward, int(self.model.config.hidden_size), unit="text")

    def __repr__(self) -> str:
        return (
            f"HFBackend({str(self.model_dir)!r}, device={self.device!r}, dtype={self.dtype}, "
            f"max_length={self.max_length}, bucketed={self.bucketed})"
        )


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool `[b, t, h]` states of right-padded rows into `[b, h]`."""
    import torch

    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        last = (mask.sum(dim=1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


__all__ = [
    "BackendStats",
    "HFBackend",
    "arrival_batches",
    "collate",
    "ensure_pad_token",
    "is_decoder_config",
    "pool",
    "tokenize",
]
