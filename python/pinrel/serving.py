# FastAPI reads handler annotations at run time, so this module avoids `from __future__ import annotations`.
"""The Ray Serve application: the student behind `POST /v1/score`, batched across requests.

`serve run serve/config.yaml` imports `pinrel.serving:app`; the model comes from the deployment's
`user_config.model_path`, so a new model is rolled out by editing the config (`serve deploy`), which
calls `reconfigure` on the running replicas without restarting them.
"""

import asyncio
import hashlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic_core
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, WithJsonSchema, with_config
from pydantic.functional_validators import PlainValidator
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import TypedDict

from .assembly import ITEM_TEXT_FIELDS
from .predictor import RUN_DIR

logger = logging.getLogger("ray.serve")

DEFAULTS: dict[str, Any] = {
    "model_path": None,
    "max_items": 1000,
    "max_field_chars": 20_000,
    # Read before any other check, so it bounds what one request can make a replica hold: 1000 items
    # of a few KB each fit with room to spare.
    "max_body_bytes": 16 * 1024 * 1024,
    "max_batch_size": 32,
    "batch_wait_timeout_s": 0.002,
}


def _item_id(value: Any) -> Any:
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError("should be a string, an integer or null")


# Strict, and one error for the field (a union would report one per member, as `id.str`, `id.int`):
# an id of true or 1.0 would otherwise come back as 1, not as the client sent it.
ItemId = Annotated[
    Any,
    PlainValidator(_item_id),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}),
]


# Items validate to plain dicts (a TypedDict, not a model): they go to the Rust featurizer as they
# are, with no per-item model objects to build and dump again on every request.
@with_config(ConfigDict(extra="forbid"))
class Item(TypedDict, total=False):
    # Unknown keys are refused, so a misspelt field ("titel") is a 422 naming it, not silently ignored.
    id: ItemId
    title: str | None
    description: str | None
    captions: list[str] | None
    boards: list[str] | None
    queries: list[str] | None
    link_title: str | None
    link_description: str | None
    lang: str | None


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # At least one character that is not whitespace: a blank query ranks nothing.
    query: str = Field(min_length=1, pattern=r"\S")
    items: list[Item] = Field(min_length=1)
    top_k: StrictInt | None = Field(default=None, ge=1)


class ScoredItem(BaseModel):
    id: str | int | None
    index: int
    score: float
    grade: int
    probs: list[float]


class ScoreResponse(BaseModel):
    model: str
    results: list[ScoredItem]


class LimitError(ValueError):
    """A request over one of the service's limits; `status` is its HTTP answer (413 where the request
    is too large as a whole, 422 for one field)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """Content hash of a model directory: what answered a request is always identifiable.

    The training run's checkpoints (`_ray/` inside the directory) are not the model; a `_ray` folder
    above it is just where the model lives. Each name and file is hashed with its length, so no two
    directories hash the same stream."""
    digest = hashlib.sha256()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and RUN_DIR not in p.relative_to(root).parts)
    for f in files:
        name = str(f.relative_to(root)).encode()
        digest.update(len(name).to_bytes(8, "little") + name + f.stat().st_size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def check_options(config: dict[str, Any]) -> dict[str, Any]:
    """A deployment's options: `config` (user_config, or `pinrel serve`'s flags) over DEFAULTS.

    Over the defaults, not over a replica's current options: Serve hands every replica the whole
    user_config, so a key left out must mean its default on old and new replicas alike."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"user_config: unknown field(s) {unknown}; known: {sorted(DEFAULTS)}")
    options = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    for key in ("max_items", "max_field_chars", "max_body_bytes", "max_batch_size"):
        if not isinstance(options[key], int) or isinstance(options[key], bool) or options[key] < 1:
            raise ValueError(f"user_config.{key}: must be an integer >= 1, got {options[key]!r}")
    wait = options["batch_wait_timeout_s"]
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 10:
        raise ValueError(f"user_config.batch_wait_timeout_s: must be a number in [0, 10], got {wait!r}")
    path = options["model_path"]
    if path is not None and (not isinstance(path, str) or not path.strip()):
        raise ValueError(f"user_config.model_path: expected a directory path, got {path!r}")
    return options


