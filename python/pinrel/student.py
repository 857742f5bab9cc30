"""The student: a compact (query, item) scorer distilled from the teacher's soft labels.

Inputs per pair: hashed word and char n-grams of the query and of the assembled item text (one
`nn.EmbeddingBag` per side, summing the hashed values as weights), the Rust query-item match features
(BM25, overlap, ...), and optionally a precomputed fixed-size vector per pair.  They are combined as
`[q, i, q*i, |q-i|, match, extra]` and fed to an MLP with a K-way output.  Char n-grams make it work
in any script without a vocabulary.

A trained student is a self-contained directory: `model.safetensors` plus `pinrel.json` (hasher
parameters, assembly spec, sizes).  `Scorer` is the in-process API; it must stay importable without
Ray, because serving replicas and notebooks load it on their own.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .assembly import ITEM_TEXT_FIELDS, AssemblySpec, assemble
from .checks import check_int
from .devices import resolve_device
from .features import MATCH_FEATURE_NAMES, FeatureHasher
from .io import atomic_write_text, make_shareable
from .metrics import check_grades
from .predictor import MANIFEST, RUN_DIR, ModelDirError, check_model_out, manifest_text, read_manifest
from .records import is_list_type, list_lengths

__all__ = [
    "KIND",
    "WEIGHTS",
    "Features",
    "Scorer",
    "Scores",
    "StudentConfig",
    "StudentModel",
    "feature_names",
    "featurize",
    "load_student",
    "save_student",
]

KIND = "student"
WEIGHTS = "model.safetensors"

# Pairs hashed and scored per forward in predict_proba: big enough to amortise call overhead, small
# enough that a million-row table does not build one huge CSR matrix.
_CHUNK_PAIRS = 65536


# ------------------------------------------------------------------------------------------- config


# The hasher's limit (its indices are int32), and bounds that keep a typo from allocating terabytes.
MAX_FEATURES = 2**31 - 1
MAX_WIDTH = 65_536
MAX_PARAMETERS = 2**32


@dataclass(frozen=True)
class StudentConfig:
    """Sizes of a student; `n_features` must equal the hasher's (the embedding tables' rows)."""

    grades: int
    n_features: int = 2**18
    embed_dim: int = 64
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    extra_column: str | None = None  # a fixed-size vector column per pair (e.g. `pinrel embed` output)
    extra_dim: int = 0

    def __post_init__(self) -> None:
        check_grades(self.grades)
        check_int(self.n_features, "n_features", 1, MAX_FEATURES)
        check_int(self.embed_dim, "embed_dim", 1, MAX_WIDTH)
        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, (list, tuple)):
            raise ValueError(f"hidden: expected a list of layer sizes, got {self.hidden!r}")
        object.__setattr__(
            self,
            "hidden",
            tuple(check_int(h, f"hidden[{i}]", 1, MAX_WIDTH) for i, h in enumerate(self.hidden)),
        )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")
        if self.extra_column is not None and (
            not isinstance(self.extra_column, str) or not self.extra_column
        ):
            raise ValueError(f"extra_column: expected a column name or None, got {self.extra_column!r}")
        extra = check_int(self.extra_dim, "extra_dim", 0, MAX_WIDTH)
        if (self.extra_column is None) != (extra == 0):
            raise ValueError(
                f"extra_column={self.extra_column!r} and extra_dim={extra} disagree: "
                "a precomputed vector column needs its size, and a size needs a column"
            )
        widths = [self.input_dim, *self.hidden, self.grades]
        params = 2 * self.n_features * self.embed_dim + sum(a * b + b for a, b in itertools.pairwise(widths))
        if params > MAX_PARAMETERS:
            raise ValueError(
                f"the student would have {params:,} parameters ({params * 4 / 2**30:,.0f} GiB in fp32), "
                f"more than {MAX_PARAMETERS:,}: lower n_features, embed_dim or hidden"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudentConfig:
        if not isinstance(d, Mapping):
            raise TypeError(f"student config: expected a mapping, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"student config: unknown key(s) {unknown}; known: {sorted(known)}")
        if "grades" not in d:
            raise ValueError("student config: 'grades' is required")
        return cls(**dict(d))

    @property
    def input_dim(self) -> int:
        return 4 * self.embed_dim + len(MATCH_FEATURE_NAMES) + self.extra_dim


def feature_names(config: StudentConfig) -> list[str]:
    """The input blocks of the MLP in order; stored in the manifest so a changed core is detected."""
    names = ["query_ngrams", "item_ngrams", "query*item", "|query-item|"]
    names += [f"match:{n}" for n in MATCH_FEATURE_NAMES]
    if config.extra_column is not None:
        names.append(f"extra:{config.extra_column}")
    return names


# -------------------------------------------------------------------------------------------- model


class StudentModel(nn.Module):
    """Two hashed bags of n-grams, the match features and an MLP; returns logits `[n, grades]`."""

    match_mean: torch.Tensor
    match_std: torch.Tensor

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        if not isinstance(config, StudentConfig):
            raise TypeError(f"config: expected StudentConfig, got {type(config).__name__}")
        self.config = config
        self.query_bag = nn.EmbeddingBag(config.n_features, config.embed_dim, mode="sum")
        self.item_bag = nn.EmbeddingBag(config.n_features, config.embed_dim, mode="sum")
        # Bags sum l2-normalised hashed values, so a small init keeps the first products near unit scale.
        for bag in (self.query_bag, self.item_bag):
            nn.init.normal_(bag.weight, std=1.0 / math.sqrt(config.embed_dim))
        n_match = len(MATCH_FEATURE_NAMES)
        # BM25 and the log word counts are unbounded; standardising with training statistics (saved
        # with the weights) keeps them on the scale of the other inputs.
        self.register_buffer("match_mean", torch.zeros(n_match))
        self.register_buffer("match_std", torch.ones(n_match))
        layers: list[nn.Module] = []
        width = config.input_dim
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(config.dropout)]
            width = h
        layers.append(nn.Linear(width, config.grades))
        self.mlp = nn.Sequential(*layers)

    def set_match_scaling(self, match: np.ndarray) -> None:
        """Standardise match features with statistics of `match` (`[n, n_match]`, the training pairs)."""
        m = np.asarray(match, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != len(MATCH_FEATURE_NAMES) or m.shape[0] == 0:
            raise ValueError(
                f"match: expected a non-empty [n, {len(MATCH_FEATURE_NAMES)}] array, got {m.shape}"
            )
        std = m.std(axis=0)
        # A constant feature (std 0) would divide by zero; leave it unscaled instead.
        std = np.where(std > 1e-6, std, 1.0)
        with torch.no_grad():
            self.match_mean.copy_(torch.from_numpy(m.mean(axis=0)))
            self.match_std.copy_(torch.from_numpy(std))

    def forward(
        self,
        q_idx: torch.Tensor,
        q_off: torch.Tensor,
        q_w: torch.Tensor,
        i_idx: torch.Tensor,
        i_off: torch.Tensor,
        i_w: torch.Tensor,
        match: torch.Tensor,
        q_rows: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = self.query_bag(q_idx, q_off, per_sample_weights=q_w)
        if q_rows is not None:
            # Scoring many items for one query hashes and embeds the query once, then broadcasts it.
            q = q.index_select(0, q_rows)
        i = self.item_bag(i_idx, i_off, per_sample_weights=i_w)
        m = (match - self.match_mean) / self.match_std
        parts = [q, i, q * i, (q - i).abs(), m]
        if extra is not None:
            parts.append(extra)
        return self.mlp(torch.cat(parts, dim=1))


# --------------------------------------------------------------------------------------- features


@dataclass(frozen=True)
class Features:
    """Model inputs for n pairs: hashed CSR rows per side, match features, optional extra vectors.

    `q_rows` maps each pair to a row of `query` (None: one query row per pair), so a query scored
    against many items is hashed once.
    """

    query: sp.csr_matrix
    item: sp.csr_matrix
    match: npt.NDArray[np.float32]
    extra: npt.NDArray[np.float32] | None = None
    q_rows: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def take(self, rows: npt.NDArray[np.int64]) -> Features:
        """The pairs at `rows` (minibatches during training); query rows are expanded per pair."""
        query = self.query[self.q_rows[rows]] if self.q_rows is not None else self.query[rows]
        extra = self.extra[rows] if self.extra is not None else None
        return Features(query=query, item=self.item[rows], match=self.match[rows], extra=extra)

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Keyword arguments of `StudentModel.forward`; no copies on CPU beyond the index widening."""
        out: dict[str, torch.Tensor] = {}
        for prefix, m in (("q", self.query), ("i", self.item)):
            # EmbeddingBag wants indices and offsets of one dtype; int64 is safe for any batch size.
            out[f"{prefix}_idx"] = torch.from_numpy(m.indices.astype(np.int64, copy=False)).to(device)
            out[f"{prefix}_off"] = torch.from_numpy(m.indptr[:-1].astype(np.int64, copy=False)).to(device)
            out[f"{prefix}_w"] = torch.from_numpy(np.ascontiguousarray(m.data, dtype=np.float32)).to(device)
        out["match"] = torch.from_numpy(np.ascontiguousarray(self.match, dtype=np.float32)).to(device)
        if self.q_rows is not None:
            out["q_rows"] = torch.from_numpy(self.q_rows).to(device)
        if self.extra is not None:
            out["extra"] = torch.from_numpy(np.ascontiguousarray(self.extra, dtype=np.float32)).to(device)
        return out


