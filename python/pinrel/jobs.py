"""What the `ray job submit` entrypoints in `train/` share: one-line errors, and paths that outlive the job.

`ray job submit --working-dir . -- python train/teacher.py ...` runs the script in a temporary copy of
the working dir, uploaded without the files git ignores (data, runs, models). A relative input path
then points into that copy, where the data is not, and a relative output path writes into it, where
the result is deleted with the job. Both used to fail late or succeed into nowhere, so the
entrypoints refuse them up front.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

# Set by Ray's job supervisor for the entrypoint process: {"runtime_env": {...}, "metadata": {...}}.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

__all__ = ["JOB_CONFIG_ENV", "check_job_paths", "in_uploaded_working_dir", "run_command", "run_entrypoint"]


def in_uploaded_working_dir() -> bool:
    """Whether this process is a Ray job's entrypoint running in an uploaded copy of a working dir."""
    raw = os.environ.get(JOB_CONFIG_ENV)
    if not raw:
        return False
    try:
        env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(env, dict) and bool(env.get("working_dir"))


def _is_relative(path: Any) -> bool:
    text = os.fspath(path)
    # s3://, gs:// and other URIs name storage outside the job's copy, so they outlive it.
    return "://" not in text and not os.path.isabs(text)


def check_job_paths(paths: Mapping[str, Any]) -> None:
    """Refuse relative paths (a value may be a path or a list of them) inside an uploaded working dir."""
    if not in_uploaded_working_dir():
        return
    relative = []
    for name, value in paths.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        relative += [f"{name}={os.fspath(v)}" for v in values if v is not None and _is_relative(v)]
    if relative:
        raise ValueError(
            f"relative path(s) in a Ray job with a working dir: {', '.join(relative)}. The job runs in "
            "an uploaded copy of the working dir, without git-ignored files, and its outputs are deleted "
            "with it: give absolute paths on storage every node can reach (e.g. --out $PWD/runs/student)"
        )


def run_entrypoint(name: str, main: Callable[[], int]) -> int:
    """Run an entrypoint's `main`; a user error (bad settings or input) prints one line and returns 2."""
    try:
        return main()
    except (ValueError, TypeError, FileNotFoundError) as e:
        # Tracebacks are for bugs; `pinrel` (cli.main) reports the same errors the same way.
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2


def run_command(command: list[str], config: str, argv: list[str] | None = None) -> int:
    """`pinrel <command> --config <config> <argv>`: an entrypoint in train/ is its CLI command with a
    default config, so that the two take the same flags and report errors the same way."""
    from .cli import main

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in args):
        args = ["--config", config, *args]
    return main([*command, *args])