def configure_threads(cpus: float) -> None:
    """Thread pools for a process that scores requests on `cpus` reserved CPUs.

    The Rust featurizer (most of a request's work) gets one thread per reserved CPU, unless
    PINREL_NUM_THREADS says otherwise. torch gets one: the student's forward is a small fraction of
    the work, and a second OpenMP team spinning after each forward only takes CPU from the Rust
    pool (`benches/bench_request_path.py`, 1 query x 100 items: a score call takes ~1.5x as long
    with 2 torch threads as with 1).
    """
    import torch

    from ._native import env_num_threads, set_num_threads

    if env_num_threads() is None:
        if os.environ.get("PINREL_NUM_THREADS", "").strip():
            warnings.warn(
                f"PINREL_NUM_THREADS={os.environ['PINREL_NUM_THREADS']!r} is not a thread count from 1 to "
                f"1024; using one thread per reserved CPU ({max(1, int(cpus))})",
                stacklevel=2,
            )
        set_num_threads(max(1, int(cpus)))
    torch.set_num_threads(1)


def replica_device() -> str:
    """`cuda:0` when Ray gave this replica a GPU (`ray_actor_options.num_gpus`), else `cpu`.

    Asked of Ray rather than of torch: Ray normally hides the GPUs a worker was not given, but with
    RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES set a replica without a GPU of its own sees the node's,
    and must not take memory on a card another replica was given.
    """
    import ray

    gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    if not gpus:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"Ray assigned GPU(s) {gpus} to this replica, but torch sees no CUDA device")
    # Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPUs, so the first visible one is ours.
    return "cuda:0"


class LoadedModel:
    """A scorer plus what /v1/model reports about it; replaced as a whole on hot swap."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        from .student import Scorer

        self.path = str(path)
        self.device = device
        self.scorer = Scorer.load(path, device=device)
        extra = self.scorer._extra_spec()
        if extra is not None:
            # It would load, pass every health check, and then fail every request.
            raise ValueError(
                f"{path}: the student reads a per-item vector ({extra[0]!r}), and the HTTP API takes "
                "text fields only; serve a student distilled without embedding_column"
            )
        self.grades = int(self.scorer.grades)
        self.manifest = dict(getattr(self.scorer, "manifest", {}) or {})
        self.fingerprint = model_fingerprint(path)
        self.loaded_at = time.time()


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (`LimitError` on field `body`) once it passes `max_bytes`.

    A declared Content-Length over the cap is refused before a byte is read; a chunked body (no
    length declared) or one that sends more than it declared is read only up to the cap, so a
    client cannot make a replica buffer more than `max_bytes` of it either way.
    """
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise LimitError("body", f"body: at most {max_bytes} bytes, got {int(declared)}", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise LimitError("body", f"body: at most {max_bytes} bytes, got more", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_score_request(body: bytes) -> ScoreRequest:
    """The request body, validated straight from JSON by pydantic-core (one pass, no dict detour).

    Raises FastAPI's `RequestValidationError`, so malformed JSON and schema errors reach the same
    handler and get the same 422 body naming the field.
    """
    try:
        return ScoreRequest.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_input=False)) from None


def check_limits(req: ScoreRequest, max_items: int, max_field_chars: int) -> None:
    if len(req.items) > max_items:
        raise LimitError(
            "items", f"items: at most {max_items} items per request, got {len(req.items)}", status=413
        )
    if len(req.query) > max_field_chars:
        raise LimitError("query", f"query: at most {max_field_chars} characters, got {len(req.query)}")
    for i, item in enumerate(req.items):
        if not any(_has_text(item.get(f)) for f in ITEM_TEXT_FIELDS):
            # A client that dropped the fields would get a confident constant score for it.
            raise LimitError(
                f"items.{i}", f"items.{i}: no text in any item field ({', '.join(ITEM_TEXT_FIELDS)})"
            )
        for name, value in item.items():
            if isinstance(value, str):
                size = len(value)
            elif isinstance(value, list):
                # Each element counts one character more (its separator in the assembled text), so a
                # list of a million empty strings is not free.
                size = sum(len(v) for v in value) + len(value)
            else:
                continue
            if size > max_field_chars:
                where = f"items.{i}.{name}"
                raise LimitError(where, f"{where}: at most {max_field_chars} characters")


def _has_text(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, list) and any(v.strip() for v in value)


async def score_fused(
    score_batch: Callable[[list[str], list[Any]], list[Any]], queries: list[str], item_lists: list[Any]
) -> list[Any]:
    """`score_batch` over requests fused into one call; where that call fails, each request is scored
    on its own, and a request that fails alone gets its exception in its place in the list.

    Serve's batching hands one exception to every request of a failed batch, so without the retry a
    single request that breaks the scorer, or a fused batch too big for the device's memory where
    each request alone fits, would fail every request that happened to arrive with it.
    """
    try:
        # A worker thread, so the loop keeps accepting (and batching) requests meanwhile; the Rust
        # featurizer and torch both run outside the GIL.
        return await asyncio.to_thread(score_batch, queries, item_lists)
    except Exception as e:
        if len(queries) == 1:
            return [e]
        logger.warning("pinrel: a batch of %d requests failed (%r); scoring them one by one", len(queries), e)
    out: list[Any] = []
    for query, items in zip(queries, item_lists, strict=True):
        out.extend(await score_fused(score_batch, [query], [items]))
    return out


