"""Distillation: train the student on the teacher's soft labels with Ray Train.

The driver validates the label shards (so bad input fails in seconds, not inside a worker), builds a
Ray Data pipeline over them and runs a `TorchTrainer`.  Each worker reads its shard of the data once,
featurizes it with the Rust hasher and trains a DDP replica; rank 0 evaluates the dev split and writes
a checkpoint (weights, optimizer state, epoch, history) every epoch.  A worker that dies is replaced
and the run continues from the last checkpoint; re-running with the same `out_dir` does the same.
Finally the driver turns the last checkpoint into a self-contained student directory.

Ray is imported inside functions only: `import pinrel.distill` stays cheap and Ray-free.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from . import checkpoints, labelset
from .assembly import ITEM_FIELDS, ITEM_TEXT_FIELDS, AssemblySpec
from .checks import check_int, check_number
from .features import FeatureHasher
from .io import (
    as_stored_json,
    atomic_write_text,
    hash_file_ends,
    json_safe,
    read_json_object,
    read_yaml_mapping,
)
from .killhook import KILL_ENV, kill_at_epoch, maybe_kill
from .predictor import RUN_DIR, check_model_out
from .raycluster import ray_session
from .records import is_list_type, list_lengths
from .student import KIND as STUDENT_KIND
from .student import MANIFEST, WEIGHTS, Features, StudentConfig, StudentModel, featurize, save_student

__all__ = [
    "DEFAULT_HASHER",
    "DEFAULT_STUDENT",
    "KILL_ENV",
    "DistillConfig",
    "LabelSet",
    "distill",
    "distill_loss",
    "load_config",
    "scan_labels",
]

_LOG = logging.getLogger(__name__)
RUN_NAME = "distill"  # fixed, so a second run with the same out_dir finds the first one's checkpoints
STORAGE = RUN_DIR
# The optimisation settings a student's weights depend on. `epochs` is not one: raising it trains further.
TRAINING_KEYS = ("batch_size", "lr", "weight_decay", "temperature", "label_weight", "seed")
RUN_FILE = "run.json"
CHECKPOINT_MODEL = "model.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.safetensors"

DEFAULT_HASHER: dict[str, Any] = {
    "n_features": 2**18,
    "word_ngrams": [1, 2],
    "char_ngrams": [3, 5],
    "seed": 0,
}
DEFAULT_STUDENT: dict[str, Any] = {"embed_dim": 64, "hidden": [256, 128], "dropout": 0.1}
_STUDENT_KEYS = ("embed_dim", "hidden", "dropout")
_PROB_TOLERANCE = 1e-3  # float32 soft labels written by another process sum to 1 only approximately
_EVAL_CHUNK = 8192


# ------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class DistillConfig:
    """Everything a distillation run needs besides its data; `train/distill.yaml` mirrors it."""

    labels: str | None = None  # used by the CLI and the job entrypoint when no --labels is given
    out: str | None = None
    workers: int = 2
    gpu: bool = False
    cpus_per_worker: float | None = None  # None: 1, or less on a small cluster (_cpus_per_worker)
    epochs: int = 5
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.0
    temperature: float = 2.0
    label_weight: float = 0.5
    # dev set: a fraction of queries held out, a label-shard dir or a records file, or None
    dev: float | str | None = 0.1
    seed: int = 0
    max_failures: int = 1
    checkpoints_to_keep: int = 2
    # With a dev set, the saved student is the epoch with the lowest dev loss (see _select_metric)
    # rather than the last: with hashed-feature tables of millions of weights and tens of
    # thousands of pairs, later epochs can overfit. False: the last epoch.
    keep_best: bool = True
    embedding_column: str | None = None
    hasher: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_HASHER))
    student: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_STUDENT))
    assembly: dict[str, Any] | None = None  # None: the label manifest's spec, else the default spec

    def __post_init__(self) -> None:
        for name in ("labels", "out", "embedding_column"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v):
                raise ValueError(f"{name}: expected a non-empty string or null, got {v!r}")
        check_int(self.workers, "workers", 1)
        for name in ("gpu", "keep_best"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        if self.cpus_per_worker is not None:
            check_number(self.cpus_per_worker, "cpus_per_worker", 0.0, lo_open=True)
        check_int(self.epochs, "epochs", 1)
        check_int(self.batch_size, "batch_size", 1)
        check_number(self.lr, "lr", 0.0, lo_open=True)
        check_number(self.weight_decay, "weight_decay", 0.0)
        check_number(self.temperature, "temperature", 0.0, lo_open=True)
        check_number(self.label_weight, "label_weight", 0.0)
        check_int(self.seed, "seed", 0)
        check_int(self.max_failures, "max_failures", 0)
        check_int(self.checkpoints_to_keep, "checkpoints_to_keep", 1)
        self._check_dev()
        self._check_sections()

    def _check_dev(self) -> None:
        dev = self.dev
        if dev is None or isinstance(dev, str):
            if isinstance(dev, str) and not dev:
                raise ValueError("dev: expected a fraction, a path or null, got ''")
            return
        check_number(dev, "dev", 0.0, 1.0, lo_open=True)
        if float(dev) >= 1.0:
            raise ValueError(f"dev: a held-out fraction must be below 1, got {dev!r}")

    def _check_sections(self) -> None:
        if not isinstance(self.hasher, Mapping):
            raise ValueError(f"hasher: expected a mapping, got {self.hasher!r}")
        FeatureHasher.from_params(dict(self.hasher))  # unknown keys and bad values fail here
        if not isinstance(self.student, Mapping):
            raise ValueError(f"student: expected a mapping, got {self.student!r}")
        unknown = sorted(set(self.student) - set(_STUDENT_KEYS))
        if unknown:
            raise ValueError(f"student: unknown key(s) {unknown}; known: {list(_STUDENT_KEYS)}")
        StudentConfig(grades=2, n_features=1, **dict(self.student))
        if self.assembly is not None:
            if not isinstance(self.assembly, Mapping):
                raise ValueError(f"assembly: expected a mapping or null, got {self.assembly!r}")
            AssemblySpec.from_dict(dict(self.assembly))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistillConfig:
        """A config from plain data (parsed YAML); sections merge over the defaults, unknown keys fail."""
        if not isinstance(d, Mapping):
            raise ValueError(f"config: expected a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; known: {sorted(known)}")
        kw = dict(d)
        for section, default in (("hasher", DEFAULT_HASHER), ("student", DEFAULT_STUDENT)):
            if isinstance(kw.get(section), Mapping):
                kw[section] = {**default, **kw[section]}
            elif section in kw and kw[section] is None:
                kw[section] = dict(default)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> DistillConfig:
        """A copy with the given non-None fields replaced (CLI flags over the file)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def load_config(path: str | os.PathLike[str]) -> DistillConfig:
    """Read a YAML distillation config; errors name the file."""
    p = Path(path)
    data = read_yaml_mapping(p)
    try:
        return DistillConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{p}: {e}") from None


