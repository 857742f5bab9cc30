"""Pseudo-labeling: the teacher grades a large pair set into resumable, exactly-once Parquet shards.

Output layout (`out/`):

- `manifest.json`: what the shards were computed from — the teacher's identity, K, the pairs file's
  fingerprint and the shard size. A later run into the same folder must match it, or it refuses.
- `part-00000.parquet`, ...: shard i holds pair rows [i * S, (i + 1) * S) of the pairs file, with
  `pair_id` (int64 row number), every record field (query, item fields, lang, ids, human `label`),
  `probs` (fixed_size_list<float32>[K], the teacher's grade distribution), `grade` (int32 argmax, 1..K)
  and `expected_grade` (float32, sum of k * p_k).

Shards are written atomically (temp file + rename), so a shard file either exists complete or not at
all; a re-run after a crash skips the finished shards and labels exactly the missing rows. Because
every shard is a pure function of (teacher, pairs rows, shard size), the in-process path and the Ray
path write identical shards and may even finish each other's runs.

Bad input policy: a pair whose item has no text is labeled from the query alone and counted (the
teacher has seen such pairs in training data too, and dropping rows would break `pair_id` ranges);
text beyond the assembly budget is truncated by `pinrel.assemble` and counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .assembly import AssemblySpec, assemble, assemble_pairs
from .checks import check_int, check_number
from .io import (
    atomic_write_text,
    atomic_write_with,
    check_output_dir,
    hash_file_ends,
    not_empty,
    read_yaml_mapping,
)
from .labelset import MANIFEST_NAME, shard_files, shard_index, shard_indices, shard_path
from .labelset import read_manifest as read_labels_manifest
from .predictor import ModelDirError, mean_probs, model_dirs, read_manifest
from .raycluster import ray_session
from .records import GRADES_KEY, SCHEMA, RecordsError, make_records, num_grades, read_records

__all__ = [
    "CONFIG_DEFAULTS",
    "MANIFEST_NAME",
    "LabelActor",
    "LabelError",
    "LabelSummary",
    "ShardLabeler",
    "label_pairs",
    "label_pairs_ray",
    "labels_schema",
    "load_config",
    "pairs_fingerprint",
    "read_labels",
    "shard_path",
    "teacher_identity",
    "teachers_identity",
]

FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 10_000
DEFAULT_MAX_TOKENS = 16_384
# What `pinrel label --config FILE` (train/label.yaml) may set, with the defaults; flags override it.
CONFIG_DEFAULTS: dict[str, Any] = {
    "pairs": None,
    "teacher": None,  # one teacher directory, or a list of them (an ensemble)
    "out": None,
    "backend": "auto",
    "shard_size": DEFAULT_SHARD_SIZE,
    "max_tokens": DEFAULT_MAX_TOKENS,
    "grades": None,
    "device": None,
    "actors": 1,  # the three actor settings apply with --ray
    "gpus_per_actor": 0.0,
    "cpus_per_actor": 1.0,
}
_LOCK_NAME = ".lock"
# Assembly limits that never bind, to tell whether the real budget truncated a pair.
_UNBOUNDED = 1_000_000


# one teacher directory, or several whose probabilities are averaged
Teachers = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


class LabelError(ValueError):
    """The labeling run cannot proceed: mismatched teacher, pairs or output folder."""


# --------------------------------------------------------------------------------------- identity


def teacher_identity(teacher: str | os.PathLike[str]) -> dict[str, Any]:
    """What makes a teacher *this* teacher: a hash of its pinrel.json, model config and weight files.

    Weights are hashed by name, size and their first and last MiB, which any retraining changes,
    without reading a multi-GB checkpoint.
    """
    tdir = Path(teacher)
    manifest = read_manifest(tdir)
    if manifest["kind"] != "teacher":
        raise ModelDirError(f"teacher: {tdir} holds a {manifest['kind']!r} model, not a teacher")
    model_dir = tdir / "model"
    config = model_dir / "config.json"
    if not config.is_file():
        raise ModelDirError(f"teacher: {tdir} has no model/config.json; is the teacher fully written?")
    h = hashlib.sha256()
    h.update((tdir / "pinrel.json").read_bytes())
    h.update(config.read_bytes())
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not weights:
        raise ModelDirError(f"teacher: {model_dir} has no weight files (*.safetensors)")
    for w in weights:
        hash_file_ends(h, w)
    return {"sha256": h.hexdigest(), "path": str(tdir.resolve()), "base_model": manifest.get("base_model")}


def teachers_identity(teachers: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """`teacher_identity` of one teacher; of several (an ensemble whose probabilities are averaged), a
    hash over the members' hashes, in any order: the mean does not depend on it."""
    members = [teacher_identity(t) for t in teachers]
    if len(members) == 1:
        return members[0]
    h = hashlib.sha256()
    for digest in sorted(m["sha256"] for m in members):
        h.update(digest.encode())
    return {"sha256": h.hexdigest(), "path": ", ".join(m["path"] for m in members), "members": members}


