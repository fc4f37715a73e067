"""Edge: rollbackd's one HTTP listener, a starlette app served by uvicorn in the daemon's loop.

=============================  ====================================================
``POST`` alertmanager path     Alertmanager webhook v4: 200 accepted (naming each alert
                               rejected and why), 400 bad payload, 401 bad auth, 408
                               body too slow, 413 too large, 415 not JSON, 503 not the
                               leader, queue full or unsigned bodies over their budget
                               (Alertmanager retries 5xx); 500 only for the unforeseen.
                               A client gone before its body arrived is counted as 499
``GET /healthz``               200 while the process is alive
``GET /readyz``                200 on every replica with caches synced and not shutting
                               down, else 503 (webhooks reach the leader by its pod
                               label; a standby answers them 503)
``GET /metrics``               rollbackd's own metrics
=============================  ====================================================

The webhook answers as soon as the payload is validated and queued; the alerts are
turned into verdicts by ``WebhookIntake.run`` on the same loop. A 401 says nothing about
why; a 400 says in one line what was wrong with the body. The listener closes connections
that do not finish their headers within ``server.header_timeout`` and sheds those beyond
``server.max_connections``; running out of file descriptors is logged once per burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any

import h11
import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from rollbackd.errors import (
    ListenerExhausted,
    SecretUnavailable,
    WebhookBadAlert,
    WebhookBadPayload,
    WebhookBusy,
    WebhookError,
    WebhookNotJson,
    WebhookTimeout,
    WebhookTooLarge,
    WebhookUnauthorized,
)
from rollbackd.model import Instant, Target, Verdict
from rollbackd.ports import Clock
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AlertmanagerSettings, ServerSettings
from rollbackd.signals.alertmanager import (
    BadPayload,
    Deduplicator,
    Intake,
    Payload,
    interpret,
    read_payload,
)
from rollbackd.signals.webhook_auth import WebhookAuthenticator

log = get_logger(__name__)
_written = logging.getLogger(__name__)  # where log's lines go: asked whether INFO is written

VerdictSink = Callable[[list[Verdict]], Awaitable[None]]
UNAUTHENTICATED_BODIES = 4
"""HMAC signs the body, so it is read before it is authenticated: at most this many
``max_body_bytes`` of such bodies are held at once; beyond, new ones get 503."""
_DIGITS_RE = re.compile(r"[0-9]{1,20}")
BATCH = 256
"""Payloads interpreted in one turn of the intake at most."""


class WebhookIntake:
    """A bounded queue of accepted payloads and the task that turns them into verdicts."""

    def __init__(
        self,
        settings: AlertmanagerSettings,
        *,
        clock: Clock,
        telemetry: Telemetry,
        sink: VerdictSink,
        capacity: int = 1000,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._telemetry = telemetry
        self._sink = sink
        self._queue: asyncio.Queue[Payload] = asyncio.Queue(maxsize=capacity)
        self._dedup = Deduplicator()

    def offer(self, payload: Payload) -> bool:
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            return False
        return True

    async def drain(self) -> None:
        """Wait until every accepted payload has been processed (tests, shutdown)."""
        await self._queue.join()

    async def run(self) -> None:
        """Interpret the payloads as they come: all those waiting at once in one turn."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.process(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def process(self, batch: list[Payload]) -> None:
        """Payloads received together, handed on as verdicts in order; a (rule, target)
        seen again starts a new hand-over, so each one the core sees is what a payload
        could hold. One bad payload or hand-over is logged and the others go on."""
        counts: Counter[tuple[str, str]] = Counter()
        handover: list[Verdict] = []
        seen: set[tuple[str, Target]] = set()
        now = self._clock.now()  # the batch is read at one moment
        for payload in batch:
            try:
                intake = self._interpret(payload, now)
            except Exception:  # one bad payload must not stop the intake
                log.exception("alertmanager_payload_failed", group_key=payload.groupKey)
                continue
            counts.update(intake.counts)
            for verdict in intake.verdicts:
                key = (verdict.rule, verdict.target)
                if key in seen:
                    await self._hand_over(handover)
                    handover, seen = [], set()
                handover.append(verdict)
                seen.add(key)
        await self._hand_over(handover)
        for (status, action), count in counts.items():
            self._telemetry.alertmanager_alerts.labels(status, action).inc(count)

    def _interpret(self, payload: Payload, now: Instant) -> Intake:
        intake = interpret(payload, settings=self._settings, dedup=self._dedup, now=now)
        if intake.truncated:
            log.warning(
                "alertmanager_alerts_truncated",
                truncated=intake.truncated,
                group_key=payload.groupKey,
            )
        if _written.isEnabledFor(logging.INFO):  # one line per payload, built only if written
            log.info(
                "alertmanager_payload",
                group_key=payload.groupKey,
                status=payload.status,
                alerts=len(payload.alerts),
                verdicts=len(intake.verdicts),
            )
        return intake

    async def _hand_over(self, verdicts: list[Verdict]) -> None:
        if not verdicts:
            return
        try:
            await self._sink(verdicts)
        except Exception:  # the next payloads still reach the core
            log.exception("alertmanager_verdicts_failed", verdicts=len(verdicts))


