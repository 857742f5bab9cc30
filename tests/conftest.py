"""Shared test setup. Ray's CLI and the cluster must agree on auth, so it is pinned before any import."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data() -> Path | None:
    """The real data sets beside the checkout (`../shared/data`), or None where they are absent."""
    env = os.environ.get("PINREL_SHARED_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    d = shared_data()
    if d is None:
        pytest.skip("../shared/data is not present on this machine")
    return d
