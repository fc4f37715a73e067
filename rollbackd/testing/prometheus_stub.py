"""A scripted stand-in for the Prometheus HTTP API, for the failures real Prometheus
cannot be made to produce on demand: HTTP 500s, broken JSON, slow answers, warnings,
answers cut off mid-body.

Tests set the answer with ``answer(...)``; every request is recorded with its headers so
tests can check what rollbackd sent (auth headers, the query, its timeout).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from rollbackd.testing.serving import BackgroundServer


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
    content_type: str = "application/json"
    delay: float = 0.0
    cut: bool = False  # chunked, and the connection closes halfway through the body


@dataclass
class Request:
    path: str
    params: dict[str, str]
    headers: dict[str, str]


def vector(*series: tuple[dict[str, str], str], warnings: list[str] | None = None) -> bytes:
    """A successful instant-vector body, values given as Prometheus writes them."""
    body: dict[str, object] = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1_700_000_000.0, v]} for m, v in series],
        },
    }
    if warnings:
        body["warnings"] = warnings
    return json.dumps(body).encode()


def error(error_type: str, message: str) -> bytes:
    return json.dumps({"status": "error", "errorType": error_type, "error": message}).encode()


@dataclass
class _State:
    answer: Answer = field(default_factory=Answer)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = self.rfile.read(length).decode() if length else ""
        params = dict(urllib.parse.parse_qsl(url.query or form))
        with self.state.lock:
            self.state.requests.append(Request(url.path, params, dict(self.headers.items())))
            answer = self.state.answer
        if answer.delay:
            time.sleep(answer.delay)
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            if answer.cut:  # half the body, then a reset, as a proxy dropping out does
                half = answer.body[: len(answer.body) // 2]
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(f"{len(answer.body):x}\r\n".encode() + half)
                self.wfile.flush()
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first, as it should on a timeout

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()


class PrometheusStub(BackgroundServer):
    """Serves scripted answers on 127.0.0.1 from a background thread."""

    def __init__(self) -> None:
        self.state = _State()
        super().__init__(type("Handler", (_Handler,), {"state": self.state}))

    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    def answer(
        self,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "application/json",
        delay: float = 0.0,
        cut: bool = False,
    ) -> None:
        with self.state.lock:
            self.state.answer = Answer(status, body, content_type, delay, cut)
