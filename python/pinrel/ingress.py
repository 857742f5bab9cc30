"""Ray Serve's HAProxy ingress: the environment that turns it on, with its side ports chosen.

Ray Serve reads these variables when its controller and replicas start, and they inherit them from the
process that calls `ray.init`: set them before that call, they do nothing to a running cluster. Left
alone, HAProxy's stats page and metrics endpoint take fixed ports (8404, 9101), so a second app on the
same machine, or anything else already there, fails to start; `haproxy_env` gives each one its own.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

ENABLE = "RAY_SERVE_ENABLE_HA_PROXY"
STATS_PORT = "RAY_SERVE_HAPROXY_STATS_PORT"
METRICS_PORT = "RAY_SERVE_HAPROXY_METRICS_PORT"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now. Another process may take it before it is bound again, which is
    acceptable for side ports and tests, not a reservation."""
    if not isinstance(host, str) or not host:
        raise TypeError(f"host: expected a non-empty str, got {host!r}")
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_range() -> range:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999  # Linux's default
    return range(lo, hi + 1)


def free_side_port() -> int:
    """A port for a server that binds every interface (HAProxy's side ports), free there now.

    Drawn outside the OS's ephemeral range, from which every port-0 bind takes its port (Ray starts
    dozens of those, on the node's address, after this pick), and above Ray's worker ports
    (10002-19999): `free_port` on 127.0.0.1 once handed HAProxy a port that a Ray process then held
    on the node's address, and HAProxy's bind on 0.0.0.0 failed."""
    ephemeral = _ephemeral_range()
    candidates = [p for p in range(20000, 65536) if p not in ephemeral]
    rng = random.SystemRandom()
    for _ in range(64 if candidates else 0):
        port = rng.choice(candidates)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    return free_port("0.0.0.0")


def _port(name: str, value: int | None) -> int:
    if value is None:
        return free_side_port()
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int port or None, got {type(value).__name__}")
    if not 1 <= value <= 65535:
        raise ValueError(f"{name}: must be in [1, 65535], got {value}")
    return value


def haproxy_env(stats_port: int | None = None, metrics_port: int | None = None) -> dict[str, str]:
    """The environment for the HAProxy ingress; a port left as None is a free one picked now."""
    stats = _port("stats_port", stats_port)
    metrics = _port("metrics_port", metrics_port)
    if stats == metrics:
        raise ValueError(f"stats_port and metrics_port must differ, both are {stats}")
    return {ENABLE: "1", STATS_PORT: str(stats), METRICS_PORT: str(metrics)}