def _hash(hasher: FeatureHasher, texts: list[str]) -> sp.csr_matrix:
    # The core refuses empty input (usually a caller bug); here an empty call is a valid no-op.
    if not texts:
        return sp.csr_matrix((0, hasher.n_features), dtype=np.float32)
    return hasher.transform(texts)


def _match(hasher: FeatureHasher, queries: list[str], texts: list[str]) -> npt.NDArray[np.float32]:
    if not texts:
        return np.zeros((0, len(MATCH_FEATURE_NAMES)), dtype=np.float32)
    return hasher.transform_pairs(queries, texts)


def _check_text(text: Any, name: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name}: expected str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        # The core would refuse it too, but as `texts[i]` of a list this caller never built.
        raise ValueError(f"{name}: not valid Unicode ({e.reason} at {e.start})") from None
    return text


def _check_queries(queries: Any, name: str = "queries") -> list[str]:
    if isinstance(queries, (str, bytes)) or not isinstance(queries, (list, tuple)):
        raise TypeError(f"{name}: expected a list of strings, got {type(queries).__name__}")
    return [_check_text(q, f"{name}[{i}]") for i, q in enumerate(queries)]


def _is_arrow(items: Any) -> bool:
    return isinstance(items, (pa.Table, pa.RecordBatch))