def _as_config(config: DistillConfig | Mapping[str, Any] | None) -> DistillConfig:
    if config is None:
        return DistillConfig()
    if isinstance(config, DistillConfig):
        return config
    if isinstance(config, Mapping):
        return DistillConfig.from_dict(config)
    raise TypeError(f"config: expected DistillConfig, a mapping or None, got {type(config).__name__}")


# ------------------------------------------------------------------------------------ label shards


@dataclass(frozen=True)
class LabelSet:
    """Validated label shards: files, K, the columns to read, row counts and the labeler's manifest."""

    files: list[str]
    grades: int
    columns: list[str]
    rows: int
    labeled: int
    manifest: dict[str, Any]
    extra_dim: int = 0


def _columns(schema: pa.Schema, where: str, extra: str | None) -> list[str]:
    names = schema.names
    required = ["query", "probs"]
    missing = [c for c in required if c not in names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; label shards need query, item fields, probs")
    if "probs" in names and not is_list_type(schema.field("probs").type):
        raise ValueError(f"{where}: column 'probs' should be list<float>, got {schema.field('probs').type}")
    items = [c for c in ITEM_FIELDS if c in names]
    if not any(c in ITEM_TEXT_FIELDS for c in items):
        raise ValueError(f"{where}: none of the item fields {list(ITEM_TEXT_FIELDS)} is present")
    if extra is not None and extra not in names:
        raise ValueError(f"{where}: the embedding column {extra!r} is missing")
    optional = [c for c in ("label", "query_id", "weight") if c in names]
    return required + items + optional + ([extra] if extra else [])


def _check_probs(col: pa.ChunkedArray, k: int | None, where: str, offset: int) -> int:
    """K of this batch's soft labels, after checking lengths, finiteness and that rows sum to 1."""
    arr = col.combine_chunks()
    if arr.null_count:
        raise ValueError(f"{where}: row {offset + _first_true(arr.is_null())}: probs is null")
    lengths = list_lengths(arr)
    if len(arr) == 0:
        return k or 0
    want = int(lengths[0]) if k is None else k
    if (lengths != want).any():
        i = int(np.argmax(lengths != want))
        raise ValueError(f"{where}: row {offset + i}: probs has {lengths[i]} values, expected K={want}")
    if want < 2:
        raise ValueError(f"{where}: probs has {want} values per row; K must be >= 2")
    p = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(arr), want)
    bad = ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1) | (np.abs(p.sum(axis=1) - 1) > _PROB_TOLERANCE)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{where}: row {offset + i}: probs {p[i].tolist()} is not a probability vector "
            "(NaN, negative or not summing to 1)"
        )
    return want


