"""Reading a Ray Train run back on the driver, for the teacher and the distiller alike.

A rerun resumes from the run's latest checkpoint, which Ray hands to every worker. A truncated or
damaged file there would fail each worker in turn with a loader's traceback (miniz, safetensors,
json), after Ray has started. `readable_state` reads every file of that checkpoint first, so the
trainers can refuse it before any work starts, with one line naming the checkpoint and the damage.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .io import json_safe

STATE = "state.json"
# What every pinrel checkpoint's state.json holds; a rerun cannot resume without them.
STATE_KEYS = ("epoch", "history", "fingerprint")


class CheckpointError(ValueError):
    """A run or checkpoint that cannot be read; the message names it and what is wrong."""


def write_state(d: Path, state: dict[str, Any]) -> None:
    """Strict JSON (an undefined metric in the history is null), as every reader accepts it."""
    text = json.dumps(json_safe(state), allow_nan=False)
    (d / STATE).write_text(text, encoding="utf-8")


def read_state(d: Path) -> dict[str, Any]:
    """The training state (epoch, history, fingerprint, ...) of a checkpoint folder."""
    state = json.loads((d / STATE).read_text(encoding="utf-8"))
    if not isinstance(state, dict) or not set(STATE_KEYS) <= set(state):
        raise ValueError(f"{STATE} lacks {', '.join(STATE_KEYS)}")
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"{STATE}: epoch should be an integer >= 0, got {epoch!r}")
    if not isinstance(state["history"], list):
        raise ValueError(f"{STATE}: history should be a list, got {type(state['history']).__name__}")
    return state


def checkpoint_state(checkpoint: Any) -> dict[str, Any]:
    """`read_state` of a `ray.train.Checkpoint`."""
    with checkpoint.as_directory() as d:
        return read_state(Path(d))


@contextmanager
def _quiet_ray_advice() -> Iterator[None]:
    # Reading a run's record makes Ray log, at INFO, advice for someone about to start a new run in
    # its folder ("delete the existing folder"): wrong here, where a previous run is being read.
    quiet = logging.getLogger("ray.train.v2._internal.execution.checkpoint.checkpoint_manager")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        yield
    finally:
        quiet.setLevel(level)


def run_result(run_dir: Path) -> Any:
    """Ray's record of a run (its checkpoints and their metrics), or None when there is no run yet."""
    if not (run_dir / "checkpoint_manager_snapshot.json").is_file():
        return None
    from ray.train import Result

    with _quiet_ray_advice():
        try:
            # pyarrow reads a path without a scheme as a URI only when it is absolute.
            return Result.from_path(str(run_dir.resolve()))
        except (RuntimeError, ValueError, OSError, KeyError) as e:
            raise CheckpointError(f"cannot read the previous Ray Train run ({e})") from e


def readable_state(
    checkpoint: Any, tensors: Sequence[str], archives: Sequence[str] = (), optional: Sequence[str] = ()
) -> dict[str, Any]:
    """The state of `checkpoint` after reading every file in it: `tensors` (safetensors files) and
    `archives` (zip files, torch.save's format) must be there, `optional` safetensors files may be."""
    from safetensors import SafetensorError, safe_open

    name = Path(checkpoint.path).name
    try:
        with checkpoint.as_directory() as d:
            state = read_state(Path(d))
            present = [f for f in optional if (Path(d) / f).exists()]
            for f in [*tensors, *present]:
                # Opening checks the header, and that the tensors' offsets match the file's size.
                with safe_open(str(Path(d) / f), framework="pt") as st:
                    list(st.keys())
            for f in archives:
                with zipfile.ZipFile(Path(d) / f) as z:
                    bad = z.testzip()  # reads every member and checks its CRC, unpickling nothing
                if bad is not None:
                    raise ValueError(f"{f}: member {bad} is damaged")
    except (OSError, ValueError, RuntimeError, zipfile.BadZipFile, SafetensorError) as e:
        raise CheckpointError(f"checkpoint {name} is unreadable ({e})") from e
    return state
