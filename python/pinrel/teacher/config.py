"""What a teacher run is: its settings (`TeacherConfig`, from a dict or YAML), the base model they
resolve to (`inspect_model`: encoder or decoder, LoRA or not, the pooling), and the fingerprint a checkpoint
must match to be resumed."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..assembly import AssemblySpec
from ..backends.hf import is_decoder_config
from ..io import read_yaml_mapping
from ..metrics import grades_problem
from ..predictor import RUN_DIR, TEACHER_KIND, TEACHER_MODEL_DIR

# The output directory: the kind its manifest names, Ray's run name and folder in it, and where the
# merged model and the LoRA adapter go.
KIND = TEACHER_KIND
RUN_NAME = "teacher"
RAY_DIR = RUN_DIR
MODEL_DIR = TEACHER_MODEL_DIR
ADAPTER_DIR = "adapter"


# Learning rates used when the config leaves `lr` unset: LoRA adapters start from zero and need a large step,
# full fine-tuning moves pretrained weights and needs a small one.
DEFAULT_LR_LORA = 2e-4
DEFAULT_LR_FULL = 3e-5


class TeacherError(ValueError):
    """A teacher configuration, input or output directory that cannot work; raised before training starts."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# How the classification head reads the sequence: decoders their last token, encoders [CLS] or the mean.
POOLINGS = ("last", "cls", "mean")


def legacy_pooling(decoder: bool) -> str:
    """The pooling of teachers trained before pinrel recorded it: transformers' own heads."""
    return "last" if decoder else "cls"


def manifest_pooling(manifest: Mapping[str, Any]) -> str:
    """The pooling a teacher's manifest records, or the one it had before pinrel recorded it."""
    pooling = manifest.get("pooling")
    return legacy_pooling(bool(manifest.get("decoder"))) if pooling is None else str(pooling)