def _first_true(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(np.argmax(mask.to_numpy(zero_copy_only=False)))


def _check_labels(col: pa.ChunkedArray, k: int, where: str, offset: int) -> int:
    if not (pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
        raise ValueError(f"{where}: column 'label' should hold integer grades, got {col.type}")
    if pa.types.is_null(col.type):
        return 0
    bad = pc.fill_null(pc.or_(pc.less(col, 1), pc.greater(col, k)), False)
    if pc.any(bad).as_py():
        i = _first_true(bad)
        raise ValueError(f"{where}: row {offset + i}: label {col[i].as_py()} is outside 1..{k}")
    return len(col) - col.null_count


def _check_weights(col: pa.ChunkedArray, where: str, offset: int) -> None:
    if pa.types.is_null(col.type):
        return
    from .records import first_bad_weight

    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise ValueError(f"{where}: column 'weight' should hold numbers, got {col.type}")
    i = first_bad_weight(col)
    if i is not None:
        value = float(col[i].as_py())
        raise ValueError(f"{where}: row {offset + i}: weight {value} should be a finite number > 0")


def _check_queries_col(col: pa.ChunkedArray, where: str, offset: int) -> None:
    if col.null_count:
        raise ValueError(f"{where}: row {offset + _first_true(col.is_null())}: query is null")


def _check_extra(col: pa.ChunkedArray, dim: int | None, where: str, offset: int) -> int:
    arr = col.combine_chunks()
    if not is_list_type(arr.type):
        raise ValueError(f"{where}: embedding column should be list<float>, got {arr.type}")
    if arr.null_count:
        raise ValueError(f"{where}: row {offset + _first_true(arr.is_null())}: embedding is null")
    lengths = list_lengths(arr)
    if len(arr) == 0:
        return dim or 0
    want = int(lengths[0]) if dim is None else dim
    if want < 1 or (lengths != want).any():
        i = int(np.argmax(lengths != want)) if want >= 1 else 0
        raise ValueError(f"{where}: row {offset + i}: embedding has {lengths[i]} values, expected {want}")
    v = arr.flatten().to_numpy(zero_copy_only=False)
    if not np.isfinite(v.astype(np.float64)).all():
        raise ValueError(f"{where}: the embedding column holds NaN or infinite values")
    return want


def scan_labels(labels_dir: str | os.PathLike[str], embedding_column: str | None = None) -> LabelSet:
    """Validate a directory of label shards without loading it whole; errors name file and row."""
    d = Path(labels_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"labels dir {str(d)!r} does not exist or is not a directory")
    manifest = labelset.read_manifest(d) or {}
    files = [str(p) for p in labelset.shard_files(d, manifest)]
    k: int | None = manifest.get("grades")
    first_cols: list[str] | None = None
    rows = labeled = 0
    extra_dim: int | None = None
    for f in files:
        pf = pq.ParquetFile(f)
        cols = _columns(pf.schema_arrow, f, embedding_column)
        if first_cols is None:
            first_cols = cols
        elif set(cols) != set(first_cols):
            raise ValueError(f"{f}: has columns {cols}, but {files[0]} has {first_cols}; shards must agree")
        for batch in pf.iter_batches(batch_size=65536, columns=cols):
            t = pa.Table.from_batches([batch])
            _check_queries_col(t.column("query"), f, rows)
            k = _check_probs(t.column("probs"), k, f, rows) or k
            if "label" in cols and k is not None:
                labeled += _check_labels(t.column("label"), k, f, rows)
            if "weight" in cols:
                _check_weights(t.column("weight"), f, rows)
            if embedding_column is not None:
                extra_dim = _check_extra(t.column(embedding_column), extra_dim, f, rows)
            rows += t.num_rows
    if rows == 0:
        raise ValueError(f"labels dir {str(d)!r}: the shards hold no rows")
    assert first_cols is not None and k is not None  # rows > 0, so probs fixed K
    return LabelSet(files, k, first_cols, rows, labeled, manifest, extra_dim or 0)


def _scan_dev_records(path: Path, grades: int, embedding_column: str | None) -> pa.Table:
    """A records file (CSV, JSONL, Parquet) as a dev set: human labels only, no teacher probs."""
    from .records import read_records, validate_records

    if embedding_column is not None:
        raise ValueError(
            f"dev: records files carry no {embedding_column!r} column; pass a label-shard dir instead"
        )
    table = read_records(path)
    validate_records(table, grades=grades)
    if table.num_rows == 0:
        raise ValueError(f"dev records {str(path)!r} hold no rows")
    return table


# ------------------------------------------------------------------------------------------- splits


def _dev_fraction_mask(queries: list[str], fraction: float) -> npt.NDArray[np.bool_]:
    """Which rows belong to the held-out queries: a hash of the query key, so splits are query-disjoint
    and the same on every worker, run and machine."""
    from .records import query_key

    cut = int(fraction * 2**64)
    keys = (
        int.from_bytes(hashlib.blake2b(query_key(q).encode("utf-8"), digest_size=8).digest(), "little")
        for q in queries
    )
    return np.fromiter((k < cut for k in keys), dtype=np.bool_, count=len(queries))


def _keep_split(batch: pa.Table, fraction: float, dev: bool) -> pa.Table:
    mask = _dev_fraction_mask(batch.column("query").to_pylist(), fraction)
    return batch.filter(pa.array(mask if dev else ~mask))


def _count_dev(files: list[str], fraction: float) -> int:
    n = 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=["query"]):
            n += int(_dev_fraction_mask(batch.column(0).to_pylist(), fraction).sum())
    return n


# -------------------------------------------------------------------------------------------- loss


def distill_loss(
    logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 2.0,
    label_weight: float = 0.5,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(loss, kl, ce)`: T² · KL(teacher_T || student_T) + label_weight · CE on human labels.

    `labels` are 0-based grade indices with -1 for pairs without a human label (excluded).  The T²
    factor keeps the soft-label gradients on the same scale whatever T is (Hinton et al., 2015).
    `weights` (per row, the records' `weight`) scale each human grade's CE; the teacher's soft labels
    stay unweighted, since the weight says how far the raters agreed, not the teacher.
    """
    if logits.ndim != 2 or teacher_probs.shape != logits.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and teacher_probs {tuple(teacher_probs.shape)} differ"
        )
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels: expected shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if weights is not None and weights.shape != labels.shape:
        raise ValueError(f"weights: expected shape ({logits.shape[0]},), got {tuple(weights.shape)}")
    t = check_number(temperature, "temperature", 0.0, lo_open=True)
    w = check_number(label_weight, "label_weight", 0.0)
    log_q = F.log_softmax(logits / t, dim=1)
    # Soft labels are probabilities, so the teacher's tempered distribution is softmax(log p / T).
    log_p = F.log_softmax(torch.log(teacher_probs.clamp_min(1e-8)) / t, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean() * (t * t)
    has_label = labels >= 0
    ce_rows = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
    if weights is not None:
        ce_rows = ce_rows * weights
    # Sum over labelled rows / their count: a batch without labels contributes 0, never NaN.
    ce = (ce_rows * has_label).sum() / has_label.sum().clamp_min(1)
    return kl + w * ce, kl.detach(), ce.detach()


# ------------------------------------------------------------------------------- worker-side data


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
    from .records import query_key

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


# ------------------------------------------------------------------------------------- checkpoints


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
    from .student import _state_dict

    save_file(_state_dict(model), str(d / CHECKPOINT_MODEL))
    tensors, meta = _optimizer_files(opt)
    save_file(tensors, str(d / CHECKPOINT_OPTIMIZER))
    state = {"epoch": epoch, "history": history, "fingerprint": fp, "optimizer": meta}
    checkpoints.write_state(d, state)


# ------------------------------------------------------------------------------------ training loop


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
    from .metrics import ndcg_at_k

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


def _train_loop(cfg: dict[str, Any]) -> None:
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


# ---------------------------------------------------------------------------------------- driver


def _fingerprint(student: StudentConfig, hasher: FeatureHasher, spec: AssemblySpec) -> str:
    blob = json.dumps([student.to_dict(), hasher.get_params(), spec.to_dict()], sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _assembly_spec(cfg: DistillConfig, manifest: dict[str, Any]) -> AssemblySpec:
    # The teacher saw text assembled with its spec; the student should see the same text.
    if cfg.assembly is not None:
        return AssemblySpec.from_dict(dict(cfg.assembly))
    spec = manifest.get("assembly_spec")
    if isinstance(spec, dict):
        try:
            return AssemblySpec.from_dict(spec)
        except ValueError as e:
            raise ValueError(f"label manifest: bad assembly_spec ({e})") from None
    return AssemblySpec()


def _cpus_per_worker(cfg: DistillConfig) -> float:
    import ray

    total = float(ray.cluster_resources().get("CPU", 0.0))
    if cfg.cpus_per_worker is not None:
        cpw = float(cfg.cpus_per_worker)
    else:
        # Ray Data's read tasks need a CPU beside the workers, or the first batch never arrives.
        spare = total - 1.0
        if spare <= 0:
            raise ValueError(f"the Ray cluster has {total:g} CPU(s); distillation needs at least 2")
        cpw = min(1.0, math.floor(spare / cfg.workers * 100) / 100)
        if cpw <= 0:
            raise ValueError(f"{cfg.workers} workers do not fit on a Ray cluster with {total:g} CPUs")
    if cpw * cfg.workers > total:
        raise ValueError(
            f"{cfg.workers} workers x {cpw:g} CPUs need {cpw * cfg.workers:g} CPUs; the cluster has {total:g}"
        )
    if cfg.gpu and float(ray.cluster_resources().get("GPU", 0.0)) < cfg.workers:
        raise ValueError(
            f"gpu=true needs {cfg.workers} GPUs; the Ray cluster has {ray.cluster_resources().get('GPU', 0)}"
        )
    return cpw


@dataclass(frozen=True)
class _Plan:
    labels: LabelSet
    dev_set: LabelSet | None  # a separate dir of label shards
    dev_table: pa.Table | None  # a records file (human labels only)
    dev_fraction: float | None  # held-out queries of the training shards
    train_rows: int
    dev_rows: int


def _plan(labels_dir: Path, cfg: DistillConfig) -> _Plan:
    labels = scan_labels(labels_dir, cfg.embedding_column)
    dev = cfg.dev
    if dev is None:
        return _Plan(labels, None, None, None, labels.rows, 0)
    if not isinstance(dev, str):
        n_dev = _count_dev(labels.files, float(dev))
        if n_dev == 0 or n_dev == labels.rows:
            raise ValueError(
                f"dev={dev}: holding out that fraction of queries leaves {n_dev} of {labels.rows} rows"
            )
        return _Plan(labels, None, None, float(dev), labels.rows - n_dev, n_dev)
    path = Path(dev)
    if path.is_dir():
        dev_set = scan_labels(path, cfg.embedding_column)
        if dev_set.grades != labels.grades:
            raise ValueError(
                f"dev shards have K={dev_set.grades} but the training shards have K={labels.grades}"
            )
        return _Plan(labels, dev_set, None, None, labels.rows, dev_set.rows)
    if not path.is_file():
        raise FileNotFoundError(f"dev: {dev!r} is neither a fraction, a label-shard dir nor a records file")
    table = _scan_dev_records(path, labels.grades, cfg.embedding_column)
    return _Plan(labels, None, table, None, labels.rows, table.num_rows)


def _datasets(plan: _Plan) -> dict[str, Any]:
    import ray.data

    cols = plan.labels.columns
    train = ray.data.read_parquet(plan.labels.files).select_columns(cols)
    out: dict[str, Any] = {"train": train}
    if plan.dev_fraction is not None:
        keep_train = functools.partial(_keep_split, fraction=plan.dev_fraction, dev=False)
        keep_dev = functools.partial(_keep_split, fraction=plan.dev_fraction, dev=True)
        out["train"] = train.map_batches(keep_train, batch_format="pyarrow")
        out["dev"] = (
            ray.data.read_parquet(plan.labels.files)
            .select_columns(cols)
            .map_batches(keep_dev, batch_format="pyarrow")
        )
    elif plan.dev_set is not None:
        out["dev"] = ray.data.read_parquet(plan.dev_set.files).select_columns(plan.dev_set.columns)
    elif plan.dev_table is not None:
        out["dev"] = ray.data.from_arrow(plan.dev_table)
    return out


def _data_fingerprint(plan: _Plan, dev: Any) -> str:
    """What the run trains and selects on: the label shards and the dev set (a fraction of the
    training queries, other shards or a records file), hashed by file name, size and ends."""
    h = hashlib.sha256()
    for f in plan.labels.files:
        hash_file_ends(h, Path(f))
    h.update(b"\0dev\0")
    if plan.dev_fraction is not None:
        h.update(repr(plan.dev_fraction).encode())
    elif plan.dev_set is not None:
        for f in plan.dev_set.files:
            hash_file_ends(h, Path(f))
    elif plan.dev_table is not None:
        hash_file_ends(h, Path(dev))
    return h.hexdigest()[:16]


def _check_run_dir(storage: Path, run: dict[str, Any], restart: bool) -> None:
    """A second run in the same out_dir resumes the first, unless the model settings, the data or
    the training settings changed: resuming then would train one student on two datasets, or two
    learning rates."""
    if restart and storage.exists():
        shutil.rmtree(storage)
    run_file = storage / RUN_FILE
    if run_file.is_file():
        old = read_json_object(run_file)
        if old is None:
            raise ValueError(
                f"{run_file}: unreadable or not a JSON object; pass restart=True (--restart) to start over"
            )
        if old.get("fingerprint") != run["fingerprint"]:
            raise ValueError(
                f"{storage.parent} holds a run with other model settings (hasher, sizes or assembly); "
                "pass restart=True (--restart) to start over, or use another out dir"
            )
        # Runs from before pinrel recorded their data or training settings resume as before.
        if old.get("data", run["data"]) != run["data"]:
            raise ValueError(
                f"{storage.parent} holds a run on other data (the label shards or the dev set changed); "
                "pass restart=True (--restart) to start over, or use another out dir"
            )
        training = old.get("training", run["training"])
        changed = sorted(k for k, v in run["training"].items() if training.get(k, v) != v)
        if changed:
            raise ValueError(
                f"{storage.parent} holds a run with other training settings ({', '.join(changed)} "
                "changed); pass restart=True (--restart) to start over, or use another out dir"
            )
    _check_checkpoint(storage)
    storage.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_file, json.dumps(run))


def _student_without_run(out: Path, storage: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a finished student in `out` whose Ray run is gone (deleted to save space).

    The same command returns it as it is; anything else is refused, since training would replace
    a student that may be serving. None when there is a run to resume, or no student."""
    if (storage / RUN_FILE).is_file() or not (out / MANIFEST).is_file():
        return None
    manifest = read_json_object(out / MANIFEST) or {}
    if manifest.get("run") == run and (out / WEIGHTS).is_file():
        return manifest
    what = "was distilled from other labels or settings" if "run" in manifest else "records no run to compare"
    raise ValueError(
        f"out dir: {str(out)!r} holds a student that {what}, and no run to resume; pass restart=True "
        "(--restart) to replace it, or use another out dir"
    )


def _check_checkpoint(storage: Path) -> None:
    """Read through the checkpoint a rerun resumes from: a damaged one is refused here, not by every
    worker in turn after Ray has started."""
    try:
        result = checkpoints.run_result(storage / RUN_NAME)
        if result is not None and result.checkpoint is not None:
            checkpoints.readable_state(result.checkpoint, [CHECKPOINT_MODEL, CHECKPOINT_OPTIMIZER])
    except checkpoints.CheckpointError as e:
        raise ValueError(f"{storage.parent}: {e}; pass restart=True (--restart) to start over") from e


def _select_metric(cfg: DistillConfig, plan: _Plan) -> str | None:
    """The dev metric keep_best minimises, or None to keep the last epoch.

    Label shards carry the teacher's probabilities, so the dev loss (KL to the teacher, the
    training objective) is available; a records file has human grades only, hence their
    cross-entropy.
    """
    if not cfg.keep_best or plan.dev_rows == 0:
        return None
    return "dev_ce" if plan.dev_table is not None else "dev_loss"


def _checkpoint_config(cfg: DistillConfig, plan: _Plan) -> Any:
    from ray.train import CheckpointConfig

    metric = _select_metric(cfg, plan)
    if metric is None:
        return CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep)
    # Ray keeps the best `num_to_keep` by the metric and, for restarts, always the latest as well.
    return CheckpointConfig(
        num_to_keep=cfg.checkpoints_to_keep,
        checkpoint_score_attribute=metric,
        checkpoint_score_order="min",
    )


def _trainer(cfg: DistillConfig, loop_cfg: dict[str, Any], plan: _Plan, storage: Path) -> Any:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    scaling = ScalingConfig(
        num_workers=cfg.workers, use_gpu=cfg.gpu, resources_per_worker={"CPU": _cpus_per_worker(cfg)}
    )
    run = RunConfig(
        name=RUN_NAME,
        storage_path=str(storage),
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=_checkpoint_config(cfg, plan),
    )
    return TorchTrainer(
        _train_loop,
        train_loop_config=loop_cfg,
        scaling_config=scaling,
        run_config=run,
        datasets=_datasets(plan),
        dataset_config=_data_config(),
    )


def _data_config() -> Any:
    """Every worker sees the whole dev set; the train split is the same from run to run.

    Without preserve_order, Ray Data hands each block to whichever split asks first, so the two
    workers' shards (and the student) changed between runs on the same labels. In order, Ray's
    splitter gives each block to the split with the fewest rows so far and ignores locality.
    """
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return DataConfig(datasets_to_split=["train"], execution_options=options)


def _finish(
    result: Any,
    out: Path,
    student: StudentConfig,
    hasher: FeatureHasher,
    spec: AssemblySpec,
    teacher: dict[str, Any],
    run: dict[str, Any],
) -> dict[str, Any]:
    select_metric = run["select"]
    if result.error is not None:
        raise RuntimeError(f"distillation failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError("distillation ended without a checkpoint")
    chosen = result.checkpoint
    if select_metric is not None:
        chosen = result.get_best_checkpoint(select_metric, "min") or result.checkpoint
    with result.checkpoint.as_directory() as d:
        # The latest checkpoint holds the whole run's history; the chosen one only its prefix.
        history = list(checkpoints.read_state(Path(d))["history"])
    with chosen.as_directory() as d:
        state = checkpoints.read_state(Path(d))
        model = StudentModel(student)
        model.load_state_dict(load_file(str(Path(d) / CHECKPOINT_MODEL)), strict=True)
    metrics = dict(state["history"][-1]) if state["history"] else {}
    metrics["selected_epoch"] = int(state["epoch"])
    # One headline number for summaries: agreement with the teacher's grade, on dev when there is one.
    agreement = metrics.get("dev_agreement")
    metrics["teacher_agreement"] = agreement if agreement is not None else metrics.get("train_agreement")
    save_student(out, model, hasher, spec, metrics=metrics, teacher=teacher, history=history, run=run)
    return {"model_dir": str(out), "epoch": int(state["epoch"]), "metrics": metrics, "history": history}


def distill(
    labels_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: DistillConfig | Mapping[str, Any] | None = None,
    *,
    restart: bool = False,
) -> dict[str, Any]:
    """Distill a student from label shards into `out_dir`; returns a summary (metrics, history).

    Ray state lives in `out_dir/_ray`: running again with the same `out_dir` resumes from the last
    checkpoint (raise `epochs` to train further); `restart=True` starts over.
    """
    cfg = _as_config(config)
    if not isinstance(restart, bool):
        raise TypeError(f"restart: expected bool, got {type(restart).__name__}")
    out = Path(out_dir)
    check_model_out(out, STUDENT_KIND, STORAGE, "out dir")
    plan = _plan(Path(labels_dir), cfg)
    if plan.train_rows < cfg.workers:
        raise ValueError(f"{plan.train_rows} training rows cannot feed {cfg.workers} workers")
    hasher = FeatureHasher.from_params(dict(cfg.hasher))
    spec = _assembly_spec(cfg, plan.labels.manifest)
    student = StudentConfig(
        grades=plan.labels.grades,
        n_features=hasher.n_features,
        extra_column=cfg.embedding_column,
        extra_dim=plan.labels.extra_dim,
        **dict(cfg.student),
    )
    fp = _fingerprint(student, hasher, spec)
    storage = out.resolve() / STORAGE
    run: dict[str, Any] = {
        "fingerprint": fp,
        "data": _data_fingerprint(plan, cfg.dev),
        "training": {k: getattr(cfg, k) for k in TRAINING_KEYS},
    }
    # What the saved student is, for a rerun after its Ray run is deleted; epochs may grow in a run.
    finished = as_stored_json({**run, "epochs": cfg.epochs, "select": _select_metric(cfg, plan)})
    kept = None if restart else _student_without_run(out, storage, finished)
    if kept is not None:
        metrics = kept.get("metrics") or {}
        summary = {
            "model_dir": str(out),
            "epoch": metrics.get("selected_epoch"),
            "metrics": metrics,
            "history": kept.get("history") or [],
        }
    else:
        _check_run_dir(storage, run, restart)
        loop_cfg = {
            "student": student.to_dict(),
            "hasher": hasher.get_params(),
            "assembly_spec": spec.to_dict(),
            "fingerprint": fp,
            "has_dev": plan.dev_rows > 0,
            "kill_at_epoch": kill_at_epoch(),
            "kill_marker": str(storage / "killed.marker"),
            "epochs": cfg.epochs,
            **run["training"],
        }
        teacher = {
            **plan.labels.manifest,
            "labels_dir": str(Path(labels_dir).resolve()),
            "rows": plan.labels.rows,
        }
        with ray_session():
            result = _trainer(cfg, loop_cfg, plan, storage).fit()
            summary = _finish(result, out, student, hasher, spec, teacher, finished)
    summary.update(
        train_rows=plan.train_rows,
        dev_rows=plan.dev_rows,
        labeled_rows=plan.labels.labeled,
        grades=plan.labels.grades,
    )
    return summary