def _num_items(items: Any, name: str) -> int:
    if _is_arrow(items):
        return int(items.num_rows)
    if isinstance(items, (list, tuple)):
        for i, it in enumerate(items):
            if not isinstance(it, Mapping):
                raise TypeError(f"{name}[{i}]: expected a dict of item fields, got {type(it).__name__}")
        return len(items)
    raise TypeError(f"{name}: expected a list of dicts or a pyarrow Table, got {type(items).__name__}")


def _assemble(items: Any, spec: AssemblySpec, n: int, name: str = "items") -> list[str]:
    if n == 0:
        return []
    if _is_arrow(items) and not any(c in ITEM_TEXT_FIELDS for c in items.column_names):
        raise ValueError(f"{name}: the table has none of the item fields {list(ITEM_TEXT_FIELDS)}")
    try:
        return assemble(items if _is_arrow(items) else list(items), spec)
    except (TypeError, ValueError) as e:
        # The core names the list it was given, `items[1]["title"]`; the caller knows it by `name`.
        text = str(e)
        if name == "items" or not text.startswith("items"):
            raise
        raise type(e)(name + text.removeprefix("items")) from None


def _vectors_from_arrow(col: pa.Array | pa.ChunkedArray, name: str) -> npt.NDArray[np.float32]:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not is_list_type(col.type):
        raise ValueError(f"{name}: expected a list<float> column, got {col.type}")
    if col.null_count:
        raise ValueError(f"{name}: row {_first_null(col)} is null; every pair needs a vector")
    lengths = list_lengths(col)
    if len(col) and (lengths != lengths[0]).any():
        bad = int(np.argmax(lengths != lengths[0]))
        raise ValueError(f"{name}: row {bad} has {lengths[bad]} values, row 0 has {lengths[0]}")
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    dim = int(lengths[0]) if len(col) else 0
    return values.reshape(len(col), dim)