def pairs_fingerprint(pairs: str | os.PathLike[str], rows: int) -> dict[str, Any]:
    """Size, row count and a hash of the first and last MiB of the pairs file (not its mtime, which
    a copy or a `touch` changes without changing a single pair)."""
    path = Path(pairs)
    h = hashlib.sha256()
    hash_file_ends(h, path)
    return {"path": str(path.resolve()), "size": path.stat().st_size, "rows": rows, "sha256": h.hexdigest()}


# ----------------------------------------------------------------------------------------- shards


def labels_schema(grades: int) -> pa.Schema:
    """The schema of every shard: pair_id, the record fields, probs, grade, expected_grade."""
    fields = [pa.field("pair_id", pa.int64()), *SCHEMA]
    fields += [
        pa.field("probs", pa.list_(pa.float32(), grades)),
        pa.field("grade", pa.int32()),
        pa.field("expected_grade", pa.float32()),
    ]
    return pa.schema(fields, metadata={GRADES_KEY: str(grades).encode("ascii")})


class _PairsReader:
    """Row ranges of a pairs file. Parquet is read by row group, keeping the last group decoded, so
    reading consecutive shards decodes every group once; other formats are read whole, once."""

    def __init__(self, path: str | os.PathLike[str], grades: int) -> None:
        self.path = Path(path)
        self.grades = grades
        self._file: pq.ParquetFile | None = None
        self._whole: pa.Table | None = None
        self._cached: tuple[int, pa.Table] | None = None
        if self.path.suffix.lower() in (".parquet", ".pq"):
            try:
                self._file = pq.ParquetFile(self.path)
            except (pa.ArrowException, OSError) as e:
                raise RecordsError(f"pairs: {self.path} is not a readable Parquet file ({e})") from None
            self.num_rows = self._file.metadata.num_rows
            names = self._file.schema_arrow.names
            if "query" not in names:
                raise RecordsError(f"pairs: {self.path} has no 'query' column (columns: {names})")
            self.columns = [n for n in names if n in SCHEMA.names]
            stored = num_grades(self._file.schema_arrow.empty_table())
        else:
            self._whole = read_records(self.path, grades=grades)
            self.num_rows = self._whole.num_rows
            stored = grades
        if stored is not None and stored != grades:
            raise LabelError(
                f"pairs: {self.path} is graded on a {stored}-point scale but the teacher grades 1..{grades}"
            )
        starts = [0]
        if self._file is not None:
            for g in range(self._file.metadata.num_row_groups):
                starts.append(starts[-1] + self._file.metadata.row_group(g).num_rows)
        self._group_starts = np.asarray(starts, dtype=np.int64)

    def read(self, start: int, stop: int) -> pa.Table:
        """Rows [start, stop) as a validated records table (labels checked against 1..K)."""
        if self._whole is not None:
            return self._whole.slice(start, stop - start)
        parts = []
        first = int(np.searchsorted(self._group_starts, start, side="right")) - 1
        for g in range(first, len(self._group_starts) - 1):
            g0, g1 = int(self._group_starts[g]), int(self._group_starts[g + 1])
            if g0 >= stop:
                break
            table = self._group(g)
            lo, hi = max(start, g0) - g0, min(stop, g1) - g0
            parts.append(table.slice(lo, hi - lo))
        raw = pa.concat_tables(parts) if parts else pa.table({"query": pa.array([], pa.string())})
        source = f"{self.path} rows {start + 1}..{stop}"
        try:
            return make_records(raw, grades=self.grades, source=source)
        except RecordsError as e:
            raise RecordsError(f"pairs: {e}") from None

    def _group(self, g: int) -> pa.Table:
        if self._cached is None or self._cached[0] != g:
            assert self._file is not None
            self._cached = (g, self._file.read_row_group(g, columns=self.columns))
        return self._cached[1]


