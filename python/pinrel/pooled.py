"""A K-way classifier over the attention-masked mean of an encoder's final hidden states.

Sentence encoders such as all-MiniLM-L6-v2 were trained so that the mean of their token states carries
the meaning of a text; their [CLS] state and pooler were not trained for anything. transformers'
`BertForSequenceClassification` reads [CLS] through that pooler, so a teacher fine-tuned from such a
checkpoint must first learn a pooling from a few thousand labelled pairs. This model reads the mean
instead, the representation the encoder already has.

It is a transformers model of its own type (`pinrel_mean_pooled`), registered with `AutoConfig` and
`AutoModelForSequenceClassification` when this module is imported: `save_pretrained`, `from_pretrained`,
peft and pinrel's loaders work on it as on any `*ForSequenceClassification`. A process that has not
imported pinrel refuses the folder ("unrecognized model type") instead of loading a [CLS] head with
random weights over it. The config holds the encoder's own config (`encoder`), so nothing is downloaded
to rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from .backends.hf import pool

MODEL_TYPE = "pinrel_mean_pooled"
# What pinrel reads from a classifier's config besides the labels; copied from the encoder's.
_ENCODER_ATTRS = ("hidden_size", "max_position_embeddings", "vocab_size")


class MeanPooledConfig(PretrainedConfig):  # type: ignore[misc]
    model_type = MODEL_TYPE

    def __init__(
        self, encoder: dict[str, Any] | None = None, classifier_dropout: float = 0.1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = dict(encoder or {})
        self.classifier_dropout = float(classifier_dropout)
        for name in _ENCODER_ATTRS:
            if name in self.encoder:
                setattr(self, name, self.encoder[name])

    def encoder_config(self) -> PretrainedConfig:
        if "model_type" not in self.encoder:
            raise ValueError(f"{MODEL_TYPE} config: 'encoder' names no model_type")
        fields = {k: v for k, v in self.encoder.items() if k != "model_type"}
        return AutoConfig.for_model(self.encoder["model_type"], **fields)


class MeanPooledClassifier(PreTrainedModel):  # type: ignore[misc]
    config_class = MeanPooledConfig
    # `model.base_model` is the encoder, which pinrel's embeddings pool.
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True

    def __init__(self, config: MeanPooledConfig) -> None:
        super().__init__(config)
        self.encoder = _without_pooler(AutoModel.from_config(config.encoder_config()))
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(int(config.hidden_size), len(config.id2label or {}))
        self.post_init()

    @classmethod
    def from_encoder(cls, source: str, dtype: Any = None, **config: Any) -> MeanPooledClassifier:
        """A fresh head (`config`: num_labels, id2label, ...) over the pretrained encoder in `source`."""
        encoder = _without_pooler(AutoModel.from_pretrained(source, dtype=dtype or torch.float32))
        settings = MeanPooledConfig(encoder=encoder.config.to_dict(), **config)
        model = cls(settings)
        model.encoder = encoder
        model.classifier.to(next(encoder.parameters()).dtype)
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if input_ids is None:
            raise ValueError(f"{MODEL_TYPE}: input_ids is required")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.classifier(self.dropout(pool(hidden, attention_mask, "mean")))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _without_pooler(encoder: Any) -> Any:
    # The mean replaces BERT-style poolers; left in, they would be weights that never get a gradient,
    # which distributed training refuses.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def is_mean_pooled(config: Any) -> bool:
    return getattr(config, "model_type", None) == MODEL_TYPE


def is_mean_pooled_dir(folder: str | Path) -> bool:
    """Whether the Hugging Face folder holds this model (its config.json says so), read without loading."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the loaders report unreadable folders with a better message
    return isinstance(config, dict) and config.get("model_type") == MODEL_TYPE


def sentence_pooling(source: str) -> str | None:
    """How a sentence-transformers checkpoint pools ('mean' or 'cls'), from its modules.json and pooling
    config; None for any other checkpoint, or a pooling pinrel has no head for."""
    modules = _checkpoint_json(source, "modules.json")
    if not isinstance(modules, list):
        return None
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith(".Pooling"):
            folder = str(module.get("path") or "").strip("/")
            settings = _checkpoint_json(source, f"{folder}/config.json" if folder else "config.json")
            if not isinstance(settings, dict):
                return None
            if settings.get("pooling_mode_mean_tokens"):
                return "mean"
            if settings.get("pooling_mode_cls_token"):
                return "cls"
            return None
    return None


def _checkpoint_json(source: str, name: str) -> Any:
    """A JSON file of a local folder or a hub checkpoint, or None where there is none (or no network)."""
    local = Path(source)
    if local.is_dir():
        path: Any = local / name
    else:
        from transformers.utils import cached_file

        try:
            path = cached_file(
                source,
                name,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except (OSError, ValueError):
            return None
    if path is None or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


AutoConfig.register(MODEL_TYPE, MeanPooledConfig, exist_ok=True)
AutoModelForSequenceClassification.register(MeanPooledConfig, MeanPooledClassifier, exist_ok=True)

__all__ = [
    "MODEL_TYPE",
    "MeanPooledClassifier",
    "MeanPooledConfig",
    "is_mean_pooled",
    "is_mean_pooled_dir",
    "sentence_pooling",
]
