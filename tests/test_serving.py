"""The Serve app for real: a local Ray, a Serve app on 127.0.0.1, HTTP requests against it."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from pinrel import Client  # noqa: E402
from pinrel.ingress import free_port, haproxy_env  # noqa: E402
from pinrel.serving import ScoreResponse, model_fingerprint  # noqa: E402

from .serving_helpers import ITEMS, make_student  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("students")
    return make_student(root / "a", seed=1), make_student(root / "b", seed=2)


# Ray Serve's two HTTP ingresses: its Python proxy actor (the default), and HAProxy in front of
# replicas that each run their own HTTP server (RAY_SERVE_ENABLE_HA_PROXY, what the serving bench
# measures fastest). The variable must be in the environment of the Ray cluster's processes, which
# inherit it from here at ray.init.


@pytest.fixture(scope="module", params=["haproxy", "proxy"])
def base_url(request: pytest.FixtureRequest) -> Any:
    env = haproxy_env() if request.param == "haproxy" else {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        port = free_port()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
        serve.shutdown()
        ray.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def deploy(model: Path, replicas: int = 1, **options: Any) -> None:
    """Deploy the way `serve deploy serve/config.yaml` does: by import path plus user_config.

    Deploying by import path keeps the code version stable, so a changed user_config is applied
    in place through `reconfigure` (a hot swap) instead of by replacing replicas.
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = {
        "applications": [
            {
                "name": "pinrel",
                "route_prefix": "/",
                "import_path": "pinrel.serving:app",
                "deployments": [
                    {
                        "name": "RelevanceService",
                        "num_replicas": replicas,
                        "user_config": {"model_path": str(model), **options},
                    }
                ],
            }
        ]
    }
    _get_global_client().deploy_apps(ServeDeploySchema(**config))
    deadline = time.time() + 120
    while time.time() < deadline:
        app = serve.status().applications.get("pinrel")
        if app is not None and app.status == "RUNNING":
            dep = app.deployments["RelevanceService"]
            if dep.status == "HEALTHY" and sum(dep.replica_states.values()) == replicas:
                if dep.replica_states.get("RUNNING", 0) == replicas:
                    return
        if app is not None and app.status == "DEPLOY_FAILED":
            raise RuntimeError(app.message)
        time.sleep(0.2)
    raise TimeoutError("the pinrel app did not become healthy in 120 s")


def post(url: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url + "/v1/score", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_scores_ranks_and_describes_the_model(base_url: str, students: tuple[Path, Path]) -> None:
    deploy(students[0])
    client = Client(base_url)
    assert client.healthy()
    results = client.score("red mug", ITEMS)
    assert [r["index"] for r in results] != [] and len(results) == len(ITEMS)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert abs(sum(r["probs"]) - 1) < 1e-4 and 1 <= r["grade"] <= 5 and 1 <= r["score"] <= 5
        assert r["id"] == ITEMS[r["index"]]["id"]
    top2 = client.score("red mug", ITEMS, top_k=2)
    assert [r["index"] for r in top2] == [r["index"] for r in results[:2]]
    # The body is rendered by hand for speed; it must still be exactly the documented schema.
    status, raw = post(base_url, json.dumps({"query": "red mug", "items": ITEMS}).encode())
    assert status == 200
    assert ScoreResponse.model_validate(raw).model_dump() == raw
    info = client.model()
    assert info["grades"] == 5 and info["hash"] == model_fingerprint(students[0])
    assert info["device"] == "cpu"  # no GPU asked for (and none on a CPU machine)
    with urllib.request.urlopen(base_url + "/docs", timeout=10) as resp:
        assert resp.status == 200
    # The route reads its body itself for speed; the docs must still show the request schema.
    with urllib.request.urlopen(base_url + "/openapi.json", timeout=10) as resp:
        spec = json.loads(resp.read())
    body_schema = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": "#/components/schemas/ScoreRequest"}
    schemas = spec["components"]["schemas"]
    assert set(schemas["ScoreRequest"]["properties"]) == {"query", "items", "top_k"}
    assert "title" in schemas["Item"]["properties"] and "ScoreResponse" in schemas
    # The in-process scorer and the service agree: serving adds transport, not different numbers.
    from pinrel import Scorer

    local = Scorer.load(students[0]).predict_proba([{"query": "red mug", **i} for i in ITEMS])
    for r in results:
        assert r["probs"] == pytest.approx(local[r["index"]].tolist(), abs=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 422, "body"),
        (json.dumps({"items": ITEMS}).encode(), 422, "query"),
        (json.dumps({"query": 3, "items": ITEMS}).encode(), 422, "query"),
        (json.dumps({"query": "x", "items": []}).encode(), 422, "items"),
        (json.dumps({"query": "x", "items": "mug"}).encode(), 422, "items"),
        (json.dumps({"query": "x", "items": [{"titel": "typo"}]}).encode(), 422, "items.0.titel"),
        (json.dumps({"query": "x", "items": [{"title": 5}]}).encode(), 422, "items.0.title"),
        (json.dumps({"query": "x", "items": ITEMS, "top_k": 0}).encode(), 422, "top_k"),
        (json.dumps({"query": "x", "items": [{"title": "a"}] * 11}).encode(), 413, "items"),
        (json.dumps({"query": "x", "items": [{"title": "a" * 501}]}).encode(), 422, "items.0.title"),
        # Every item and field within its limit, but the body is over max_body_bytes.
        (json.dumps({"query": "x", "items": [{"title": "a" * 450}] * 10}).encode(), 413, "body"),
        (json.dumps({"query": "  ", "items": ITEMS}).encode(), 422, "query"),
        (json.dumps({"query": "x", "items": [{"id": 1}]}).encode(), 422, "items.0"),
        (json.dumps({"query": "x", "items": [{"id": True, "title": "a"}]}).encode(), 422, "items.0.id"),
    ],
)
def test_bad_requests_get_4xx_naming_the_field(
    base_url: str, students: tuple[Path, Path], body: bytes, status: int, field: str | None
) -> None:
    deploy(students[0], max_items=10, max_field_chars=500, max_body_bytes=4000)  # no-op if deployed so
    got, payload = post(base_url, body)
    assert got == status, payload
    # One shape for every refusal, whether pydantic or a size limit refused it.
    assert set(payload) == {"error", "field", "details"}, payload
    assert payload["field"] == field == payload["details"][0]["field"], payload
    assert isinstance(payload["error"], str) and field in payload["error"], payload
    # The replica survived: a good request still works.
    ok, _ = post(base_url, json.dumps({"query": "mug", "items": ITEMS[:2]}).encode())
    assert ok == 200


