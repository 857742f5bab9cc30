"""pinrel: search relevance with an LLM teacher, pseudo-labels at scale and a fast distilled student.

The flow runs one way: assemble -> features/batches -> teacher -> labels -> student -> serve.
Importing pinrel never imports Ray; only the training and serving entry points do.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from .assembly import ITEM_FIELDS, ITEM_TEXT_FIELDS, AssemblySpec, assemble, assemble_pairs, clean_text
from .batching import bucket_batches, get_num_threads, pad, padding_waste, set_num_threads
from .client import Client
from .features import MATCH_FEATURE_NAMES, Bm25Index, FeatureHasher

if TYPE_CHECKING:
    # Type checkers see the lazy names below as what they are, not as `object`.
    from .predictor import Predictor, load_predictor
    from .student import Scorer, Scores


def __getattr__(name: str) -> object:
    # The scorer needs torch; loading it lazily keeps `import pinrel` light for the Rust-only API.
    if name in ("Scorer", "Scores"):
        from . import student

        return getattr(student, name)
    if name in ("load_predictor", "Predictor"):
        from . import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'pinrel' has no attribute {name!r}")


try:
    __version__ = _version("pinrel")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "ITEM_FIELDS",
    "ITEM_TEXT_FIELDS",
    "MATCH_FEATURE_NAMES",
    "AssemblySpec",
    "Bm25Index",
    "Client",
    "FeatureHasher",
    "Predictor",
    "Scorer",
    "Scores",
    "__version__",
    "assemble",
    "assemble_pairs",
    "bucket_batches",
    "clean_text",
    "get_num_threads",
    "load_predictor",
    "pad",
    "padding_waste",
    "set_num_threads",
]
