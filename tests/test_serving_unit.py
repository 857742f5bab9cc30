"""The serving module's checks without Ray: options, limits, request parsing, the model hash, and the
students a replica must refuse. The Ray Serve behaviour itself is in tests/test_serving.py."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

import pinrel
from pinrel.serving import (
    DEFAULTS,
    LimitError,
    LoadedModel,
    api,
    check_limits,
    check_options,
    model_fingerprint,
    parse_score_request,
    read_body,
    score_fused,
)
from pinrel.student import StudentConfig, StudentModel, save_student

from .serving_helpers import make_student


def test_options_are_the_whole_config_over_the_defaults() -> None:
    """Merged over a replica's current options, a key removed from user_config kept its old value
    on running replicas and its default on new ones: two limits behind one deployment."""
    assert check_options({"model_path": "/m", "max_items": 10})["max_items"] == 10
    assert check_options({"model_path": "/m"}) == {**DEFAULTS, "model_path": "/m"}
    for config, message in (
        ({"max_itmes": 5}, r"unknown field\(s\) \['max_itmes'\]"),
        ({"max_items": 0}, "max_items: must be an integer >= 1"),
        ({"batch_wait_timeout_s": True}, "batch_wait_timeout_s: must be a number in"),
        ({"model_path": "  "}, "model_path: expected a directory path"),
    ):
        with pytest.raises(ValueError, match=message):
            check_options(config)


def _request(body: dict[str, object]) -> object:
    return parse_score_request(json.dumps(body).encode())


def test_requests_that_would_score_nothing_are_refused() -> None:
    from fastapi.exceptions import RequestValidationError

    for body, where in (
        ({"query": "   ", "items": [{"title": "a"}]}, ("query",)),
        ({"query": "x", "items": [{"id": True, "title": "a"}]}, ("items", 0, "id")),
        ({"query": "x", "items": [{"id": 1.0, "title": "a"}]}, ("items", 0, "id")),
        ({"query": "x", "items": [{"title": "a"}], "top_k": "3"}, ("top_k",)),
    ):
        with pytest.raises(RequestValidationError) as info:
            _request(body)
        assert [e["loc"] for e in info.value.errors()] == [where]
    # An item without any text got a confident constant score.
    for item in ({}, {"id": 7}, {"title": None, "captions": [" ", ""]}):
        req = _request({"query": "mug", "items": [{"title": "Red mug"}, item]})
        with pytest.raises(LimitError, match=r"items\.1: no text in any item field") as err:
            check_limits(req, 100, 1000)  # type: ignore[arg-type]
        assert err.value.field == "items.1"
    # A list of empty strings has no characters but costs one per element.
    req = _request({"query": "mug", "items": [{"title": "a", "captions": [""] * 1001}]})
    with pytest.raises(LimitError, match="at most 1000 characters"):
        check_limits(req, 100, 1000)  # type: ignore[arg-type]


def test_unknown_paths_and_methods_get_the_error_shape() -> None:
    client = TestClient(api)
    for method, path, status in (("get", "/nope", 404), ("get", "/v1/score", 405)):
        response = getattr(client, method)(path)
        assert response.status_code == status
        body = response.json()
        assert set(body) == {"error", "field", "details"} and body["field"] == "path", body


def test_the_model_hash_is_of_the_model_wherever_it_lives(tmp_path: Path) -> None:
    """Under a folder named `_ray`, every model hashed to the digest of nothing."""
    a = make_student(tmp_path / "_ray" / "a", seed=1)
    b = make_student(tmp_path / "_ray" / "b", seed=2)
    assert model_fingerprint(a) != model_fingerprint(b)
    moved = tmp_path / "elsewhere"
    shutil.copytree(a, moved)
    assert model_fingerprint(moved) == model_fingerprint(a)
    (moved / "_ray").mkdir()
    (moved / "_ray" / "checkpoint.bin").write_bytes(b"training state, not the model")
    assert model_fingerprint(moved) == model_fingerprint(a)


def test_a_student_that_needs_vectors_is_not_served(tmp_path: Path) -> None:
    """It loaded and passed every health check, and then failed every request: the HTTP API takes
    text fields only."""
    config = StudentConfig(grades=5, n_features=64, embed_dim=4, hidden=(8,), extra_column="emb", extra_dim=3)
    torch.manual_seed(0)
    save_student(
        tmp_path / "s", StudentModel(config), pinrel.FeatureHasher(n_features=64), pinrel.AssemblySpec()
    )
    with pytest.raises(ValueError, match=r"per-item vector .'emb'.*text fields only"):
        LoadedModel(str(tmp_path / "s"))


def _body_app(max_bytes: int) -> TestClient:
    """A route that reads its body through `read_body`, as the score route does."""
    app = FastAPI()

    # Annotations are strings in this module (PEP 563): FastAPI resolves `Request` from its globals.
    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, max_bytes)
        except LimitError as e:
            return JSONResponse(status_code=413, content={"field": e.field, "error": str(e)})
        return JSONResponse({"size": len(body), "head": body[:8].decode()})

    return TestClient(app)


def test_the_body_is_read_only_up_to_its_cap() -> None:
    client = _body_app(100)
    assert client.post("/echo", content=b"x" * 100).json() == {"size": 100, "head": "x" * 8}
    # Declared too long: refused on the header, with the declared size.
    refused = client.post("/echo", content=b"y" * 101)
    assert refused.status_code == 413
    assert refused.json() == {"field": "body", "error": "body: at most 100 bytes, got 101"}

    # Chunked (no Content-Length): counted chunk by chunk, refused at the chunk that passes the cap.
    def chunks(n: int) -> Any:
        for _ in range(n):
            yield b"z" * 40

    assert client.post("/echo", content=chunks(2)).json() == {"size": 80, "head": "z" * 8}
    refused = client.post("/echo", content=chunks(1000))
    assert refused.status_code == 413 and refused.json()["error"] == "body: at most 100 bytes, got more"
    assert check_options({"max_body_bytes": 5})["max_body_bytes"] == 5
    with pytest.raises(ValueError, match="max_body_bytes: must be an integer >= 1"):
        check_options({"max_body_bytes": 0})


def test_one_failing_request_does_not_fail_the_requests_fused_with_it() -> None:
    """Serve hands one exception to every request of a failed batch; a fused call that fails is
    retried request by request, and only the request that fails alone gets an exception."""
    calls: list[list[str]] = []

    def score_batch(queries: list[str], item_lists: list[Any]) -> list[Any]:
        calls.append(list(queries))
        if "bad" in queries:
            raise RuntimeError("the scorer broke on 'bad'")
        return [f"{q}:{len(items)}" for q, items in zip(queries, item_lists, strict=True)]

    out = asyncio.run(score_fused(score_batch, ["a", "bad", "c"], [[1], [1, 2], [1, 2, 3]]))
    assert out[0] == "a:1" and out[2] == "c:3"
    assert isinstance(out[1], RuntimeError) and "'bad'" in str(out[1])
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    # A batch that works is one call, its results in request order.
    calls.clear()
    assert asyncio.run(score_fused(score_batch, ["x", "y"], [[], [0]])) == ["x:0", "y:1"]
    assert calls == [["x", "y"]]
