"""Atomic file writes, and cheap identities of files already written.

A write goes to a temp file in the same directory, is fsynced, then renamed over the target. Readers
therefore see either the old file or the new one, never a torn write, even if the process is killed
midway; a rename within one directory is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# How much of each end of a file `hash_file_ends` reads.
_END_BYTES = 1 << 20


def current_umask() -> int:
    """The process's umask, read without setting it: os.umask(0) and back would race other threads'
    file creation."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def make_shareable(root: Path) -> None:
    """Give `root` (a file, or a folder and everything in it) the modes a plain write would have.

    Temp files and folders (mkstemp, mkdtemp) and safetensors' writer make private 0600/0700 ones;
    outputs are read by other users and by Ray workers and replicas that may run as another user."""
    umask = current_umask()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for p in paths:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        make_shareable(tmp_path)  # after the write: a writer may have replaced the private temp file
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_with(target: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """For writers that insist on a path (pyarrow, safetensors, matplotlib)."""
    with atomic_path(target) as tmp:
        write(tmp)


def hash_file_ends(h: Any, path: Path) -> None:
    """Feed `path`'s name, size and first and last MiB into the hash `h`.

    Any edit of a Parquet file changes its footer (in the tail), and trained safetensors weights differ
    in both ends, so this tells files apart without reading gigabytes; unlike an mtime, a copy or a
    `touch` does not change it.
    """
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as f:
        h.update(f.read(_END_BYTES))
        if size > _END_BYTES:
            f.seek(max(size - _END_BYTES, _END_BYTES))
            h.update(f.read())


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's safe loader, reading `1e-4` as a number as YAML 1.2 does (YAML 1.1 wants `1.0e-4` and
    otherwise gives the string "1e-4"), so that every config reads a learning rate the same way."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            # PyYAML keeps the last of two equal keys; in a config that hides a typo or a stale line.
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
    )
    return Loader


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (`{}` for an empty one).

    Every way a config can be unreadable is a ValueError naming the file (a missing one is a
    FileNotFoundError), so that CLIs print one line instead of a parser's traceback."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        doc = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader: builds no arbitrary objects
    except yaml.YAMLError as e:
        # The parser's own message spans several lines and quotes the text; one line is enough.
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{p}: not valid YAML: {problem or e}{where}") from None
    except RecursionError:
        raise ValueError(f"{p}: YAML nested too deeply") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{p}: expected a mapping at the top level, got {type(doc).__name__}")
    return doc


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output_file(out: str | os.PathLike[str], inputs: dict[str, Any], what: str = "out") -> Path:
    """Refuse an output file path that is a directory or one of the inputs, before any work is done.

    `inputs` maps each input's name to a path, a list of paths, or None. An atomic rename onto an
    input would replace the data it was made from, and a directory would fail only at that rename."""
    p = Path(out)
    if p.is_dir():
        raise ValueError(f"{what}: {str(p)!r} is a directory; give a file path")
    for name, value in inputs.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, os.PathLike)) and _same_file(p, Path(v)):
                raise ValueError(
                    f"{what}: {str(p)!r} is also the {name} input; writing it would replace the data it "
                    "is made from: choose another path"
                )
    return p


def check_distinct_outputs(outs: list[str | os.PathLike[str]], what: str = "out") -> None:
    """Refuse two outputs that are the same file: the second would silently replace the first."""
    for i, a in enumerate(outs):
        for b in outs[:i]:
            if _same_file(Path(a), Path(b)):
                raise ValueError(f"{what}: {str(b)!r} and {str(a)!r} are the same file")


def json_safe(value: Any) -> Any:
    """JSON without NaN/inf (which strict parsers reject): undefined metrics become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def as_stored_json(value: Any) -> Any:
    """`value` as a JSON file written by pinrel reads back: tuples become lists, NaN becomes null. A
    rerun compares its settings with stored ones in this form."""
    return json.loads(json.dumps(json_safe(value)))


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A small JSON marker file (pinrel.json, manifest.json, metrics.json) as a dict; None when it is
    missing, unreadable, or not a JSON object, all of which mean "not written by pinrel"."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def listing(names: list[str]) -> str:
    """The first few of `names` for an error message."""
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def not_empty(entries: list[str], holds: str) -> str:
    """The refusal for a directory whose entries are none of this command's own."""
    return f"is not empty ({listing(entries)}) and holds no {holds}"


def check_output_dir(
    out: Path,
    what: str,
    holds: str,
    problem: Callable[[list[str]], str | None],
    *,
    error: type[Exception] = ValueError,
) -> None:
    """Refuse an output directory that holds something other than an earlier output of this command.

    `out` may be missing or empty; otherwise `problem(entries)` gets its sorted entry names and says
    what in them is not this command's own (`not_empty` is the usual answer), or None to accept it.
    Commands call this before any work, so a refusal leaves every byte where it was. Hidden entries
    are left out: the commands' temp files are hidden, and none writes a hidden name it did not make."""
    if not out.exists():
        return
    if not out.is_dir():
        raise error(f"{what}: {str(out)!r} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    found = problem(entries) if entries else None
    if found:
        raise error(
            f"{what}: {str(out)!r} {found}; choose a new or empty directory, or one with an earlier "
            f"{holds}, so that nothing in it is overwritten"
        )