def render_response(fingerprint: str, req: ScoreRequest, scores: Any) -> Response:
    """The `ScoreResponse` JSON for `scores` (a `pinrel.Scores` over `req.items`), ranked.

    Built straight from the arrays: FastAPI would otherwise validate and encode a hundred response
    models per request, which costs about as much as scoring them. `response_model` on the route
    still documents the schema; the tests check answers against it.
    """
    n = len(scores)
    if not (np.isfinite(scores.scores).all() and np.isfinite(scores.probs).all()):
        # JSON has no NaN; a model that produces one is broken and must not answer with garbage.
        raise ValueError("the model produced non-finite scores")
    # Highest score first; ties keep request order, so equal items rank the same on every replica.
    order = np.lexsort((np.arange(n), -scores.scores.astype(np.float64)))
    if req.top_k:
        order = order[: req.top_k]
    items = req.items
    values, grades, probs = scores.scores.tolist(), scores.grades.tolist(), scores.probs.tolist()
    results = [
        {"id": items[i].get("id"), "index": i, "score": values[i], "grade": grades[i], "probs": probs[i]}
        for i in order.tolist()
    ]
    body = pydantic_core.to_json({"model": fingerprint, "results": results})
    return Response(content=body, media_type="application/json")


api = FastAPI(
    title="pinrel",
    description="Relevance scores for (query, item) pairs from a distilled pinrel student.",
    version="1",
)


def _openapi() -> dict[str, Any]:
    # The score route reads its body itself (see `parse_score_request`), so FastAPI cannot see its
    # schema; it is added here, so /docs still shows the request model.
    if api.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=api.title, version=api.version, description=api.description, routes=api.routes
        )
        request = ScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(request.pop("$defs", {}))
        components["ScoreRequest"] = request
        schema["paths"]["/v1/score"]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}}},
        }
        api.openapi_schema = schema
    return api.openapi_schema


api.openapi = _openapi  # type: ignore[method-assign]


@api.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # One flat, readable error per problem, each naming the field ("items.0.title"), instead of
    # FastAPI's nested default; malformed JSON arrives here too.
    errors = [
        {
            # A JSON syntax error's location is a character offset, not a field.
            "field": "body"
            if e.get("type") == "json_invalid"
            else ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
            "error": e.get("msg", ""),
        }
        for e in exc.errors()
    ] or [{"field": "body", "error": "invalid request"}]
    return error_response(422, f"invalid request: {errors[0]['field']}: {errors[0]['error']}", errors)


@api.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # An unknown path (404) or method (405) gets the same shape as every other 4xx.
    message = f"{exc.detail}: {request.method} {request.url.path}"
    return error_response(exc.status_code, message, [{"field": "path", "error": str(exc.detail)}])


def error_response(status: int, message: str, details: list[dict[str, str]]) -> JSONResponse:
    """Every 4xx has one shape: `error` (a line for people), `field` (the first field at fault) and
    `details` (each problem with its field), whether pydantic or a size limit refused the request."""
    return JSONResponse(
        status_code=status, content={"error": message, "field": details[0]["field"], "details": details}
    )


