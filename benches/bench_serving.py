"""Serving latency and throughput: Ray Serve (1 and 2 replicas; behind Serve's proxy actor and behind
HAProxy) vs plain FastAPI + uvicorn.

Requests are 1 query x 100 items from the embedded sample catalog, sent on loopback by an asyncio
load generator at increasing concurrency, each level bounded in time. Prints p50/p99 latency,
requests/s and scored pairs/s per level, and the Serve/plain throughput ratio at equal concurrency.

    python benches/bench_serving.py [--model DIR] [--seconds 6] [--concurrency 1 4 16 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import aiohttp
import httpx

from pinrel.ingress import free_port, haproxy_env

REPO = Path(__file__).resolve().parent.parent
JSON = {"Content-Type": "application/json"}


def sample_items(n: int) -> list[dict[str, Any]]:
    from pinrel.datasets import sample

    with tempfile.TemporaryDirectory() as d:
        sample.generate(d, seed=0, n_items=max(n, 200), n_queries=20, n_labeled=100, n_unlabeled=100)
        import pyarrow.parquet as pq

        rows = pq.read_table(Path(d) / "catalog.parquet").slice(0, n).to_pylist()
    from pinrel.assembly import ITEM_FIELDS as fields

    return [{"id": r["item_id"], **{k: r[k] for k in fields if r.get(k) is not None}} for r in rows]


def default_student(out: Path) -> Path:
    """A student with the shipped default sizes (random weights: speed does not depend on them)."""
    import pinrel
    from pinrel.student import StudentConfig, StudentModel, save_student

    config = StudentConfig(grades=5)
    save_student(
        out,
        StudentModel(config).eval(),
        pinrel.FeatureHasher(n_features=config.n_features),
        pinrel.AssemblySpec(),
    )
    return out


def summarize(level: int | str, latencies: list[float], failures: int, elapsed: float, items: int) -> dict:
    lat = sorted(latencies)
    n = len(lat)
    return {
        "concurrency": level,
        "requests": n,
        "failures": failures,
        "rps": n / elapsed,
        "pairs_s": n * items / elapsed,
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * lat[min(n - 1, int(0.99 * n))] if lat else float("nan"),
    }


# The load generator shares the 2 CPUs with the servers, so it is kept cheap: the body is encoded
# once, and aiohttp (a Ray Serve dependency) costs a fraction of httpx per request.
async def _post(session: Any, url: str, body: bytes) -> float | None:
    t0 = time.perf_counter()
    try:
        async with session.post(url + "/v1/score", data=body, headers=JSON) as r:
            await r.read()
            ok = r.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    return time.perf_counter() - t0 if ok else None


async def run_level(url: str, body: bytes, n_items: int, concurrency: int, seconds: float) -> dict[str, Any]:
    """Closed loop: `concurrency` clients, each sending its next request when the last returns."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                dt = await _post(session, url, body)
                if dt is None:
                    failures += 1
                else:
                    latencies.append(dt)

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t_start
    return summarize(concurrency, latencies, failures, elapsed, n_items)


