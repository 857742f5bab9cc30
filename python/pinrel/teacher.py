"""The teacher: a pretrained transformer fine-tuned as a K-way relevance cross-encoder on Ray Train.

A decoder LLM (Llama, Qwen, ...) is adapted with LoRA and pools its last non-pad token; an encoder (BERT,
MiniLM, XLM-R) is fully fine-tuned and pools [CLS], or the mean of its token states when it is a sentence
encoder trained on that mean (`pinrel.pooled`). Both see one text per pair, built by the Rust assembler
from the query and the item fields, so the teacher, the labeler and the student read the same words.

`train_teacher` checks every input on the driver before any worker starts, trains under
`ray.train.torch.TorchTrainer` with a checkpoint (weights in safetensors, optimizer state as tensors) each
epoch, resumes an unfinished run found in the output directory, and writes a self-contained model directory:

    out_dir/model/      merged *ForSequenceClassification (safetensors) + tokenizer, for transformers and vLLM
                        (a mean-pooled encoder: pinrel's own model type, for transformers only)
    out_dir/adapter/    the LoRA adapter alone (only when LoRA was used)
    out_dir/pinrel.json manifest: kind "teacher", grades, base model, assembly spec, dev metrics per epoch
    out_dir/_ray/       Ray Train's run folder (checkpoints); delete it once the model is final
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import checkpoints
from .assembly import AssemblySpec, assemble_pairs
from .backends import get_backend
from .backends.hf import collate, ensure_pad_token, is_decoder_config, tokenize
from .batching import bucket_batches
from .io import as_stored_json, make_shareable, read_yaml_mapping
from .killhook import kill_at_epoch, maybe_kill
from .metrics import grades_problem
from .predictor import RUN_DIR, ModelDirError, check_model_out, read_manifest, write_manifest
from .raycluster import ray_session

if TYPE_CHECKING:
    import torch

_LOG = logging.getLogger(__name__)
KIND = "teacher"
RUN_NAME = "teacher"
RAY_DIR = RUN_DIR
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"

# Learning rates used when the config leaves `lr` unset: LoRA adapters start from zero and need a large step,
# full fine-tuning moves pretrained weights and needs a small one.
DEFAULT_LR_LORA = 2e-4
DEFAULT_LR_FULL = 3e-5

# Training batches are bucketed by length inside windows of this many batches of shuffled pairs: wide enough
# that neighbours in length share a batch, narrow enough that every epoch still mixes the data.
BUCKET_WINDOW_BATCHES = 32

CHECKPOINT_WEIGHTS = "trainable.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.pt"
CHECKPOINT_RNG = "rng.safetensors"


class TeacherError(ValueError):
    """A teacher configuration, input or output directory that cannot work; raised before training starts."""


# ------------------------------------------------------------------------------------------------ config


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


# ------------------------------------------------------------------------------------ the resolved plan


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

    from .pooled import is_mean_pooled

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
    from .pooled import sentence_pooling

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
    from .records import records_digest

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


# ------------------------------------------------------------------------------------------------- data


def load_records(
    data: pa.Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    name: str,
    grades: int,
    mapping: Mapping[str, str] | None = None,
) -> pa.Table:
    """Read and validate graded records; every problem is reported here, before Ray starts."""
    from .records import RecordsError, make_records, read_records, validate_records

    try:
        stored = _stored_grades(data)
        if stored is not None and stored != grades:
            raise TeacherError(
                f"{name}: the records are graded 1..{stored} but the teacher has grades={grades}"
            )
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            if path.is_file() and path.stat().st_size == 0:
                raise TeacherError(f"{name}: {str(path)!r} is empty")
            table = read_records(path, mapping=mapping, grades=grades)
        else:
            table = make_records(data, mapping=mapping, grades=grades, source=name)
        validate_records(table, grades=grades, require_labels=True)
    except RecordsError as e:
        # Messages from pinrel.records already name the file (or `name` as the source), column and row.
        raise TeacherError(str(e)) from e
    if table.num_rows == 0:
        raise TeacherError(f"{name}: no records")
    return table


def _stored_grades(data: Any) -> int | None:
    """K recorded with the data (Arrow/Parquet schema metadata), looked up before labels are checked against
    the teacher's K, so a mismatch is reported as such rather than as out-of-range labels."""
    from .records import GRADES_KEY, detect_format, num_grades

    if isinstance(data, pa.Table):
        return num_grades(data)
    if isinstance(data, (str, os.PathLike)) and Path(data).is_file() and Path(data).stat().st_size:
        try:
            if detect_format(data) != "parquet":
                return None
            import pyarrow.parquet as pq

            raw = (pq.read_schema(data).metadata or {}).get(GRADES_KEY)
        except (ValueError, OSError, pa.ArrowException):
            return None  # the reader reports unreadable files with a better message
        return int(raw) if raw is not None and raw.isdigit() else None
    return None


def pair_texts(table: pa.Table, spec: AssemblySpec) -> list[str]:
    return assemble_pairs(table.column("query").to_pylist(), table, spec)