@serve.deployment(
    name="RelevanceService",
    ray_actor_options={"num_cpus": 1},
    # Serve's default (5) caps every fused batch at 5 requests, whatever max_batch_size says; the
    # YAML configs set the same 64, this covers `pinrel serve` and the Python API.
    max_ongoing_requests=64,
    health_check_period_s=5,
    health_check_timeout_s=30,
)
@serve.ingress(api)
class RelevanceService:
    def __init__(self, model_path: str | None = None, **options: Any) -> None:
        import ray

        configure_threads(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))
        self._device = replica_device()
        self._lock = threading.Lock()
        self._model: LoadedModel | None = None
        self._load_error: str | None = None
        self._options = dict(DEFAULTS)
        self._apply({"model_path": model_path, **options})

    # -- configuration -------------------------------------------------------------------------
    def _apply(self, config: dict[str, Any]) -> None:
        try:
            options = check_options(config)
        except ValueError as e:
            if self._model is None:
                raise
            # A reconfigure that raises makes Serve stop the replica, and its replacement would fail
            # the same way: a running replica refuses the update and keeps serving, as for a bad path.
            self._load_error = f"user_config refused: {e}"
            logger.error("pinrel: user_config refused, options unchanged: %s", e)
            return
        path = options["model_path"]
        current = self._model.path if self._model else None
        if path == current or (path is None and current is not None):
            self._load_error = None  # this config is in force (a rollback clears the refusal)
        elif path:
            try:
                # Load completely before swapping: requests keep hitting the old model meanwhile.
                new_model = LoadedModel(path, self._device)
            except Exception as e:
                self._load_error = f"could not load {path!r}: {e}"
                if self._model is None:
                    raise
                # Refuse the update and keep serving the model that works.
                logger.error("pinrel: model update refused, still serving %s: %s", current, e)
                options["model_path"] = current
            else:
                with self._lock:
                    self._model = new_model
                    self._load_error = None
        self._options = options
        # serve.batch adds these setters at run time; type checkers only see the undecorated method.
        batched: Any = self.score_pairs
        batched.set_max_batch_size(options["max_batch_size"])
        batched.set_batch_wait_timeout_s(float(options["batch_wait_timeout_s"]))

    def reconfigure(self, config: dict[str, Any]) -> None:
        self._apply(dict(config or {}))

    def check_health(self) -> None:
        if self._model is None:
            raise RuntimeError(f"no model loaded: {self._load_error or 'set user_config.model_path'}")

    # -- scoring ---------------------------------------------------------------------------------
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def score_pairs(self, requests: list[tuple[LoadedModel, str, list[Item]]]) -> list[Any]:
        # Requests that arrived together become one featurization and one forward pass over all
        # their pairs; requests that started on an older model finish on it, so a swap never
        # mixes models in one answer.
        out: list[Any] = [None] * len(requests)
        by_model: dict[int, list[int]] = {}
        for i, (model, _, _) in enumerate(requests):
            by_model.setdefault(id(model), []).append(i)
        for idxs in by_model.values():
            model = requests[idxs[0]][0]
            queries = [requests[i][1] for i in idxs]
            item_lists = [requests[i][2] for i in idxs]
            scores = await score_fused(model.scorer.score_batch, queries, item_lists)
            for i, s in zip(idxs, scores, strict=True):
                out[i] = s
        return out

    @api.post("/v1/score", response_model=ScoreResponse)
    async def score(self, request: Request) -> Any:
        options = self._options
        try:
            req = parse_score_request(await read_body(request, options["max_body_bytes"]))
            check_limits(req, options["max_items"], options["max_field_chars"])
        except LimitError as e:
            return error_response(e.status, str(e), [{"field": e.field, "error": str(e)}])
        model = self._model
        if model is None:
            return JSONResponse(status_code=503, content={"error": "no model loaded"})
        scores = await self.score_pairs((model, req.query, req.items))
        if isinstance(scores, Exception):
            raise scores  # this request's own failure (see score_fused)
        return render_response(model.fingerprint, req, scores)

    @api.get("/healthz")
    async def healthz(self) -> Any:
        if self._model is None:
            return JSONResponse(status_code=503, content={"status": "no model", "error": self._load_error})
        return {"status": "ok"}

    @api.get("/v1/model")
    async def model_info(self) -> Any:
        model = self._model
        if model is None:
            return JSONResponse(status_code=503, content={"error": self._load_error or "no model loaded"})
        from . import __version__

        return {
            "path": model.path,
            "hash": model.fingerprint,
            "grades": model.grades,
            "device": model.device,
            "version": model.manifest.get("version"),
            "pinrel_version": __version__,
            "loaded_at": model.loaded_at,
            "last_update_error": self._load_error,
            "options": {k: v for k, v in self._options.items() if k != "model_path"},
        }


def build_app(args: dict[str, Any]) -> Any:
    """Application builder: `serve run pinrel.serving:build_app model_path=DIR`."""
    options: dict[str, Any] = {}
    for key, value in args.items():
        # `serve run ... key=value` passes strings; numbers are coerced so limits are not compared as text.
        if key != "model_path" and isinstance(value, str):
            try:
                value = float(value) if "." in value else int(value)
            except ValueError:
                pass
        options[key] = value
    return RelevanceService.bind(**options)  # type: ignore[attr-defined]


# `serve run serve/config.yaml` binds this; the model arrives through user_config.
app = RelevanceService.bind()  # type: ignore[attr-defined]
