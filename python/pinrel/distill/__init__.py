"""Distillation: train the student on the teacher's soft labels with Ray Train.

The driver validates the label shards (so bad input fails in seconds, not inside a worker), builds a
Ray Data pipeline over them and runs a `TorchTrainer`.  Each worker reads its shard of the data once,
featurizes it with the Rust hasher and trains a DDP replica; rank 0 evaluates the dev split and writes
a checkpoint (weights, optimizer state, epoch, history) every epoch.  A worker that dies is replaced
and the run continues from the last checkpoint; re-running with the same `out_dir` does the same.
Finally the driver turns the last checkpoint into a self-contained student directory.

The package's modules, in the order the data flows: `config` (settings and their defaults), `shards`
(validating the label shards, the dev split), `loss` (the objective), `loop` (each Ray Train worker's
loop and checkpoints), `train` (the driver and the export).

Ray is imported inside functions only: `import pinrel.distill` stays cheap and Ray-free.
"""

from __future__ import annotations

from ..killhook import KILL_ENV
from .config import DEFAULT_HASHER, DEFAULT_STUDENT, DistillConfig, load_config
from .loss import distill_loss
from .shards import LabelSet, scan_labels
from .train import distill

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
