"""Distillation settings: `DistillConfig` (what `train/distill.yaml` holds) and its defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..assembly import AssemblySpec
from ..checks import check_int, check_number
from ..features import FeatureHasher
from ..io import read_yaml_mapping
from ..student import StudentConfig

DEFAULT_HASHER: dict[str, Any] = {
    "n_features": 2**18,
    "word_ngrams": [1, 2],
    "char_ngrams": [3, 5],
    "seed": 0,
}
DEFAULT_STUDENT: dict[str, Any] = {"embed_dim": 64, "hidden": [256, 128], "dropout": 0.1}
_STUDENT_KEYS = ("embed_dim", "hidden", "dropout")
TRAINING_KEYS = ("batch_size", "lr", "weight_decay", "temperature", "label_weight", "seed")
# What keep_best can minimise: the dev loss (KL to the teacher's soft labels, the training objective)
# or the cross-entropy on the dev set's human grades.
KEEP_BEST_METRICS = ("dev_loss", "dev_ce")


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
    # Which dev metric keep_best minimises (KEEP_BEST_METRICS); None: dev_loss where the dev set has the
    # teacher's probabilities (label shards), dev_ce for a records file, which has human grades only.
    keep_best_by: str | None = None
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
        if self.keep_best_by is not None and self.keep_best_by not in KEEP_BEST_METRICS:
            raise ValueError(
                f"keep_best_by: expected one of {list(KEEP_BEST_METRICS)} or null, got {self.keep_best_by!r}"
            )
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


def as_config(config: DistillConfig | Mapping[str, Any] | None) -> DistillConfig:
    if config is None:
        return DistillConfig()
    if isinstance(config, DistillConfig):
        return config
    if isinstance(config, Mapping):
        return DistillConfig.from_dict(config)
    raise TypeError(f"config: expected DistillConfig, a mapping or None, got {type(config).__name__}")