class _Refused(Exception):
    """A request answered with an error status; raised inside the handler, caught once."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Budget:
    """Bytes of unauthenticated bodies held in memory at once, across all requests."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, size: int) -> None:
        if self.used + size > self.limit:
            raise _Refused(503, WebhookBusy.code, "too many unauthenticated bodies; retry")
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


class _SecretAlarm:
    """Logs a credential file that went missing once, not once per request."""

    def __init__(self) -> None:
        self.down = False

    def failed(self, exc: SecretUnavailable) -> None:
        if not self.down:
            log.error("webhook_secret_unavailable", code=exc.code, error=exc.message)
        self.down = True

    def ok(self) -> None:
        if self.down:
            log.info("webhook_secret_restored")
        self.down = False


class _BodyDeadlines:
    """Body reads in flight and when each must end, checked by one sweep for all of them.

    A timer per request costs more than reading the body it guards, so a sweep runs while
    any read is in flight, every tenth of the timeout (at most a second), and cancels the
    reads past their deadline: a body is cut between ``seconds`` and 10 % later.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._every = min(1.0, seconds / 10)
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._cut: set[asyncio.Task[Any]] = set()
        self._sweeping: asyncio.AbstractEventLoop | None = None

    def start(self) -> asyncio.Task[Any]:
        """The calling task begins reading a body."""
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        self._reading[task] = loop.time() + self.seconds
        if self._sweeping is not loop:
            self._sweeping = loop
            loop.call_later(self._every, self._sweep, loop)
        return task

    def done(self, task: asyncio.Task[Any]) -> None:
        del self._reading[task]

    def was_cut(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (the cancellation is then spent)."""
        if task not in self._cut:
            return False
        self._cut.discard(task)
        task.uncancel()
        return True

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in self._reading.items():
            if deadline <= now and task not in self._cut:
                self._cut.add(task)
                task.cancel()  # delivered at the read's await: the task is waiting in it
        if self._reading and not loop.is_closed():
            loop.call_later(self._every, self._sweep, loop)
        else:
            self._sweeping = None


class _ClientGone(Exception):
    """The client disconnected before its body arrived: there is nobody to answer."""


