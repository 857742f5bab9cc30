"""A test hook for resumption: a Ray Train worker kills itself once, right after a given epoch's
checkpoint is committed, so tests can check that a run resumed from that checkpoint trains exactly as
an uninterrupted one. Set `PINREL_TEST_KILL_AT_EPOCH=N` in the driver's environment; unset, it does
nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

KILL_ENV = "PINREL_TEST_KILL_AT_EPOCH"


def kill_at_epoch() -> int | None:
    """The driver side: the epoch from the environment, or None."""
    raw = os.environ.get(KILL_ENV)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{KILL_ENV}={raw!r}: expected an epoch number") from None


def maybe_kill(at: int | None, marker: str | os.PathLike[str], epoch: int, rank: int) -> None:
    """The worker side, after reporting epoch `epoch`: rank 0 dies once if `epoch == at`; the marker
    file makes it once, so the restarted run goes on."""
    if at is None or rank != 0 or epoch != at:
        return
    path = Path(marker)
    if path.exists():
        return
    import ray.train

    # Wait until the controller has registered the checkpoint, so the restart must resume from it.
    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
    path.write_text(f"killed after epoch {epoch}\n", encoding="utf-8")
    os.kill(os.getpid(), signal.SIGKILL)
