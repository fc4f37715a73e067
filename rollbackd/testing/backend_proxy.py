"""A stand-in for the query front ends of Mimir, Cortex and Thanos, in front of a real
Prometheus: a path prefix, a required tenant header, and answers that may carry
``warnings``.

- Only paths under ``prefix`` (Mimir's ``/prometheus``) are served; others answer 404.
- Without ``X-Scope-OrgID: <tenant>`` the answer is 401 ``no org id``, as Mimir's.
- With ``warnings`` set, every JSON answer gains them, as a Thanos querier's does when a
  store is down (``partial_response``).

Every request is recorded (path, query parameters, headers) so tests can check what
rollbackd sent on each endpoint.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from rollbackd.testing.serving import BackgroundServer

TENANT_HEADER = "X-Scope-OrgID"


@dataclass
class Seen:
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]


@dataclass
class _State:
    upstream: str
    prefix: str
    tenant: str
    warnings: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._forward(self.rfile.read(length) if length else b"")

    def _forward(self, body: bytes | None) -> None:
        state = self.state
        url = urllib.parse.urlsplit(self.path)
        params = urllib.parse.parse_qsl(url.query or (body or b"").decode())
        with state.lock:
            state.seen.append(Seen(url.path, params, dict(self.headers.items())))
            warnings = list(state.warnings)
        if not url.path.startswith(state.prefix + "/"):
            self._answer(404, b"404 page not found\n", "text/plain")
            return
        if self.headers.get(TENANT_HEADER) != state.tenant:
            self._answer(401, b"no org id\n", "text/plain")
            return
        target = state.upstream + url.path[len(state.prefix) :]
        if url.query:
            target += "?" + url.query
        request = urllib.request.Request(target, data=body, method=self.command)  # noqa: S310
        if body is not None:
            request.add_header("Content-Type", self.headers.get("Content-Type", ""))
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                status, content = answer.status, answer.read()
                kind = answer.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:
            status, content = exc.code, exc.read()
            kind = exc.headers.get("Content-Type", "application/json")
        if warnings and "json" in kind:
            document = json.loads(content)
            document["warnings"] = warnings
            content = json.dumps(document).encode()
        self._answer(status, content, kind)

    def _answer(self, status: int, content: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


class BackendProxy(BackgroundServer):
    """Serves ``upstream`` (a real Prometheus) as a multi-tenant query front end would."""

    def __init__(self, upstream: str, *, prefix: str = "/prometheus", tenant: str) -> None:
        self.state = _State(upstream.rstrip("/"), prefix.rstrip("/"), tenant)
        super().__init__(type("Handler", (_Handler,), {"state": self.state}))

    @property
    def base_url(self) -> str:
        """The URL rollbackd is configured with: the address and the prefix."""
        return self.url + self.state.prefix

    def partial(self, *warnings: str) -> None:
        """From now on every answer carries these warnings (none: answers are whole)."""
        with self.state.lock:
            self.state.warnings = list(warnings)

    @property
    def seen(self) -> list[Seen]:
        with self.state.lock:
            return list(self.state.seen)
