"""One way to serve a test fake over real HTTP on 127.0.0.1 from a background thread."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class _Server(ThreadingHTTPServer):
    """Replies leave at once: every accepted connection has ``TCP_NODELAY``.

    A handler writes its headers and its body separately; with Nagle's algorithm on, the
    body waits for the client's delayed ACK, some 40 ms on every kept-alive request.
    """

    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address


class Started:
    """A fake that ``with`` starts, and stops however the block ends."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class BackgroundServer(Started):
    """A ``ThreadingHTTPServer`` for ``handler``, started and stopped with its owner."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], *, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self._server = _Server((host, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """host:port, as Prometheus and Alertmanager configurations name targets."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def serve(self) -> None:
        """Serve in the calling thread until interrupted (``python -m`` entry points)."""
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
