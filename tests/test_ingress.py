"""pinrel.ingress: the HAProxy environment and its port checks (no Ray needed)."""

from __future__ import annotations

import socket

import pytest

from pinrel.ingress import ENABLE, METRICS_PORT, STATS_PORT, free_port, haproxy_env


def test_free_ports_are_bindable_and_distinct() -> None:
    env = haproxy_env()
    assert env[ENABLE] == "1"
    stats, metrics = int(env[STATS_PORT]), int(env[METRICS_PORT])
    assert stats != metrics
    for port in (stats, metrics, free_port()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_given_ports_are_kept() -> None:
    assert haproxy_env(stats_port=18404, metrics_port=19101) == {
        ENABLE: "1",
        STATS_PORT: "18404",
        METRICS_PORT: "19101",
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"stats_port": 0}, ValueError, "stats_port: must be in"),
        ({"metrics_port": 70000}, ValueError, "metrics_port: must be in"),
        ({"stats_port": "8404"}, TypeError, "stats_port: expected an int"),
        ({"metrics_port": True}, TypeError, "metrics_port: expected an int"),
        ({"stats_port": 9000, "metrics_port": 9000}, ValueError, "must differ"),
    ],
)
def test_bad_ports_are_refused(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        haproxy_env(**kwargs)


def test_free_port_refuses_a_bad_host() -> None:
    with pytest.raises(TypeError, match="host"):
        free_port("")


def test_side_ports_avoid_the_ephemeral_range_and_bind_every_interface() -> None:
    """HAProxy binds 0.0.0.0; a port drawn from the OS's ephemeral range can be taken by any process
    that binds port 0 (Ray starts many, on the node's address) between the pick and HAProxy's bind."""
    from pinrel.ingress import _ephemeral_range, free_side_port

    ephemeral = _ephemeral_range()
    for _ in range(20):
        port = free_side_port()
        assert port >= 20000 and port not in ephemeral
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))
    env = haproxy_env()
    assert all(int(env[k]) not in ephemeral for k in (STATS_PORT, METRICS_PORT))