def _first_null(col: pa.Array | pa.ChunkedArray) -> int:
    return int(np.argmax(col.is_null().to_numpy(zero_copy_only=False)))


def _extra(items: Any, column: str, dim: int, n: int, name: str) -> npt.NDArray[np.float32]:
    """The precomputed vector of every item as `[n, dim]` float32, checked for shape and NaN."""
    if _is_arrow(items):
        if column not in items.column_names:
            raise ValueError(f"{name}: the model needs the vector column {column!r}, which the table lacks")
        out = _vectors_from_arrow(items.column(column), f"{name}.{column}")
    else:
        rows = []
        for i, it in enumerate(items):
            v = it.get(column)
            if v is None:
                raise ValueError(
                    f"{name}[{i}]: the model needs the vector field {column!r}, which is missing"
                )
            rows.append(v)
        try:
            out = np.asarray(rows, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, dim), np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{name}: field {column!r} must hold equal-length lists of numbers ({e})"
            ) from None
    if out.shape != (n, dim):
        raise ValueError(
            f"{name}: field {column!r} has vectors of size {out.shape[1]}, the model expects {dim}"
        )
    if not np.isfinite(out).all():
        bad = int(np.argmax(~np.isfinite(out).all(axis=1)))
        raise ValueError(f"{name}[{bad}]: field {column!r} holds NaN or infinite values")
    return out


def featurize(
    hasher: FeatureHasher,
    spec: AssemblySpec | None,
    queries: Sequence[str],
    items: Sequence[Mapping[str, Any]] | pa.Table,
    extra_column: str | None = None,
    extra_dim: int = 0,
) -> Features:
    """Features of the pairs `(queries[j], items[j])`; item text is `assemble(items, spec)`."""
    if not isinstance(hasher, FeatureHasher):
        raise TypeError(f"hasher: expected pinrel.FeatureHasher, got {type(hasher).__name__}")
    if spec is not None and not isinstance(spec, AssemblySpec):
        raise TypeError(f"spec: expected pinrel.AssemblySpec or None, got {type(spec).__name__}")
    qs = _check_queries(queries)
    n = _num_items(items, "items")
    if n != len(qs):
        raise ValueError(f"queries and items differ in length: {len(qs)} queries, {n} items")
    texts = _assemble(items, spec or AssemblySpec(), n)
    extra = _extra(items, extra_column, extra_dim, n, "items") if extra_column else None
    return Features(
        query=_hash(hasher, qs),
        item=_hash(hasher, texts),
        match=_match(hasher, qs, texts),
        extra=extra,
    )


def _grouped_features(
    hasher: FeatureHasher,
    spec: AssemblySpec,
    queries: list[str],
    item_lists: list[Any],
    extra: tuple[str, int] | None,
    names: list[str],
) -> Features:
    """Features for every (query, item) of several queries at once, each query hashed once."""
    texts: list[str] = []
    pair_queries: list[str] = []
    q_rows: list[npt.NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)]
    extras: list[npt.NDArray[np.float32]] = [np.zeros((0, extra[1] if extra else 0), dtype=np.float32)]
    for j, (q, items) in enumerate(zip(queries, item_lists, strict=True)):
        name = names[j]
        n = _num_items(items, name)
        texts += _assemble(items, spec, n, name)
        pair_queries += [q] * n
        q_rows.append(np.full(n, j, dtype=np.int64))
        if extra is not None:
            extras.append(_extra(items, extra[0], extra[1], n, name))
    return Features(
        query=_hash(hasher, queries),
        item=_hash(hasher, texts),
        match=_match(hasher, pair_queries, texts),
        extra=np.concatenate(extras) if extra is not None else None,
        q_rows=np.concatenate(q_rows),
    )


# ----------------------------------------------------------------------------------------- artifact


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # DDP wraps the model as `.module`; the artifact always stores the bare model's names.
    bare = getattr(model, "module", model)
    return {k: v.detach().to("cpu").contiguous() for k, v in bare.state_dict().items()}