async def run_rate(url: str, body: bytes, n_items: int, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: a request every 1/rate s whatever the server does, as real traffic arrives."""
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one() -> None:
            nonlocal failures
            dt = await _post(session, url, body)
            if dt is None:
                failures += 1
            else:
                latencies.append(dt)

        tasks = []
        t_start = time.perf_counter()
        for k in range(int(rate * seconds)):
            delay = t_start + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t_start
    return summarize(f"r{rate:.0f}", latencies, failures, elapsed, n_items)


def wait_healthy(url: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy")


def bench(url: str, body: dict[str, Any], levels: list[int], seconds: float) -> list[dict[str, Any]]:
    raw, n = json.dumps(body).encode(), len(body["items"])
    asyncio.run(run_level(url, raw, n, 2, 1.0))  # warm-up: first requests pay for lazy imports
    rows = [asyncio.run(run_level(url, raw, n, c, seconds)) for c in levels]
    return [*rows, asyncio.run(run_rate(url, raw, n, 100.0, seconds))]


def serve_rows(
    model: Path, replicas: int, levels: list[int], seconds: float, body: dict[str, Any], env: dict[str, str]
) -> list[dict]:
    import ray
    from ray import serve

    from pinrel.serving import RelevanceService

    port = free_port()
    # The cluster's processes (controller, replicas, HAProxy) inherit the environment at ray.init.
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = RelevanceService.options(
            num_replicas=replicas, max_ongoing_requests=64, ray_actor_options={"num_cpus": 2 / replicas}
        ).bind(model_path=str(model))
        serve.run(app, name="pinrel", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        return bench(url, body, levels, seconds)
    finally:
        serve.shutdown()
        ray.shutdown()


def plain_rows(model: Path, levels: list[int], seconds: float, body: dict[str, Any]) -> list[dict]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "benches" / "plain_fastapi_app.py"), str(model), str(port)],
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        return bench(url, body, levels, seconds)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="student dir (default: a default-size student with random weights)")
    ap.add_argument("--seconds", type=float, default=6.0, help="duration of each concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the Ray cluster the Serve runs start (repeatable), e.g. Ray Serve's "
        "RAY_SERVE_THROUGHPUT_OPTIMIZED=1; set before ray.init, so the controller, proxy and "
        "replicas all see it",
    )
    args = ap.parse_args()
    for kv in args.serve_env:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            ap.error(f"--serve-env: expected KEY=VALUE, got {kv!r}")
        # The plain FastAPI app runs first and never reads RAY_* variables.
        os.environ[key] = value

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else default_student(Path(tmp) / "student")
        body = {"query": "red ceramic mug", "items": sample_items(args.items)}
        table: dict[str, list[dict]] = {
            "plain FastAPI": plain_rows(model, args.concurrency, args.seconds, body)
        }
        for ingress, env in (("proxy", {}), ("HAProxy", haproxy_env())):
            for replicas in (1, 2):
                rows = serve_rows(model, replicas, args.concurrency, args.seconds, body, env)
                table[f"Serve x{replicas} {ingress}"] = rows
    print(f"\n1 query x {args.items} items per request, {args.seconds:.0f} s per level, loopback,", end=" ")
    print(f"{os.cpu_count()} CPUs; conc 'r100' = open loop at 100 requests/s")
    if args.serve_env:
        print("Serve runs with: " + " ".join(args.serve_env))
    print(f"{'server':<20}{'conc':>6}{'req/s':>9}{'pairs/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'fail':>6}")
    for name, rows in table.items():
        for r in rows:
            print(
                f"{name:<20}{r['concurrency']:>6}{r['rps']:>9.1f}{r['pairs_s']:>10.0f}"
                f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['failures']:>6}"
            )
    plain = {r["concurrency"]: r for r in table["plain FastAPI"]}
    print("\nServe / plain FastAPI throughput at equal load (target >= 0.7x):")
    serve_names = [name for name in table if name.startswith("Serve")]
    for name in serve_names:
        ratios = [
            f"{r['concurrency']}: {r['rps'] / plain[r['concurrency']]['rps']:.2f}x" for r in table[name]
        ]
        print(f"  {name}: " + ", ".join(ratios))
    print("Targets on this machine (saturation >= 20000 pairs/s; p99 < 50 ms at 100 requests/s):")
    for ingress in ("proxy", "HAProxy"):
        rows = [r for name in serve_names if name.endswith(ingress) for r in table[name]]
        saturation = max(r["pairs_s"] for r in rows)
        p99 = min(r["p99_ms"] for r in rows if r["concurrency"] == "r100")
        print(
            f"  Serve, {ingress} ingress: saturation {saturation:.0f} pairs/s, p99 at 100 req/s {p99:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
