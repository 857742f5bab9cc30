"""`pinrel.client.Client` against a stand-in HTTP server: argument checks and foreign responses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pinrel.client import Client

BODIES = {"/healthz": b"<html>not json</html>", "/v1/model": b"[1, 2]"}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = BODIES[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def foreign_url() -> Iterator[str]:
    """A server that answers, but not as the pinrel service does."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"timeout": None}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"backoff_s": -1}, "backoff_s"),
        ({"backoff_s": float("nan")}, "backoff_s"),
        ({"backoff_s": "x"}, "backoff_s"),
        ({"retries": 11}, "retries"),
        ({"url": "localhost:8000"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "http://a b c"}, "url"),
    ],
)
def test_bad_arguments_are_refused_up_front(kw: dict[str, object], name: str) -> None:
    # Before, a bad timeout or backoff surfaced only when a request was sent, or once one had failed.
    with pytest.raises(ValueError, match=rf"^{name}: "):
        Client(**kw)  # type: ignore[arg-type]


def test_nan_is_not_sent() -> None:
    # Port 9 (discard) is never reached: the body is refused before any connection.
    with pytest.raises(ValueError, match="cannot be sent as JSON"):
        Client("http://127.0.0.1:9").score("q", [{"id": 1, "title": float("nan")}])


def test_foreign_responses(foreign_url: str) -> None:
    client = Client(foreign_url, retries=0)
    assert client.healthy() is False  # a page that is not JSON: not a healthy pinrel service
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        client.model()
