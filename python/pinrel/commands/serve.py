"""`pinrel serve --model DIR`: the Serve app on a local Ray, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="serve a student over HTTP on a local Ray Serve",
        description="Start a local Ray, deploy the student behind Ray Serve (POST /v1/score, GET /healthz, "
        "GET /v1/model) and serve until Ctrl-C or SIGTERM. On a cluster, use `serve run/deploy "
        "serve/config.yaml` instead.",
    )
    p.add_argument("--model", required=True, help="student directory written by `pinrel distill`")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--max-items", type=int, default=1000)
    p.add_argument(
        "--ingress",
        choices=("proxy", "haproxy"),
        default="proxy",
        help="HTTP ingress of the local Ray it starts: Ray Serve's proxy actor (default), or HAProxy "
        "in front of replicas serving HTTP themselves (RAY_SERVE_ENABLE_HA_PROXY=1; experimental in "
        "Ray, and the faster one: benches/bench_serving.py)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = Path(args.model)
    # Refuse a bad model before starting Ray: a clear error beats a replica that never gets healthy.
    from ..predictor import read_manifest

    manifest = read_manifest(model)
    if manifest["kind"] != "student":
        raise ValueError(f"--model: {model} holds a {manifest['kind']!r}, not a student; serve students")
    if not 1 <= args.replicas <= 64:
        raise ValueError(f"--replicas: must be in [1, 64], got {args.replicas}")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port: must be in [1, 65535], got {args.port}")

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if args.ingress == "haproxy":
        from ..ingress import ENABLE, haproxy_env

        # Read by Ray Serve's controller and replicas when they start, which inherit it from here;
        # side ports the user already chose in the environment win over the free ones picked here.
        env = haproxy_env()
        os.environ[ENABLE] = env.pop(ENABLE)
        for key, value in env.items():
            os.environ.setdefault(key, value)
    # Imported after the environment is set: Ray Serve reads its settings when it is imported.
    import ray
    from ray import serve

    from ..serving import LoadedModel, RelevanceService, check_options

    options = check_options({"model_path": str(model.resolve()), "max_items": args.max_items})
    # Before Ray starts: the replicas would load it the same way, and fail over and over.
    LoadedModel(options["model_path"])

    stop = threading.Event()
    ray.init(include_dashboard=False)
    # After ray.init: Ray installs its own SIGTERM handler that aborts the process; ours shuts the
    # app and the local cluster down in order instead.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        app = RelevanceService.options(num_replicas=args.replicas).bind(**options)  # type: ignore[attr-defined]
        serve.run(app, name="pinrel", route_prefix="/")
        print(
            f"pinrel: serving {model} on http://{args.host}:{args.port} (docs at /docs); Ctrl-C to stop",
            flush=True,
        )
        if args.ingress == "haproxy":
            from ..ingress import METRICS_PORT, STATS_PORT

            print(
                f"pinrel: HAProxy stats on port {os.environ[STATS_PORT]}, "
                f"metrics on port {os.environ[METRICS_PORT]}",
                flush=True,
            )
        stop.wait()
        print("pinrel: shutting down", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
