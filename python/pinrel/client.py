"""A small HTTP client for the pinrel service; standard library only, so any service can embed it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any


class ServiceError(RuntimeError):
    """The service answered with an error; `status` and `body` carry what it said."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def _check_seconds(name: str, value: Any, hi: int, zero_ok: bool) -> None:
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not (number and (value >= 0 if zero_ok else value > 0) and value <= hi):  # NaN fails too
        raise ValueError(f"{name}: expected seconds in {'[' if zero_ok else '('}0, {hi}], got {value!r}")


class Client:
    """`Client("http://127.0.0.1:8000").score("red mug", [{"id": 1, "title": "Red mug"}])`."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.05,
    ) -> None:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or any(c.isspace() for c in url)
        ):
            raise ValueError(
                f"url: expected an http(s) URL with a host, such as http://127.0.0.1:8000, got {url!r}"
            )
        # Checked here: a bad timeout would fail only once a request is sent (inf overflows the socket's
        # deadline), a bad backoff only once a request has failed.
        _check_seconds("timeout", timeout, 86400, zero_ok=False)  # a zero timeout never succeeds
        _check_seconds("backoff_s", backoff_s, 60, zero_ok=True)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise ValueError(f"retries: must be an integer in [0, 10], got {retries!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        # Scoring is idempotent, so a request that hit a replica as it died (5xx, reset connection)
        # is safe to resend; 4xx means the request itself is wrong and is never retried.
        for attempt in range(self.retries + 1):
            try:
                return self._request_once(method, path, payload)
            except ServiceError as e:
                if e.status < 500 or attempt == self.retries:
                    raise
            except (ConnectionError, urllib.error.URLError):
                if attempt == self.retries:
                    raise
            time.sleep(self.backoff_s * (2**attempt))
        raise AssertionError("unreachable")

    def _request_once(self, method: str, path: str, payload: Any = None) -> Any:
        try:
            # allow_nan=False: NaN is not JSON, and the service would refuse it less directly.
            data = None if payload is None else json.dumps(payload, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: the request cannot be sent as JSON ({e})") from None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raw = e.read().decode("utf-8", "replace")
            try:
                body: Any = json.loads(raw)
            except json.JSONDecodeError:
                body = raw
            raise ServiceError(e.code, body) from None

    def score(
        self, query: str, items: Sequence[dict[str, Any]], top_k: int | None = None
    ) -> list[dict[str, Any]]:
        """Items ranked by expected grade, each with `id`, `index`, `score`, `grade` and `probs`."""
        if not isinstance(query, str):
            raise TypeError(f"query: expected str, got {type(query).__name__}")
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"items: expected a list of dicts, got {type(items).__name__}")
        payload: dict[str, Any] = {"query": query, "items": list(items)}
        if top_k is not None:
            payload["top_k"] = top_k
        return list(self._object("POST", "/v1/score", payload)["results"])

    def model(self) -> dict[str, Any]:
        return self._object("GET", "/v1/model")

    def healthy(self) -> bool:
        try:
            return self._object("GET", "/healthz").get("status") == "ok"
        except (ServiceError, OSError, ValueError):
            return False

    def _object(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        """The response, which must be a JSON object; ValueError for anything else (another service)."""
        try:
            body = self._request(method, path, payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.url}{path}: the response is not JSON ({e})") from None
        if not isinstance(body, dict):
            raise ValueError(f"{self.url}{path}: expected a JSON object, got {type(body).__name__}")
        return body