@dataclass
class TeacherConfig:
    """Everything that decides how a teacher is trained; `from_yaml`/`from_dict` reject unknown keys.

    `lora=None` means: LoRA for decoders, full fine-tuning for encoders. `lr=None` means DEFAULT_LR_LORA with
    LoRA and DEFAULT_LR_FULL without. `lora_target_modules=None` takes peft's default for the model type and
    falls back to every linear layer. `pooling=None` means: the last token for decoders; for encoders the
    mean of the token states where the checkpoint is a sentence encoder trained on that mean (its
    sentence-transformers config says so), else [CLS] (see `pinrel.pooled`). `assembly` is an
    `AssemblySpec.to_dict()`-style dict (None: defaults).
    """

    model: str
    grades: int = 5
    lora: bool | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str | None = None
    pooling: str | None = None
    epochs: int = 2
    lr: float | None = None
    batch_size: int = 16
    max_length: int = 256
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    # Weight of a squared-error term on the expected grade (sum of p_k * k) beside cross-entropy.
    # Cross-entropy treats the grades as unordered classes; rankings sort by the expected grade, and
    # this term trains that score directly (0 = plain cross-entropy).
    ordinal_weight: float = 0.0
    # Weight of a pairwise (RankNet) term on the expected grade over pairs of the same query. Ranking
    # metrics (nDCG) compare items of one query only, which cross-entropy on absolute grades does not
    # target. Above 0, every batch holds pairs of a single query so that it has such pairs to compare.
    pairwise_weight: float = 0.0
    seed: int = 0
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    bf16: bool = False
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False
    assembly: dict[str, Any] | None = None
    progress: bool = True
    # With a dev set: export the epoch with the lowest dev loss instead of the last one (Ray keeps
    # that checkpoint besides the latest, which restarts need).
    keep_best: bool = False
    # Ray Train restarts the workers from the last checkpoint this many times after one dies (a lost
    # node, an OOM kill); the resumed epochs train exactly as uninterrupted ones would.
    max_failures: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise TeacherError(
                f"model: expected a Hugging Face model name or a local path, got {self.model!r}"
            )
        self.model = self.model.strip()
        for name, low in (
            ("grades", 2),
            ("lora_r", 1),
            ("lora_alpha", 1),
            ("epochs", 1),
            ("batch_size", 1),
            ("max_length", 8),
            ("num_workers", 1),
            ("cpus_per_worker", 1),
            ("seed", 0),
            ("max_failures", 0),
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise TeacherError(f"{name}: expected an integer >= {low}, got {value!r}")
        if (problem := grades_problem(self.grades)) is not None:
            raise TeacherError(f"grades: {problem}")
        for name, lo, hi in (
            ("lora_dropout", 0.0, 1.0),
            ("weight_decay", 0.0, 1.0),
            ("warmup_ratio", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if not _is_number(value) or not lo <= value < hi:
                raise TeacherError(f"{name}: expected a number in [{lo}, {hi}), got {value!r}")
        if self.lr is not None and (not _is_number(self.lr) or self.lr <= 0):
            raise TeacherError(f"lr: expected a positive number (or null for the default), got {self.lr!r}")
        if not _is_number(self.max_grad_norm) or self.max_grad_norm <= 0:
            raise TeacherError(f"max_grad_norm: expected a positive number, got {self.max_grad_norm!r}")
        for name in ("ordinal_weight", "pairwise_weight"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 100:
                raise TeacherError(f"{name}: expected a number in [0, 100], got {value!r}")
        for name in ("use_gpu", "bf16", "load_in_4bit", "gradient_checkpointing", "progress", "keep_best"):
            if not isinstance(getattr(self, name), bool):
                raise TeacherError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        if self.lora is not None and not isinstance(self.lora, bool):
            raise TeacherError(f"lora: expected true, false or null (auto), got {self.lora!r}")
        self._check_target_modules()
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise TeacherError(
                f"pooling: expected null (auto), {', '.join(map(repr, POOLINGS))}, got {self.pooling!r}"
            )
        if self.load_in_4bit and not self.use_gpu:
            raise TeacherError(
                "load_in_4bit: 4-bit (QLoRA) training needs a GPU; set use_gpu: true or drop it"
            )
        if self.load_in_4bit and self.lora is False:
            raise TeacherError("load_in_4bit: a 4-bit base model cannot be fully fine-tuned; use LoRA")
        if self.assembly is not None:
            self.assembly_spec()

    def _check_target_modules(self) -> None:
        t = self.lora_target_modules
        if t is None or (isinstance(t, str) and t):
            return
        if isinstance(t, (list, tuple)) and t and all(isinstance(m, str) and m for m in t):
            self.lora_target_modules = list(t)
            return
        raise TeacherError(
            f"lora_target_modules: expected null, 'all-linear' or a list of module names, got {t!r}"
        )

    def assembly_spec(self) -> AssemblySpec:
        if self.assembly is None:
            return AssemblySpec()
        if not isinstance(self.assembly, dict):
            raise TeacherError(f"assembly: expected a mapping of AssemblySpec fields, got {self.assembly!r}")
        try:
            return AssemblySpec.from_dict(self.assembly)
        except (TypeError, ValueError) as e:
            raise TeacherError(f"assembly: {e}") from e

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **overrides: Any) -> TeacherConfig:
        """Build from a mapping; unknown keys are an error (a typo must not silently train with defaults)."""
        if not isinstance(d, Mapping):
            raise TeacherError(f"teacher config: expected a mapping, got {type(d).__name__}")
        merged = {**d, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(merged) - set(cls.fields()))
        if unknown:
            raise TeacherError(
                f"teacher config: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(cls.fields())}"
            )
        if "model" not in merged:
            raise TeacherError("teacher config: 'model' is required (--model, or teacher.model in the YAML)")
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> TeacherConfig:
        """Read the `teacher:` section of a YAML file (or the whole file when it has no sections)."""
        return cls.from_dict(load_yaml_sections(path)[0], **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The `data:` section of a teacher YAML: what train/teacher.py reads besides the teacher settings.
YAML_DATA_KEYS = ("train", "dev", "out", "mapping")


def load_yaml_sections(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(teacher section, data section) of a teacher YAML; a flat file is all teacher config, no data."""
    p = Path(path)
    try:
        doc = read_yaml_mapping(p)
    except (FileNotFoundError, ValueError) as e:
        raise TeacherError(str(e)) from None
    if "teacher" not in doc:
        return doc, {}
    extra = sorted(set(doc) - {"teacher", "data"})
    if extra:
        raise TeacherError(
            f"{p}: unknown top-level section(s) {', '.join(map(repr, extra))}; expected teacher, data"
        )
    teacher, data = doc.get("teacher") or {}, doc.get("data") or {}
    if not isinstance(teacher, dict) or not isinstance(data, dict):
        raise TeacherError(f"{p}: the 'teacher' and 'data' sections must be mappings")
    unknown = sorted(set(data) - set(YAML_DATA_KEYS))
    if unknown:
        # A misspelt `dev` would otherwise train without a dev set, and say nothing.
        raise TeacherError(
            f"{p}: unknown key(s) {', '.join(map(repr, unknown))} in 'data'; "
            f"known keys: {', '.join(YAML_DATA_KEYS)}"
        )
    return teacher, data


@dataclass(frozen=True)
class ModelInfo:
    """What the driver learns about the base model from its config alone, before any weights load."""

    source: str
    model_type: str
    decoder: bool
    lora: bool
    lr: float
    target_modules: list[str] | str | None
    pooling: str


def _looks_like_path(model: str) -> bool:
    # "org/name" is a hub id; absolute, home, dotted or deeper paths are meant as folders.
    return model.startswith(("/", "~", ".")) or model.count("/") > 1 or (os.sep != "/" and os.sep in model)


def inspect_model(cfg: TeacherConfig) -> ModelInfo:
    """Resolve the base model (local folder or hub name) and the LoRA decision; fails fast on a bad model."""
    from transformers import AutoConfig

    from ..pooled import is_mean_pooled

    source = cfg.model
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise TeacherError(
                f"model: {str(local)!r} exists but has no config.json; is it a Hugging Face model?"
            )
        source = str(local.resolve())
    elif _looks_like_path(source):
        raise TeacherError(f"model: the path {source!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise TeacherError(f"model: cannot load the config of {source!r} ({e})") from e
    if is_mean_pooled(config):
        raise TeacherError(
            f"model: {source!r} is a pinrel mean-pooled classifier, not a base model; "
            "train from the encoder it was fine-tuned from"
        )
    try:
        decoder = is_decoder_config(config)
    except ValueError as e:
        raise TeacherError(f"model: {e}") from e
    lora = decoder if cfg.lora is None else cfg.lora
    if cfg.load_in_4bit and not lora:
        raise TeacherError("load_in_4bit: a 4-bit base model cannot be fully fine-tuned; use LoRA")
    pooling = _pooling(cfg, source, decoder)
    if cfg.load_in_4bit and pooling == "mean":
        raise TeacherError("load_in_4bit: 4-bit loading is for decoder LLMs, not a mean-pooled encoder")
    lr = cfg.lr if cfg.lr is not None else (DEFAULT_LR_LORA if lora else DEFAULT_LR_FULL)
    return ModelInfo(
        source,
        config.model_type,
        decoder,
        lora,
        float(lr),
        _target_modules(cfg, config.model_type),
        pooling,
    )


def _pooling(cfg: TeacherConfig, source: str, decoder: bool) -> str:
    if decoder:
        if cfg.pooling not in (None, "last"):
            raise TeacherError(
                f"pooling: {cfg.pooling!r} is for encoders; a decoder's head reads its last token ('last')"
            )
        return "last"
    if cfg.pooling == "last":
        raise TeacherError("pooling: 'last' is for decoders; an encoder pools 'cls' or 'mean'")
    if cfg.pooling is not None:
        return cfg.pooling
    from ..pooled import sentence_pooling

    # Pool as the encoder was trained to: a sentence encoder's meaning is in the mean of its states.
    return "mean" if sentence_pooling(source) == "mean" else "cls"


def _target_modules(cfg: TeacherConfig, model_type: str) -> list[str] | str | None:
    if cfg.lora_target_modules is not None:
        return cfg.lora_target_modules
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    found = DEFAULTS.get(model_type)
    return list(found) if found else "all-linear"


def data_identity(table: pa.Table | None) -> dict[str, Any] | None:
    """Rows and content hash of a loaded records table (None for no dev set)."""
    from ..records import records_digest

    return None if table is None else {"rows": table.num_rows, "sha256": records_digest(table)}


DATA_KEYS = ("train_data", "dev_data")


# The optimisation settings the weights depend on. `epochs` is not one: raising it trains further.
TRAINING_KEYS = (
    "lr",
    "batch_size",
    "weight_decay",
    "warmup_ratio",
    "max_grad_norm",
    "ordinal_weight",
    "pairwise_weight",
    "seed",
    "lora_alpha",
    "lora_dropout",
)


# Checkpoints written before pinrel recorded these lack them; they resume as before.
LATER_KEYS = DATA_KEYS + TRAINING_KEYS


def fingerprint(cfg: TeacherConfig, info: ModelInfo, train: pa.Table, dev: pa.Table | None) -> dict[str, Any]:
    """What a checkpoint's tensors depend on, settings and data: resuming under different ones would
    train one model on two datasets or two learning rates, and report only the second."""
    training = {k: getattr(cfg, k) for k in TRAINING_KEYS}
    training["lr"] = info.lr
    if not info.lora:
        training.update(lora_alpha=None, lora_dropout=None)  # unused by a full fine-tune
    return {
        **training,
        "train_data": data_identity(train),
        "dev_data": data_identity(dev),
        "model": info.source,
        "grades": cfg.grades,
        "lora": info.lora,
        "lora_r": cfg.lora_r,
        "lora_target_modules": info.target_modules,
        "pooling": info.pooling,
        "max_length": cfg.max_length,
        "assembly": cfg.assembly_spec().to_dict(),
        "load_in_4bit": cfg.load_in_4bit,
    }


def lora_settings(cfg: TeacherConfig, info: ModelInfo) -> dict[str, Any] | None:
    if not info.lora:
        return None
    return {
        "r": cfg.lora_r,
        "alpha": cfg.lora_alpha,
        "dropout": cfg.lora_dropout,
        "target_modules": info.target_modules,
    }