def query_groups(table: pa.Table) -> np.ndarray:
    """One integer per row naming its query, by the same identity the evaluation ranks within."""
    from .baselines import query_keys

    _, inverse = np.unique(query_keys(table), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def train_weights(table: pa.Table) -> np.ndarray | None:
    """Per-pair loss weights scaled to mean 1 (so the learning rate means what it does unweighted), or
    None when no pair carries a `weight`."""
    from .baselines import record_weights

    w = record_weights(table)
    return None if w is None else w / w.mean()


def label_indices(table: pa.Table) -> np.ndarray:
    """Grades 1..K as class indices 0..K-1."""
    return table.column("label").to_numpy(zero_copy_only=False).astype(np.int64) - 1


# ------------------------------------------------------------------------------- model build and weights


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
        from .pooled import MeanPooledClassifier

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


# ---------------------------------------------------------------------------------------- the worker


def _shuffled_buckets(
    chunks: Iterable[np.ndarray], lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Length-bucketed batches within each chunk of indices, in a shuffled order."""
    batches: list[np.ndarray] = []
    for idx in chunks:
        widest = int(lengths[idx].max())
        for b in bucket_batches(
            lengths[idx], max_tokens=batch_size * max(widest, 1), max_batch_size=batch_size
        ):
            batches.append(idx[b])
    return [batches[i] for i in rng.permutation(len(batches))]


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled, length-bucketed batches; the same on every worker and on a resumed run (seeded by epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * BUCKET_WINDOW_BATCHES
    chunks = (order[start : start + window] for start in range(0, len(order), window))
    return _shuffled_buckets(chunks, lengths, batch_size, rng)


def query_batches(
    lengths: np.ndarray, groups: np.ndarray, batch_size: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """Shuffled batches that each hold pairs of one query only (length-bucketed within the query), for
    the pairwise loss; like `epoch_batches`, the same on every worker and on a resumed run."""
    if len(groups) != len(lengths):
        raise ValueError(f"groups: expected {len(lengths)} entries, one per pair, got {len(groups)}")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    # a stable sort keeps each query's pairs in their shuffled order
    order = order[np.argsort(groups[order], kind="stable")]
    ends = np.flatnonzero(np.diff(groups[order])) + 1
    return _shuffled_buckets(np.split(order, ends), lengths, batch_size, rng)


def plan_batches(
    lengths: np.ndarray, groups: np.ndarray, plan: Mapping[str, Any], epoch: int
) -> list[np.ndarray]:
    batch_size, seed = int(plan["batch_size"]), int(plan["seed"])
    if float(plan["pairwise_weight"]) > 0:
        return query_batches(lengths, groups, batch_size, seed, epoch)
    return epoch_batches(lengths, batch_size, seed, epoch)


def worker_batches(batches: list[np.ndarray], rank: int, world: int) -> list[np.ndarray]:
    """Every worker takes the same number of batches; DDP hangs if one does an extra step."""
    per_worker = len(batches) // world
    return batches[rank::world][:per_worker]


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


# ---------------------------------------------------------------------------------------- the driver


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


# --------------------------------------------------------------------------------------------- loading


@dataclass
class TeacherPredictor:
    """A trained teacher: grade probabilities for (query, item) records through an inference backend."""

    path: Path
    manifest: dict[str, Any]
    spec: AssemblySpec
    backend: Any
    grades: int = field(init=False)

    def __post_init__(self) -> None:
        self.grades = int(self.manifest["grades"])

    def pair_texts(self, records: Any) -> list[str]:
        """The assembled cross-encoder inputs, exactly as in training."""
        if isinstance(records, pa.RecordBatch):
            records = pa.Table.from_batches([records])
        if isinstance(records, pa.Table):
            if "query" not in records.column_names:
                raise ValueError(
                    f"records: the table has no 'query' column; its columns are {records.column_names}"
                )
            return assemble_pairs(records.column("query").to_pylist(), records, self.spec)
        if isinstance(records, (list, tuple)):
            queries = []
            for i, r in enumerate(records):
                if not isinstance(r, Mapping) or not isinstance(r.get("query"), str):
                    raise ValueError(f"records[{i}]: expected a dict with a 'query' string")
                queries.append(r["query"])
            return assemble_pairs(queries, list(records), self.spec)
        raise TypeError(f"records: expected a pyarrow Table or a list of dicts, got {type(records).__name__}")

    def predict_proba(self, records: Any) -> np.ndarray:
        """`[n, grades]` float32 probabilities of grades 1..K, one row per record, in order."""
        return self.backend.predict_proba(self.pair_texts(records))

    def predict_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities for pair texts that were already assembled (e.g. by `pair_texts`)."""
        return self.backend.predict_proba(list(texts))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled final hidden states of arbitrary texts (queries or items), `[n, hidden]` float32."""
        if not hasattr(self.backend, "embed"):
            raise ValueError(f"backend {type(self.backend).__name__} cannot embed; load with backend='hf'")
        return self.backend.embed(list(texts))


def load_teacher(path: str | os.PathLike[str], backend: str = "hf", **backend_kw: Any) -> TeacherPredictor:
    """Load a teacher directory written by `train_teacher`; `backend_kw` go to the backend (device, ...)."""
    root = Path(path)
    manifest = read_manifest(root)
    if manifest["kind"] != KIND:
        raise ModelDirError(f"{root}: holds a {manifest['kind']!r}, not a teacher")
    for key in ("assembly_spec", "max_length"):
        if key not in manifest:
            raise ModelDirError(f"{root / 'pinrel.json'}: missing {key!r}; was it written by train_teacher?")
    try:
        spec = AssemblySpec.from_dict(manifest["assembly_spec"])
    except (TypeError, ValueError) as e:
        raise ModelDirError(f"{root / 'pinrel.json'}: bad assembly_spec ({e})") from e
    backend_kw.setdefault("max_length", manifest["max_length"])
    engine = get_backend(backend, root / MODEL_DIR, **backend_kw)
    if int(engine.grades) != int(manifest["grades"]):
        raise ModelDirError(
            f"{root}: the model has {engine.grades} outputs but pinrel.json says {manifest['grades']}"
        )
    return TeacherPredictor(root, manifest, spec, engine)


__all__ = [
    "TeacherConfig",
    "TeacherError",
    "TeacherPredictor",
    "load_teacher",
    "train_teacher",
]
