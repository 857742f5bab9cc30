"""`serve run serve/config.yaml` and `pinrel serve` as a user runs them: separate processes, real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pinrel import Client
from pinrel.ingress import free_port

from .conftest import REPO
from .serving_helpers import ITEMS, make_student

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"
    env.pop("RAY_ADDRESS", None)
    return env


def _wait_healthy(client: Client, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"server exited early with {proc.returncode}:\n{out[-4000:]}")
        if client.healthy():
            return
        time.sleep(0.5)
    raise AssertionError("server did not become healthy")


def _stop(proc: subprocess.Popen[bytes], group: bool = True) -> int:
    # `serve run` may ignore SIGINT; SIGTERM to the whole process group is what stops it reliably.
    # `pinrel serve` handles SIGTERM itself, so it gets the signal alone and must exit cleanly.
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def _hold_ports(*ports: int) -> list[socket.socket]:
    """Bind each port on every interface (one already taken by something else is held just as well)."""
    held = []
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            s.close()
            continue
        held.append(s)
    return held


def _haproxy_pids(session: int) -> list[int]:
    """HAProxy processes in the server's session: proof that the HAProxy ingress really runs."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "comm").read_text().strip() == "haproxy":
                if os.getsid(int(d.name)) == session:
                    pids.append(int(d.name))
        except OSError:
            pass
    return pids


def _port_closed(port: int, timeout: float = 60) -> bool:
    import socket

    # Ray's HTTP proxy is a separate process that goes down shortly after the driver.
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.5)
    return False


def test_every_way_to_deploy_can_fill_a_batch() -> None:
    """A replica takes at most max_ongoing_requests at once, so a smaller cap than max_batch_size
    silently shrinks every fused batch (Serve's own default is 5)."""
    from pinrel.serving import DEFAULTS, RelevanceService

    assert RelevanceService.max_ongoing_requests >= DEFAULTS["max_batch_size"]
    for name in ("config.yaml", "config.gpu.yaml"):
        deployment = yaml.safe_load((REPO / "serve" / name).read_text())["applications"][0]["deployments"][0]
        assert deployment["max_ongoing_requests"] >= deployment["user_config"]["max_batch_size"], name


def test_serve_run_config_file(tmp_path: Path) -> None:
    # Serve's default proxy ingress only: under RAY_SERVE_ENABLE_HA_PROXY=1, `serve run` stopped by
    # SIGTERM can leave its HAProxy process running (Ray 2.60; seen twice here, the port stayed
    # open), so the HAProxy ingress is tested through `pinrel serve`, which shuts Serve down in order.
    student = make_student(tmp_path / "student", seed=3)
    port = free_port()
    config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    config["http_options"]["port"] = port
    deployment = config["applications"][0]["deployments"][0]
    deployment["user_config"]["model_path"] = str(student)
    deployment["autoscaling_config"]["max_replicas"] = 1
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))

    serve_bin = Path(sys.executable).with_name("serve")
    proc = subprocess.Popen(
        [str(serve_bin), "run", "--address", "local", str(cfg)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = Client(f"http://127.0.0.1:{port}")
    try:
        _wait_healthy(client, proc)
        results = client.score("red mug", ITEMS, top_k=3)
        assert len(results) == 3
    finally:
        code = _stop(proc)
    assert code is not None
    assert _port_closed(port)


@pytest.mark.parametrize("ingress", ["proxy", "haproxy"])
def test_pinrel_serve_shortcut(tmp_path: Path, ingress: str) -> None:
    student = make_student(tmp_path / "student", seed=4)
    port = free_port()
    cmd = ["serve", "--model", str(student), "--port", str(port), "--ingress", ingress]
    # --ingress alone turns HAProxy on and picks its stats/metrics ports: HAProxy's default ones are
    # held here, so a server that fell back to them would never get healthy.
    blockers = _hold_ports(8404, 9101)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pinrel.cli", *cmd],
        cwd=tmp_path,
        env={**_env(), "RAY_ADDRESS": "local"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = Client(f"http://127.0.0.1:{port}")
    try:
        _wait_healthy(client, proc)
        assert bool(_haproxy_pids(proc.pid)) == (ingress == "haproxy")
        assert client.model()["grades"] == 5
        assert len(client.score("lamp", ITEMS)) == len(ITEMS)
    finally:
        code = _stop(proc, group=False)
        for b in blockers:
            b.close()
    assert code == 0
    assert _port_closed(port)


def test_pinrel_serve_refuses_a_missing_model(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pinrel.cli", "serve", "--model", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert out.returncode == 2
    assert "does not exist" in out.stderr
