"""The one HTTP listener: uvicorn serving the app in the daemon's loop, with connection
limits, header deadlines and a file-descriptor alarm."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Generator
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from rollbackd.errors import ListenerExhausted
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import ServerSettings

log = get_logger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the daemon's loop: the daemon owns SIGTERM and SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _guarded_protocol(*, header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, with what it lacks against slow or idle clients.

    A connection must complete each request's headers within ``header_timeout`` of its
    first byte (or of connecting), and a connection beyond ``max_connections`` is closed
    at once, so idle and trickling clients cannot hold the listener.
    """

    class Guarded(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.abort()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request of a kept-alive connection
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # headers complete; the body has its own timeout

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.abort()

    return Guarded


class _ResourceAlarm:
    """A loop exception handler that reports running out of descriptors once per burst.

    asyncio reports every failed ``accept()`` at the file limit; thousands of identical
    lines help nobody. The first of a burst is logged with its code; the rest are counted,
    and the count is logged once ``QUIET`` seconds pass without another.
    """

    QUIET = 30.0

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._last = -1e9
        self._repeated = 0
        self._previous = loop.get_exception_handler()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "out of system resource" not in str(context.get("message", "")):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self._last > self.QUIET:
            log.error(
                "listener_exhausted",
                code=ListenerExhausted.code,
                error=str(context.get("exception", "")),
                file_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
            self._loop.call_later(self.QUIET, self._ended)
        else:
            self._repeated += 1
        self._last = now

    def _ended(self) -> None:
        quiet = time.monotonic() - self._last
        if quiet < self.QUIET:
            self._loop.call_later(self.QUIET - quiet, self._ended)
            return
        log.info("listener_exhaustion_ended", repeated=self._repeated)
        self._repeated = 0


class HttpServer:
    """Serves ``app`` on ``settings.listen`` as a task of the running loop."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=5,
            http=_guarded_protocol(
                header_timeout=settings.header_timeout.total_seconds(),
                max_connections=settings.max_connections,
            ),
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_ResourceAlarm(loop))
        self._task = asyncio.create_task(self._server.serve(), name="http")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises the start-up error (port in use...)
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