def _check_parts(model: object, hasher: object, spec: object) -> StudentModel:
    """A student is a model, the hasher that made its features, and the assembly spec of its text."""
    if not isinstance(model, StudentModel):
        raise TypeError(f"model: expected a StudentModel, got {type(model).__name__}")
    if not isinstance(hasher, FeatureHasher):
        raise TypeError(f"hasher: expected pinrel.FeatureHasher, got {type(hasher).__name__}")
    if not isinstance(spec, AssemblySpec):
        raise TypeError(f"spec: expected pinrel.AssemblySpec, got {type(spec).__name__}")
    if hasher.n_features != model.config.n_features:
        raise ValueError(
            f"hasher has n_features={hasher.n_features} but the model's bags have "
            f"{model.config.n_features} rows"
        )
    return model


def save_student(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    hasher: FeatureHasher,
    spec: AssemblySpec,
    *,
    metrics: Mapping[str, Any] | None = None,
    teacher: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    run: Mapping[str, Any] | None = None,
) -> Path:
    """Write a student artifact (`model.safetensors` + `pinrel.json`) into `out_dir`.

    Files are built in a temp dir inside `out_dir` and renamed into place; the old manifest goes
    first and the new one last, so a reader never sees a manifest beside weights of another model.
    Other files in `out_dir` (e.g. the training run's `_ray/` state) are left alone; a directory
    holding anything but a student or a run is refused.
    """
    from . import __version__

    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir).strip():
        raise ValueError(f"out_dir: expected a directory path, got {out_dir!r}")
    for name, value in (("metrics", metrics), ("teacher", teacher), ("run", run)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"{name}: expected a mapping, got {type(value).__name__}")
    if history is not None and (
        isinstance(history, (str, bytes))
        or not isinstance(history, Sequence)
        or not all(isinstance(h, Mapping) for h in history)
    ):
        raise TypeError("history: expected a list of mappings (one per epoch)")
    bare = _check_parts(getattr(model, "module", model), hasher, spec)
    config = bare.config
    manifest = {
        "kind": KIND,
        "version": __version__,
        "grades": config.grades,
        "hasher": hasher.get_params(),
        "assembly_spec": spec.to_dict(),
        "config": config.to_dict(),
        "features": feature_names(config),
        # manifest_text turns undefined (NaN) metrics into null.
        "metrics": dict(metrics or {}),
        "teacher": dict(teacher or {}),
        "history": list(history or []),
    }
    if run is not None:
        # What a distiller rerun compares against once the training run's checkpoints are deleted.
        manifest["run"] = dict(run)
    text = manifest_text(manifest)  # a value JSON cannot hold fails here, before any file is made
    out = Path(out_dir)
    check_model_out(out, KIND, RUN_DIR, "out_dir")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".student-", dir=out))
    try:
        save_file(_state_dict(bare), str(tmp / WEIGHTS), metadata={"format": "pt", "pinrel": KIND})
        make_shareable(tmp / WEIGHTS)
        atomic_write_text(tmp / MANIFEST, text)
        (out / MANIFEST).unlink(missing_ok=True)
        os.replace(tmp / WEIGHTS, out / WEIGHTS)
        os.replace(tmp / MANIFEST, out / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _manifest_part(manifest: dict[str, Any], key: str, where: Path) -> Any:
    if key not in manifest:
        raise ModelDirError(f"{where}: the student manifest lacks {key!r}")
    return manifest[key]


def _check_weights(
    weights: dict[str, torch.Tensor], model: StudentModel, hasher: FeatureHasher, where: Path
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ModelDirError(
            f"{where}: weights do not fit the manifest (missing {missing}, unexpected {unexpected})"
        )
    for bag in ("query_bag.weight", "item_bag.weight"):
        rows = int(weights[bag].shape[0])
        if rows != hasher.n_features:
            raise ModelDirError(
                f"{where}: hasher mismatch: the manifest's hasher has n_features={hasher.n_features} but "
                f"{bag} has {rows} rows; the weights were trained with another hasher"
            )
    for name, t in expected.items():
        if tuple(weights[name].shape) != tuple(t.shape):
            raise ModelDirError(
                f"{where}: {name} has shape {tuple(weights[name].shape)}, the manifest's config implies "
                f"{tuple(t.shape)}"
            )


def load_student(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[StudentModel, FeatureHasher, AssemblySpec, dict[str, Any]]:
    """Model (eval mode), hasher, assembly spec and manifest of a student directory, all checked."""
    d = Path(path)
    manifest = read_manifest(d)
    where = d / MANIFEST
    if manifest["kind"] != KIND:
        raise ModelDirError(f"{where}: kind is {manifest['kind']!r}, expected {KIND!r}")
    try:
        hasher = FeatureHasher.from_params(_manifest_part(manifest, "hasher", where))
    except (TypeError, ValueError) as e:
        raise ModelDirError(f"{where}: bad hasher parameters: {e}") from None
    try:
        spec = AssemblySpec.from_dict(_manifest_part(manifest, "assembly_spec", where))
        config = StudentConfig.from_dict(_manifest_part(manifest, "config", where))
    except (TypeError, ValueError) as e:
        raise ModelDirError(f"{where}: {e}") from None
    if config.grades != manifest["grades"]:
        raise ModelDirError(f"{where}: grades={manifest['grades']} but config.grades={config.grades}")
    if _manifest_part(manifest, "features", where) != feature_names(config):
        raise ModelDirError(
            f"{where}: the model was trained on features {manifest['features']}, but this pinrel computes "
            f"{feature_names(config)}; retrain the student with this version"
        )
    if not (d / WEIGHTS).is_file():
        raise ModelDirError(f"{d}: no {WEIGHTS}")
    try:
        weights = load_file(str(d / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for torn or foreign files
        raise ModelDirError(f"{d / WEIGHTS}: cannot read ({e})") from None
    # Shapes first, on the meta device (no memory): a manifest claiming sizes its weights do not
    # have must not get to allocate them.
    with torch.device("meta"):
        _check_weights(weights, StudentModel(config), hasher, d / WEIGHTS)
    # A damaged or badly trained file would score every item NaN, with no error anywhere.
    for name, t in weights.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelDirError(f"{d / WEIGHTS}: {name} holds NaN or infinite values")
    if not bool((weights["match_std"] > 0).all()):
        raise ModelDirError(f"{d / WEIGHTS}: match_std must be > 0 (it divides the match features)")
    model = StudentModel(config)
    model.load_state_dict(weights, strict=True)
    model.to(resolve_device(device))
    model.eval()
    return model, hasher, spec, manifest


# ------------------------------------------------------------------------------------------- scorer


@dataclass(frozen=True)
class Scores:
    """Scores of n items: `scores` the expected grade (rank by it), `grades` argmax+1, `probs` [n, K]."""

    scores: npt.NDArray[np.float32]
    grades: npt.NDArray[np.int32]
    probs: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_dict(self) -> dict[str, list[Any]]:
        return {"scores": self.scores.tolist(), "grades": self.grades.tolist(), "probs": self.probs.tolist()}


@dataclass(frozen=True)
class _Parts:
    model: StudentModel
    hasher: FeatureHasher
    spec: AssemblySpec
    device: torch.device
    manifest: dict[str, Any] = field(repr=False)


class Scorer:
    """Scores (query, item) pairs with a trained student, in-process and thread-safe.

    Every call featurizes all its pairs in the Rust core (outside the GIL) and runs one forward
    under `torch.inference_mode`; the scorer keeps no per-call state, so threads can share one.
    """

    def __init__(
        self,
        model: StudentModel,
        hasher: FeatureHasher,
        spec: AssemblySpec,
        manifest: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        _check_parts(model, hasher, spec)
        dev = resolve_device(device)
        model = model.to(dev).eval()
        self._parts = _Parts(model, hasher, spec, dev, dict(manifest or {}))

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Scorer:
        """Load a student directory written by `pinrel distill` (or `save_student`)."""
        model, hasher, spec, manifest = load_student(path, device)
        return cls(model, hasher, spec, manifest, device)

    @property
    def grades(self) -> int:
        return self._parts.model.config.grades

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self._parts.manifest)

    @property
    def hasher(self) -> FeatureHasher:
        return self._parts.hasher

    @property
    def spec(self) -> AssemblySpec:
        return self._parts.spec

    def _extra_spec(self) -> tuple[str, int] | None:
        c = self._parts.model.config
        return (c.extra_column, c.extra_dim) if c.extra_column else None

    def _probs(self, features: Features) -> npt.NDArray[np.float32]:
        if len(features) == 0:
            return np.zeros((0, self.grades), dtype=np.float32)
        with torch.inference_mode():
            logits = self._parts.model(**features.tensors(self._parts.device))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def _scores(self, probs: npt.NDArray[np.float32]) -> Scores:
        grid = np.arange(1, self.grades + 1, dtype=np.float32)
        return Scores(scores=probs @ grid, grades=(probs.argmax(axis=1) + 1).astype(np.int32), probs=probs)

    def score(self, query: str, items: Sequence[Mapping[str, Any]] | pa.Table) -> Scores:
        """Score `items` (dicts of item fields or an Arrow table) for one query."""
        return self._score_groups([_check_text(query, "query")], [items], ["items"])[0]

    def score_batch(self, queries: Sequence[str], item_lists: Sequence[Any]) -> list[Scores]:
        """Score `item_lists[j]` for `queries[j]`, all pairs in one forward; one `Scores` per query."""
        qs = _check_queries(queries)
        if isinstance(item_lists, (str, bytes)) or not isinstance(item_lists, (list, tuple)):
            raise TypeError(f"item_lists: expected a list of item lists, got {type(item_lists).__name__}")
        if len(item_lists) != len(qs):
            raise ValueError(f"queries and item_lists differ in length: {len(qs)} and {len(item_lists)}")
        return self._score_groups(qs, list(item_lists), [f"item_lists[{j}]" for j in range(len(qs))])

    def _score_groups(self, queries: list[str], item_lists: list[Any], names: list[str]) -> list[Scores]:
        p = self._parts
        features = _grouped_features(p.hasher, p.spec, queries, item_lists, self._extra_spec(), names)
        probs = self._probs(features)
        assert features.q_rows is not None
        # q_rows is sorted (pairs are laid out query by query), so each query's pairs are one slice.
        bounds = np.searchsorted(features.q_rows, np.arange(len(queries) + 1))
        return [self._scores(probs[bounds[j] : bounds[j + 1]]) for j in range(len(queries))]

    def predict_proba(self, records: pa.Table | Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
        """`[n, grades]` probabilities for records (a `query` plus item fields each): the Predictor API."""
        queries, n = _record_queries(records)
        extra = self._extra_spec()
        out = np.zeros((n, self.grades), dtype=np.float32)
        for start in range(0, n, _CHUNK_PAIRS):
            stop = min(start + _CHUNK_PAIRS, n)
            rows: Any = records  # a Table or a list; both slice, in their own way
            part = rows.slice(start, stop - start) if _is_arrow(rows) else rows[start:stop]
            f = featurize(
                self._parts.hasher, self._parts.spec, queries[start:stop], part, *(extra or (None, 0))
            )
            out[start:stop] = self._probs(f)
        return out


def _record_queries(records: Any) -> tuple[list[str], int]:
    if _is_arrow(records):
        if "query" not in records.column_names:
            raise ValueError(f"records: no 'query' column (columns: {records.column_names})")
        if not any(c in ITEM_TEXT_FIELDS for c in records.column_names):
            raise ValueError(f"records: the table has none of the item fields {list(ITEM_TEXT_FIELDS)}")
        col = records.column("query")
        if col.null_count:
            raise ValueError(f"records: row {_first_null(col)} has no query")
        return _check_queries(col.to_pylist(), "records.query"), int(records.num_rows)
    if isinstance(records, (str, bytes)) or not isinstance(records, (list, tuple)):
        raise TypeError(f"records: expected a pyarrow Table or a list of dicts, got {type(records).__name__}")
    queries: list[str] = []
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise TypeError(f"records[{i}]: expected a dict, got {type(r).__name__}")
        queries.append(_check_text(r.get("query"), f"records[{i}]['query']"))
    return queries, len(queries)