def _load(
    url: str,
    threads: int,
    stop: threading.Event,
    seen: list[str],
    failures: list[str],
    client: Client | None = None,
) -> None:
    """Score from `threads` threads until `stop` is set (a time-bounded load: its length must not
    depend on how fast the server is, or a fast ingress finishes before the event under test).

    Raw HTTP by default (nothing retried, `seen` gets the answering model's hash); through
    `client` (which resends an idempotent request that hit a dying replica), `seen` gets "ok".
    """

    def worker(k: int) -> None:
        i = k
        while not stop.is_set():
            try:
                if client is not None:
                    client.score(f"mug {i}", ITEMS)
                    seen.append("ok")
                    i += threads
                    continue
                req = urllib.request.Request(
                    url + "/v1/score",
                    data=json.dumps({"query": f"mug {i}", "items": ITEMS}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=30) as resp:
                    seen.append(json.loads(resp.read())["model"])
            except Exception as e:  # every failure counts; nothing is retried here
                failures.append(repr(e))
            i += threads

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def test_hot_swap_under_load_drops_nothing(base_url: str, students: tuple[Path, Path]) -> None:
    a, b = students
    deploy(a)
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(base_url, 4, stop, seen, failures))
    loader.start()
    time.sleep(1.0)
    deploy(b)  # same app, new user_config: replicas reconfigure in place
    fb = model_fingerprint(b)
    deadline = time.time() + 60
    while Client(base_url).model()["hash"] != fb and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # load on the new model too
    stop.set()
    loader.join()
    assert failures == []
    fa = model_fingerprint(a)
    assert fa in seen and set(seen) <= {fa, fb} and seen[-1] == fb
    assert Client(base_url).model()["hash"] == fb

    # A model path that does not exist: the update is refused and b keeps serving.
    deploy(Path("/nonexistent/student"))
    info = Client(base_url).model()
    assert info["hash"] == fb and "nonexistent" in (info["last_update_error"] or "")
    assert post(base_url, json.dumps({"query": "mug", "items": ITEMS}).encode())[0] == 200
    # Options the replica cannot take are refused the same way: raising in reconfigure made Serve
    # stop the replica, and its replacement failed on the same config.
    deploy(b, max_itmes=5)
    info = Client(base_url).model()
    assert info["hash"] == fb and "max_itmes" in (info["last_update_error"] or "")
    assert post(base_url, json.dumps({"query": "mug", "items": ITEMS}).encode())[0] == 200
    # Back to a config that works: the refusal no longer shows.
    deploy(b)
    assert Client(base_url).model()["last_update_error"] is None


def test_killing_one_of_two_replicas_under_load(base_url: str, students: tuple[Path, Path]) -> None:
    deploy(students[0], replicas=2)
    named = ray.util.list_named_actors(all_namespaces=True)
    replicas = [a for a in named if "RelevanceService" in a["name"] and "REPLICA" in a["name"]]
    assert len(replicas) == 2, replicas
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    # Through the Python client, as users call it: a request in flight on the killed replica fails
    # (a 500 from Serve's proxy, a reset connection from HAProxy) and the client resends it.
    client = Client(base_url, timeout=30)
    loader = threading.Thread(target=_load, args=(base_url, 4, stop, seen, failures, client))
    loader.start()
    time.sleep(0.5)
    before = len(seen) + len(failures)
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    time.sleep(3.0)  # keep the load on while the dead replica is noticed and replaced
    stop.set()
    loader.join()
    total = len(seen) + len(failures)
    assert before > 0 and total - before >= 50, (before, total)
    assert len(failures) / total <= 0.001, f"{len(failures)} of {total} failed: {failures[:5]}"