# ------------------------------------------------------------------------------------------ plan


@dataclass
class _Plan:
    pairs: Path
    teachers: list[Path]
    out: Path
    grades: int
    shard_size: int
    rows: int
    spec: dict[str, Any]
    max_lengths: list[int | None]  # one per teacher
    manifest: dict[str, Any]
    pending: list[int]

    @property
    def shards(self) -> int:
        return -(-self.rows // self.shard_size)

    def bounds(self, index: int) -> tuple[int, int]:
        return index * self.shard_size, min((index + 1) * self.shard_size, self.rows)


def _check_backend(name: Any) -> None:
    from .backends import BACKENDS

    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {name!r}")


def _teacher_settings(
    teachers: list[Path], grades: int | None
) -> tuple[dict[str, Any], int, list[int | None]]:
    """The first teacher's manifest, K and each teacher's max_length, after checking that the teachers
    of an ensemble grade on one scale and assemble the same text (their probabilities are averaged)."""
    manifests = []
    for t in teachers:
        m = read_manifest(t)
        if m["kind"] != "teacher":
            raise ModelDirError(f"teacher: {t} holds a {m['kind']!r} model, not a teacher")
        manifests.append(m)
    first, k = manifests[0], int(manifests[0]["grades"])
    for t, m in zip(teachers[1:], manifests[1:], strict=True):
        if int(m["grades"]) != k:
            raise LabelError(f"teacher: {teachers[0]} grades 1..{k} but {t} grades 1..{m['grades']}")
        if m.get("assembly_spec") != first.get("assembly_spec"):
            raise LabelError(
                f"teacher: {teachers[0]} and {t} assemble pair text differently (assembly_spec); "
                "the teachers of an ensemble must read the same text"
            )
    if grades is not None and check_int(grades, "grades", 2) != k:
        raise LabelError(f"--grades {grades} was asked for, but the teacher in {teachers[0]} grades 1..{k}")
    return first, k, [m.get("max_length") for m in manifests]


def _wanted_manifest(
    pairs: Path,
    rows: int,
    teachers: list[Path],
    tmanifest: dict[str, Any],
    grades: int,
    shard_size: int,
    max_lengths: list[int | None],
) -> dict[str, Any]:
    from . import __version__

    return {
        "kind": "labels",
        "format": FORMAT_VERSION,
        "grades": grades,
        "shard_size": shard_size,
        "rows": rows,
        "shards": -(-rows // shard_size),
        "teacher": teachers_identity(teachers),
        "pairs": pairs_fingerprint(pairs, rows),
        "assembly_spec": tmanifest.get("assembly_spec") or AssemblySpec().to_dict(),
        # the longest any member reads: what a pair's text was labelled from, at most
        "max_length": None if None in max_lengths else max(m for m in max_lengths if m is not None),
        "pinrel_version": __version__,
    }


def _mismatches(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    problems = []
    if have.get("kind") != "labels" or have.get("format") != FORMAT_VERSION:
        problems.append(f"it is not a pinrel labels folder of format {FORMAT_VERSION}")
    if have.get("teacher", {}).get("sha256") != want["teacher"]["sha256"]:
        problems.append(f"its shards come from another teacher ({have.get('teacher', {}).get('path')})")
    if have.get("grades") != want["grades"]:
        problems.append(f"its shards have {have.get('grades')} grades, this teacher {want['grades']}")
    hp, wp = have.get("pairs", {}), want["pairs"]
    if (hp.get("sha256"), hp.get("rows"), hp.get("size")) != (wp["sha256"], wp["rows"], wp["size"]):
        problems.append(f"its shards cover another pairs file ({hp.get('path')}, {hp.get('rows')} rows)")
    if have.get("shard_size") != want["shard_size"]:
        problems.append(f"its shard size is {have.get('shard_size')}, not {want['shard_size']}")
    return problems


def _check_not_foreign(out: Path) -> None:
    """Refuse a folder that holds something other than labels (a teacher, a dataset, the user's
    files) before anything, even the lock file, is written into it."""

    def problem(entries: list[str]) -> str | None:
        mpath = out / MANIFEST_NAME
        if MANIFEST_NAME in entries and mpath.is_file():
            try:
                have = json.loads(mpath.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                return None  # _check_out names the broken file
            kind = have.get("kind") if isinstance(have, dict) else None
            return (
                None if kind == "labels" else f"holds a {MANIFEST_NAME} of kind {kind!r}, not pinrel labels"
            )
        foreign = [e for e in entries if shard_index(e) is None and e != _LOCK_NAME]
        return not_empty(foreign, "pinrel labels") if foreign else None

    check_output_dir(out, "out", "pinrel labels", problem, error=LabelError)


def _check_out(out: Path, want: dict[str, Any]) -> None:
    """Refuse a folder whose shards were made from anything else; never overwrite them."""
    mpath = out / MANIFEST_NAME
    if mpath.is_file():
        try:
            have = json.loads(mpath.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LabelError(f"out: {mpath} is not valid JSON ({e}); refusing to touch {out}") from None
        problems = _mismatches(have if isinstance(have, dict) else {}, want)
        if problems:
            raise LabelError(
                f"out: {out} already holds labels that do not match this run: {'; '.join(problems)}. "
                "Use another --out folder (nothing was overwritten)."
            )
        return
    if shard_indices(out):
        raise LabelError(
            f"out: {out} holds part-*.parquet shards but no {MANIFEST_NAME}, so their teacher and pairs "
            "are unknown; use another --out folder (nothing was overwritten)"
        )
    text = json.dumps(want, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_text(mpath, text)


def _pending_shards(out: Path, plan_rows: int, shard_size: int) -> list[int]:
    n = -(-plan_rows // shard_size)
    done = set(shard_indices(out))
    stray = sorted(i for i in done if i >= n)
    if stray:
        raise LabelError(f"out: {out} holds shard {stray[0]} but the pairs have only {n} shards")
    for i in sorted(done):
        expect = min(shard_size, plan_rows - i * shard_size)
        try:
            got = pq.ParquetFile(shard_path(out, i)).metadata.num_rows
        except (pa.ArrowException, OSError) as e:
            raise LabelError(
                f"out: {shard_path(out, i)} is unreadable ({e}); delete it to relabel it"
            ) from None
        if got != expect:
            raise LabelError(
                f"out: {shard_path(out, i)} has {got} rows, expected {expect}; delete it to relabel it"
            )
    return [i for i in range(n) if i not in done]


def _remove_stale_temps(out: Path) -> None:
    # A killed run leaves its half-written temp shard behind; the lock guarantees it is not ours.
    for p in out.glob(".part-*.parquet.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One writer per folder: two runs would race on the same temp files and shard names."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / _LOCK_NAME, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabelError(f"out: another `pinrel label` run is writing to {out}") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _plan(
    pairs: str | os.PathLike[str],
    teacher: Teachers,
    out: str | os.PathLike[str],
    shard_size: int,
    grades: int | None,
) -> _Plan:
    shard_size = check_int(shard_size, "shard_size")
    tdirs, pdir, odir = model_dirs(teacher, "teacher"), Path(pairs), Path(out)
    tmanifest, k, max_lengths = _teacher_settings(tdirs, grades)
    if not pdir.is_file():
        raise FileNotFoundError(f"pairs: file not found: {pdir}")
    reader = _PairsReader(pdir, k)
    if reader.num_rows == 0:
        raise RecordsError(f"pairs: {pdir} has no rows")
    _check_not_foreign(odir)
    want = _wanted_manifest(pdir, reader.num_rows, tdirs, tmanifest, k, shard_size, max_lengths)
    return _Plan(
        pdir, tdirs, odir, k, shard_size, reader.num_rows, want["assembly_spec"], max_lengths, want, []
    )


@contextlib.contextmanager
def _claimed(plan: _Plan) -> Iterator[_Plan]:
    """Lock the output folder, check it against the plan and list the shards still to write."""
    with _locked(plan.out):
        _check_out(plan.out, plan.manifest)
        plan.pending = _pending_shards(plan.out, plan.rows, plan.shard_size)
        _remove_stale_temps(plan.out)
        yield plan


# --------------------------------------------------------------------------------------- labeling


def _backend_kwargs(plan: _Plan, max_tokens: int, extra: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One backend's keyword arguments per teacher (each reads up to its own max_length)."""
    out = []
    for max_length in plan.max_lengths:
        # Both backends take these; the labeler draws one progress bar for the whole run.
        kw: dict[str, Any] = {"max_tokens": max_tokens, "progress": False}
        if max_length:
            kw["max_length"] = int(max_length)
        kw.update(extra or {})
        out.append(kw)
    return out


def _stats_of(backend: Any) -> dict[str, float]:
    stats = getattr(backend, "stats", None)
    if stats is None:
        return {}
    d = stats.as_dict() if hasattr(stats, "as_dict") else dict(stats)
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float))}


def _unbounded(spec: AssemblySpec) -> AssemblySpec:
    d = spec.to_dict()
    d.update(
        max_chars=_UNBOUNDED,
        max_query_chars=_UNBOUNDED,
        field_max_chars=dict.fromkeys(d.get("field_max_chars") or {}, _UNBOUNDED),
    )
    return AssemblySpec.from_dict(d)


class ShardLabeler:
    """Labels and writes one shard at a time; the unit both the in-process and the Ray path run.

    Built once per process (or Ray actor): it loads the backend (one per teacher of an ensemble,
    whose probabilities it averages) and opens the pairs file.
    """

    def __init__(
        self,
        pairs: str | os.PathLike[str],
        out: str | os.PathLike[str],
        teacher: str | Sequence[str],
        grades: int,
        shard_size: int,
        rows: int,
        spec: dict[str, Any],
        backend: str = "auto",
        backend_kwargs: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
    ) -> None:
        from .backends import get_backend, resolve_backend_name

        self.out = Path(out)
        self.grades, self.shard_size, self.rows = grades, shard_size, rows
        self.spec = AssemblySpec.from_dict(spec)
        self.full_spec = _unbounded(self.spec)
        self.reader = _PairsReader(pairs, grades)
        teachers = [teacher] if isinstance(teacher, (str, os.PathLike)) else list(teacher)
        if backend_kwargs is None or isinstance(backend_kwargs, Mapping):
            kwargs = [dict(backend_kwargs or {}) for _ in teachers]
        else:
            kwargs = list(backend_kwargs)
        if len(kwargs) != len(teachers):
            raise ValueError(f"backend_kwargs: {len(kwargs)} given for {len(teachers)} teachers")
        if len(teachers) > 1 and resolve_backend_name(backend, teachers) == "vllm":
            # every member's engine sits on the same device: split the default memory budget between them
            kwargs = [{"memory_share": 1.0 / len(teachers), **kw} for kw in kwargs]
        self.backends = []
        for t, kw in zip(teachers, kwargs, strict=True):
            engine = get_backend(backend, Path(t) / "model", **kw)
            got = getattr(engine, "grades", grades)
            if got != grades:
                raise LabelError(
                    f"teacher: the model in {t} has {got} output grades but the run grades 1..{grades}"
                )
            self.backends.append(engine)
        self.schema = labels_schema(grades)

    def label(self, records: pa.Table, first_pair_id: int) -> tuple[pa.Table, dict[str, int]]:
        """Soft labels for `records` (a records table) as a shard table, plus bad-input counts."""
        texts = assemble_pairs(records.column("query").to_pylist(), records, self.spec)
        full = assemble_pairs(records.column("query").to_pylist(), records, self.full_spec)
        items = assemble(records, self.spec)
        counts = {
            "empty_items": sum(1 for t in items if not t),
            "truncated": sum(1 for a, b in zip(texts, full, strict=True) if len(a) < len(b)),
        }
        probs = mean_probs(engine.predict_proba(texts) for engine in self.backends).astype(np.float32)
        if probs.shape != (records.num_rows, self.grades):
            raise LabelError(
                f"backend returned probabilities of shape {probs.shape}, "
                f"expected ({records.num_rows}, {self.grades})"
            )
        return self._table(records, probs, first_pair_id), counts

    def _table(self, records: pa.Table, probs: np.ndarray, first_pair_id: int) -> pa.Table:
        n = records.num_rows
        grades = np.arange(1, self.grades + 1, dtype=np.float64)
        arrays = [pa.array(np.arange(first_pair_id, first_pair_id + n, dtype=np.int64))]
        arrays += [records.column(name) for name in SCHEMA.names]
        arrays += [
            pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1), pa.float32()), self.grades),
            pa.array(probs.argmax(axis=1).astype(np.int32) + 1),
            pa.array((probs.astype(np.float64) @ grades).astype(np.float32)),
        ]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def run(self, index: int) -> dict[str, float]:
        """Label shard `index` and write it atomically; returns its counts and backend stat deltas."""
        start, stop = index * self.shard_size, min((index + 1) * self.shard_size, self.rows)
        if not 0 <= start < stop:
            raise ValueError(f"shard {index} is outside the {self.rows} pairs")
        before = self._stats()
        t0 = time.perf_counter()
        table, counts = self.label(self.reader.read(start, stop), start)
        atomic_write_with(shard_path(self.out, index), lambda tmp: pq.write_table(table, tmp))
        after = self._stats()
        result: dict[str, float] = {
            "shard": index,
            "pairs": stop - start,
            "seconds": time.perf_counter() - t0,
        }
        result.update(counts)
        for key in ("tokens", "padded_tokens"):
            result[key] = after.get(key, 0.0) - before.get(key, 0.0)
        return result

    def _stats(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for engine in self.backends:
            for k, v in _stats_of(engine).items():
                total[k] = total.get(k, 0.0) + v
        return total


@dataclass
class LabelSummary:
    """One labeling run: what was written, skipped and how fast."""

    out: str
    backend: str
    pairs: int = 0
    shards: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    pairs_labeled: int = 0
    empty_items: int = 0
    truncated: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0  # labeling only, from the first shard on (throughput excludes model loading)
    wall_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_labeled / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def padding_waste(self) -> float:
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0

    def warn(self, msg: str) -> None:
        """Keep `msg` with the summary and raise it as a warning at the caller of the labeling API."""
        self.warnings.append(msg)
        warnings.warn(msg, stacklevel=4)  # warn <- _finish/_run_ray <- label_pairs(_ray) <- caller

    def add(self, shard: dict[str, float]) -> None:
        self.shards_written += 1
        self.pairs_labeled += int(shard["pairs"])
        for key in ("empty_items", "truncated", "tokens", "padded_tokens"):
            setattr(self, key, getattr(self, key) + int(shard.get(key, 0)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            pairs_per_second=self.pairs_per_second,
            tokens_per_second=self.tokens_per_second,
            padding_waste=self.padding_waste,
        )
        return d

    def line(self) -> str:
        """The final human-readable line: throughput, padding waste and what was skipped or odd."""
        text = (
            f"labeled {self.pairs_labeled:,} pairs in {self.seconds:.1f}s ({self.wall_seconds:.1f}s wall) "
            f"({self.pairs_per_second:,.1f} pairs/s, {self.tokens_per_second:,.0f} tokens/s, "
            f"padding waste {self.padding_waste:.1%}); shards {self.shards_written} written, "
            f"{self.shards_skipped} already done of {self.shards}; {self.empty_items} empty items, "
            f"{self.truncated} truncated pairs -> {self.out}"
        )
        return text


def _finish(summary: LabelSummary, t0: float, progress: bool) -> LabelSummary:
    summary.wall_seconds = time.perf_counter() - t0
    if summary.empty_items:
        msg = f"{summary.empty_items} pairs have an item with no text; they were labeled from the query alone"
        summary.warn(msg)
    if progress:
        print(f"pinrel label: {summary.line()}", file=sys.stderr, flush=True)
    return summary


def _bar(plan: _Plan, progress: bool) -> Any:
    from tqdm.auto import tqdm

    done = plan.rows - sum(plan.bounds(i)[1] - plan.bounds(i)[0] for i in plan.pending)
    return tqdm(
        total=plan.rows,
        initial=done,
        unit="pair",
        unit_scale=True,
        disable=not progress,
        file=sys.stderr,
        desc="label",
        dynamic_ncols=True,
    )


def _tick(bar: Any, summary: LabelSummary, shard: dict[str, float], t0: float) -> None:
    summary.add(shard)
    bar.update(int(shard["pairs"]))
    elapsed = summary.seconds = max(time.perf_counter() - t0, 1e-9)
    bar.set_postfix(
        tok_s=f"{summary.tokens / elapsed:,.0f}", waste=f"{summary.padding_waste:.1%}", refresh=False
    )


def label_pairs(
    pairs: str | os.PathLike[str],
    teacher: Teachers,
    out: str | os.PathLike[str],
    *,
    backend: str = "auto",
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    grades: int | None = None,
    progress: bool = True,
    backend_kwargs: dict[str, Any] | None = None,
) -> LabelSummary:
    """Label every pair of `pairs` with `teacher` into shards under `out`, in this process.

    `teacher` is a teacher directory, or a list of them: an ensemble, whose members must share K and
    the assembly spec, and whose soft labels are the mean of the members' probabilities.

    Resumes where a previous run into `out` stopped; refuses an `out` made from another teacher,
    pairs file, grade scale or shard size. `backend` is 'auto' (vLLM on a GPU when installed, else
    hf), 'hf' or 'vllm'; `max_tokens` is the per-batch token budget; `grades` (optional) must equal
    the teacher's K. `backend_kwargs` go to the backend constructor (e.g. device, dtype).
    """
    max_tokens = check_int(max_tokens, "max_tokens")
    _check_backend(backend)
    t0 = time.perf_counter()
    with _claimed(_plan(pairs, teacher, out, shard_size, grades)) as plan:
        summary = _summary(plan, backend)
        if plan.pending:
            labeler = ShardLabeler(
                plan.pairs,
                plan.out,
                [str(t) for t in plan.teachers],
                plan.grades,
                plan.shard_size,
                plan.rows,
                plan.spec,
                backend,
                _backend_kwargs(plan, max_tokens, backend_kwargs),
            )
            with _bar(plan, progress) as bar:
                t_run = time.perf_counter()
                for i in plan.pending:
                    _tick(bar, summary, labeler.run(i), t_run)
    return _finish(summary, t0, progress)


def _summary(plan: _Plan, backend: str) -> LabelSummary:
    from .backends import resolve_backend_name

    return LabelSummary(
        out=str(plan.out),
        backend=resolve_backend_name(backend, plan.teachers),
        pairs=plan.rows,
        shards=plan.shards,
        shards_skipped=plan.shards - len(plan.pending),
    )


# -------------------------------------------------------------------------------------------- Ray


class LabelActor:
    """A Ray Data callable class: loads the teacher once per actor, then labels and writes whole shards.

    Each input row names a shard; the actor reads that shard's pair rows itself, so every shard is
    one unit of work and is written exactly like the in-process path writes it.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.labeler = ShardLabeler(**kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [self.labeler.run(int(i)) for i in batch["shard"]]
        keys = ("shard", "pairs", "seconds", "empty_items", "truncated", "tokens", "padded_tokens")
        return {k: np.asarray([r.get(k, 0) for r in results], dtype=np.float64) for k in keys}


def label_pairs_ray(
    pairs: str | os.PathLike[str],
    teacher: Teachers,
    out: str | os.PathLike[str],
    *,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    backend: str = "auto",
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    grades: int | None = None,
    progress: bool = True,
    backend_kwargs: dict[str, Any] | None = None,
    address: str | None = None,
) -> LabelSummary:
    """`label_pairs` on Ray: a Ray Data pipeline over the pending shards, run by an actor pool of
    `actors` (each with `gpus_per_actor` GPUs and `cpus_per_actor` CPUs) that loads the backend once.

    Writes the same shards as `label_pairs`. The pairs file and `out` must be on storage every Ray
    node sees. Connects to `address` (or the running/`RAY_ADDRESS` cluster, else starts a local one).
    """
    actors = check_int(actors, "actors")
    max_tokens = check_int(max_tokens, "max_tokens")
    _check_backend(backend)
    check_number(gpus_per_actor, "gpus_per_actor", 0.0)
    check_number(cpus_per_actor, "cpus_per_actor", 0.0)
    t0 = time.perf_counter()
    planned = _plan(pairs, teacher, out, shard_size, grades)
    if planned.pairs.suffix.lower() not in (".parquet", ".pq"):
        raise ValueError(f"pairs: the Ray path reads Parquet row groups; convert {planned.pairs} to Parquet")
    with _claimed(planned) as plan:
        summary = _summary(plan, backend)
        if plan.pending:
            ctor = {
                "pairs": str(plan.pairs.resolve()),
                "out": str(plan.out.resolve()),
                "teacher": [str(t.resolve()) for t in plan.teachers],
                "grades": plan.grades,
                "shard_size": plan.shard_size,
                "rows": plan.rows,
                "spec": plan.spec,
                "backend": backend,
                "backend_kwargs": _backend_kwargs(plan, max_tokens, backend_kwargs),
            }
            _run_ray(plan, summary, ctor, actors, gpus_per_actor, cpus_per_actor, progress, address)
    return _finish(summary, t0, progress)


def _idle_gpu_warning(cluster_gpus: float, gpus_per_actor: float) -> str | None:
    """The warning for actors asked for no GPU on a cluster that has some, else None.

    Ray hides the GPUs from an actor that did not ask for one (CUDA_VISIBLE_DEVICES is empty), so the
    backend quietly labels on the CPU while the GPUs beside it stay idle.
    """
    if gpus_per_actor > 0 or cluster_gpus <= 0:
        return None
    return (
        f"the Ray cluster has {cluster_gpus:g} GPU(s) but gpus_per_actor is 0 (CLI: --gpus-per-actor): "
        "the actors label on the CPU"
    )


def _run_ray(
    plan: _Plan,
    summary: LabelSummary,
    ctor: dict[str, Any],
    actors: int,
    gpus: float,
    cpus: float,
    progress: bool,
    address: str | None,
) -> None:
    import ray

    with ray_session(address=address, log_to_driver=False):
        hint = _idle_gpu_warning(float(ray.cluster_resources().get("GPU", 0)), gpus)
        if hint:
            summary.warn(hint)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the labeler's own bar counts pairs, not Ray blocks
        shards = ray.data.from_items(
            [{"shard": i} for i in plan.pending], override_num_blocks=len(plan.pending)
        )
        results = shards.map_batches(
            LabelActor,
            fn_constructor_kwargs=ctor,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(actors, len(plan.pending))),
            num_gpus=gpus,
            num_cpus=cpus,
        )
        with _bar(plan, progress) as bar:
            t_run = time.perf_counter()
            for row in results.iter_rows():
                _tick(bar, summary, {k: float(v) for k, v in row.items()}, t_run)


# ------------------------------------------------------------------------------------------- read


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """CONFIG_DEFAULTS updated from a YAML file; unknown keys are errors, so typos do not pass silently.
    Values are checked where they are used, by `label_pairs` and `label_pairs_ray`."""
    data = read_yaml_mapping(path)
    unknown = sorted(set(data) - set(CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(CONFIG_DEFAULTS)}")
    return {**CONFIG_DEFAULTS, **data}


def read_labels(out: str | os.PathLike[str], allow_partial: bool = False) -> pa.Table:
    """All shards of a labels folder as one table, in pair order; refuses an unfinished folder unless
    `allow_partial`."""
    odir = Path(out)
    if not odir.is_dir():
        raise LabelError(f"labels: {str(odir)!r} does not exist or is not a directory")
    try:
        manifest = read_labels_manifest(odir)
        if manifest is None:
            raise ValueError(f"{odir} has no {MANIFEST_NAME}; is it a `pinrel label` output folder?")
        if "shards" not in manifest or "grades" not in manifest:
            raise ValueError(f"{odir / MANIFEST_NAME} lacks 'shards' or 'grades'; `pinrel label` writes both")
        files = shard_files(odir, manifest, allow_partial)
    except ValueError as e:
        raise LabelError(f"labels: {e}") from None
    schema = labels_schema(manifest["grades"])
    tables = [pq.read_table(f, schema=schema) for f in files]
    return pa.concat_tables(tables) if tables else schema.empty_table()
