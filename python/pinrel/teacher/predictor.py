"""A trained teacher loaded for inference through a backend (hf or vLLM)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..assembly import AssemblySpec, assemble_pairs
from ..backends import get_backend
from ..predictor import ModelDirError, read_manifest
from .config import KIND, MODEL_DIR


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
