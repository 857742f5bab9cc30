"""The labels folder: what `pinrel label` writes and the distiller and `read_labels` read.

`pinrel label` writes `part-NNNNN.parquet` shards in pair order and a `manifest.json` that names the
teacher(s), the pairs, the grades and how many shards the run writes. A folder without a manifest is
a user's own soft labels: every Parquet file in it is a shard, in name order.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .io import listing
from .metrics import grades_problem

__all__ = ["MANIFEST_NAME", "read_manifest", "shard_files", "shard_index", "shard_indices", "shard_path"]

MANIFEST_NAME = "manifest.json"
_SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")


def shard_path(out: str | os.PathLike[str], index: int) -> Path:
    return Path(out) / f"part-{index:05d}.parquet"


def shard_index(name: str) -> int | None:
    """The index of a shard file name, or None for any other name."""
    m = _SHARD_RE.match(name)
    return int(m.group(1)) if m else None


def shard_indices(d: Path) -> list[int]:
    """The indices of the shards present in `d`, sorted."""
    return sorted(i for p in d.iterdir() if (i := shard_index(p.name)) is not None)


def read_manifest(d: Path) -> dict[str, Any] | None:
    """The manifest of labels folder `d`, with the keys readers rely on checked; None if it has none."""
    f = d / MANIFEST_NAME
    if not f.is_file():
        return None
    try:
        manifest = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{f}: expected a JSON object, got {type(manifest).__name__}")
    kind = manifest.get("kind")
    if kind is not None and kind != "labels":
        raise ValueError(f"{f}: kind is {kind!r}; this is not a labels folder")
    k = manifest.get("grades")
    if k is not None and (problem := grades_problem(k)) is not None:
        raise ValueError(f"{f}: 'grades': {problem}")
    n = manifest.get("shards")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"{f}: 'shards' should be an integer >= 0, got {n!r}")
    return manifest


def shard_files(d: Path, manifest: dict[str, Any] | None, allow_partial: bool = False) -> list[Path]:
    """The shards of folder `d` to read, in pair order.

    A folder whose manifest counts its shards holds exactly those: a missing one means the labeling
    run is unfinished (training on a part would skew the data toward the first pairs), and another
    Parquet file there (a copied dev set, say) is not labels, so both are refused rather than read.
    """
    parquet = sorted(p.name for p in d.glob("*.parquet") if p.is_file())
    n = manifest.get("shards") if manifest else None
    if n is None:
        if not parquet:
            raise ValueError(
                f"labels dir {str(d)!r} holds no label shards (*.parquet); run `pinrel label` first"
            )
        return [d / name for name in parquet]
    expected = [shard_path(d, i).name for i in range(n)]
    present = set(parquet)
    missing = [name for name in expected if name not in present]
    if missing and not allow_partial:
        raise ValueError(
            f"labels dir {str(d)!r} is unfinished: {len(missing)} of {n} shards missing "
            f"(first: {missing[0]}); run `pinrel label` again to finish it"
        )
    other = sorted(present - set(expected))
    if other:
        raise ValueError(
            f"labels dir {str(d)!r} holds Parquet files besides its {n} shards ({listing(other)}); move them "
            "out, so that only the labels are read"
        )
    return [d / name for name in expected if name in present]