class _Webhook:
    """The Alertmanager endpoint: bounded, total, and counted in every outcome.

    It answers 5xx only with 503 (retry later): every other failure of a request is a
    4xx naming it, and an unexpected one is a logged 500, counted like the rest. It is a
    plain ASGI callable in front of the starlette app: the one path under load pays for no
    routing, middleware or request objects.
    """

    def __init__(
        self,
        *,
        server: ServerSettings,
        alertmanager: AlertmanagerSettings,
        telemetry: Telemetry,
        intake: WebhookIntake | None,
        leading: Callable[[], bool],
    ) -> None:
        self._limit = server.max_body_bytes
        self._deadlines = _BodyDeadlines(server.body_timeout.total_seconds())
        auth = alertmanager.auth
        self._authenticator = WebhookAuthenticator(auth) if auth else None
        self._unauthenticated = _Budget(UNAUTHENTICATED_BODIES * self._limit)
        self._alarm = _SecretAlarm()
        self._telemetry = telemetry
        self._intake = intake
        self._leading = leading
        self._answered: dict[int, Any] = {}  # status -> its child of the requests counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _respond(send, 405, b"Method Not Allowed", b"text/plain", allow=b"POST")
            return
        try:
            status, body = 200, await self._receive(scope, receive)
        except _Refused as refused:
            status = refused.status
            body = {"status": "error", "code": refused.code, "error": refused.message}
        except _ClientGone:  # counted as nginx counts it; nobody to answer, nothing failed
            self._count(499)
            return
        except Exception:  # the last resort: counted and logged, never silent
            log.exception("webhook_failed", code=WebhookError.code)
            status = 500
            body = {"status": "error", "code": WebhookError.code, "error": "internal error"}
        self._count(status)
        await _respond(send, status, orjson.dumps(body), b"application/json")

    def _count(self, status: int) -> None:
        counted = self._answered.get(status)
        if counted is None:
            counted = self._answered[status] = self._telemetry.webhook_requests.labels(str(status))
        counted.inc()

    async def _receive(self, scope: Scope, receive: Receive) -> dict[str, object]:
        # ASGI names headers in lower case; of a repeated header the last one counts.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if _DIGITS_RE.fullmatch(length) and int(length) > self._limit:
            raise _Refused(413, WebhookTooLarge.code, f"body larger than {self._limit} bytes")
        if "json" not in headers.get("content-type", "").lower():
            raise _Refused(415, WebhookNotJson.code, "Content-Type must be application/json")
        authenticator, intake = self._authenticator, self._intake
        if authenticator is None or intake is None:
            raise _Refused(401, WebhookUnauthorized.code, "unauthorized")
        signed = authenticator.needs_body
        if not signed and not self._authenticated(headers, b""):
            raise _Refused(401, WebhookUnauthorized.code, "unauthorized")
        body = await self._read_body(receive, counted=signed)
        if signed and not self._authenticated(headers, body):
            raise _Refused(401, WebhookUnauthorized.code, "unauthorized")
        if not self._leading():
            raise _Refused(503, WebhookBusy.code, "not the leader; retry")
        try:
            payload, bad = read_payload(body)
        except BadPayload as exc:
            raise _Refused(400, WebhookBadPayload.code, str(exc)) from None
        if not intake.offer(payload):
            raise _Refused(503, WebhookBusy.code, "queue full; retry")
        authenticator.remember(headers, time.time())  # only now is the nonce used up
        if bad:
            log.warning(
                "alertmanager_alerts_rejected",
                code=WebhookBadAlert.code,
                rejected=len(bad),
                first=bad[0].reason,
                group_key=payload.groupKey,
            )
        code = WebhookBadAlert.code
        rejected = [{"index": b.index, "code": code, "error": b.reason} for b in bad]
        return {"status": "accepted", "alerts": len(payload.alerts), "rejected": rejected}

    def _authenticated(self, headers: Mapping[str, str], body: bytes) -> bool:
        assert self._authenticator is not None
        try:
            valid = self._authenticator.check(headers, body, time.time())
        except SecretUnavailable as exc:
            self._alarm.failed(exc)
            return False
        self._alarm.ok()
        return valid

    async def _read_body(self, receive: Receive, *, counted: bool) -> bytes:
        """The body, within the size limit and the body timeout; unauthenticated bytes
        (``counted``) are held against the shared budget while they are read."""
        body = bytearray()
        held = 0
        reader = self._deadlines.start()
        try:
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":  # http.disconnect
                    raise _ClientGone
                chunk: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                body += chunk
                if len(body) > self._limit:
                    raise _Refused(
                        413, WebhookTooLarge.code, f"body larger than {self._limit} bytes"
                    )
                if counted:
                    self._unauthenticated.take(len(chunk))
                    held += len(chunk)
        except asyncio.CancelledError:
            if not self._deadlines.was_cut(reader):
                raise
            seconds = self._deadlines.seconds
            raise _Refused(
                408, WebhookTimeout.code, f"body not received within {seconds:g}s"
            ) from None
        finally:
            self._deadlines.done(reader)
            self._unauthenticated.give(held)
        return bytes(body)


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, *, allow: bytes = b""
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if allow:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Front:
    """The listener's ASGI app: the webhook path goes to the receiver, the rest to starlette."""

    def __init__(self, app: ASGIApp, path: str, webhook: _Webhook | None) -> None:
        self._app, self._path, self._webhook = app, path, webhook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        webhook = self._webhook
        if webhook is not None and scope["type"] == "http" and scope["path"] == self._path:
            await webhook(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def build_app(
    *,
    server: ServerSettings,
    alertmanager: AlertmanagerSettings,
    telemetry: Telemetry,
    intake: WebhookIntake | None,
    ready: Callable[[], bool],
    leading: Callable[[], bool] | None = None,
) -> ASGIApp:
    """The HTTP surface; ``intake`` is None when the Alertmanager receiver is disabled.
    ``ready`` answers ``/readyz``; webhooks are taken only while ``leading`` (default:
    ``ready``)."""

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        return PlainTextResponse("ready\n") if ready() else PlainTextResponse("not ready\n", 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    webhook = None
    if alertmanager.enabled:
        webhook = _Webhook(
            server=server,
            alertmanager=alertmanager,
            telemetry=telemetry,
            intake=intake,
            leading=leading or ready,
        )
    return _Front(Starlette(routes=routes), alertmanager.path, webhook)


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
