"""Loaders that turn public relevance datasets into pinrel records, plus the embedded sample generator.

Every loader takes an explicit path (no download, no guessing from the working directory) and returns a
`pinrel.records.SCHEMA` table with K recorded in its metadata.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import sample
from .crowdflower import load_crowdflower
from .esci import load_esci
from .stsb import load_stsb
from .wands import load_wands

__all__ = [
    "DATASETS",
    "load_crowdflower",
    "load_dataset",
    "load_esci",
    "load_stsb",
    "load_wands",
    "sample",
    "shared_data_dir",
]

SHARED_DATA_ENV = "PINREL_SHARED_DATA"

DATASETS: dict[str, Callable[..., pa.Table]] = {
    "crowdflower": load_crowdflower,
    "esci": load_esci,
    "stsb": load_stsb,
    "wands": load_wands,
}


def load_dataset(name: str, path: str | os.PathLike[str], **options: Any) -> pa.Table:
    """Load a dataset by its name in `DATASETS` (the CLI's `--dataset NAME`)."""
    if not isinstance(name, str):
        raise TypeError(f"dataset: expected a name such as 'crowdflower', got {name!r}")
    loader = DATASETS.get(name.lower())
    if loader is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return loader(path, **options)


def _repo_root() -> Path | None:
    # Only meaningful in a source checkout (python/pinrel/datasets/ under the repository); an installed
    # package has no repository above it, and then there is no shared data to find this way.
    for parent in Path(__file__).resolve().parents:
        if (parent / "Cargo.toml").is_file() and (parent / "python" / "pinrel").is_dir():
            return parent
    return None


def shared_data_dir() -> Path | None:
    """The folder of real public data kept beside the project, or None when there is none.

    Looks at $PINREL_SHARED_DATA first, then `../shared/data` next to the repository root.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            return p
    root = _repo_root()
    if root is not None:
        p = root.parent / "shared" / "data"
        if p.is_dir():
            return p
    return None
