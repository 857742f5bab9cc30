"""Ray Serve's HAProxy ingress: the environment that turns it on, with its side ports chosen.

Ray Serve reads these variables when its controller and replicas start, and they inherit them from the
process that calls `ray.init`: set them before that call, they do nothing to a running cluster. Left
alone, HAProxy's stats page and metrics endpoint take fixed ports (8404, 9101), so a second app on the
same machine, or anything else already there, fails to start; `haproxy_env` gives each one its own.
"""

from __future__ import annotations

import socket

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


def _port(name: str, value: int | None) -> int:
    if value is None:
        return free_port()
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
