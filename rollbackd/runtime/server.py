"""Edge: rollbackd's one HTTP listener, a starlette app served by uvicorn in the daemon's loop.

=============================  ====================================================
``POST`` alertmanager path     Alertmanager webhook v4: 200 accepted, 400 bad payload,
                               401 bad auth, 413 too large, 415 not JSON, 503 not the
                               leader or queue full (Alertmanager retries 5xx)
``GET /healthz``               200 while the process is alive
``GET /readyz``                200 only on the leader with caches synced, else 503
``GET /metrics``               rollbackd's own metrics
=============================  ====================================================

The webhook answers as soon as the payload is validated and queued; the alerts are
turned into verdicts by ``WebhookIntake.run`` on the same loop. A 401 says nothing about
why; a 400 says in one line what was wrong with the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Generator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rollbackd.errors import (
    WebhookBadPayload,
    WebhookBusy,
    WebhookNotJson,
    WebhookTooLarge,
    WebhookUnauthorized,
)
from rollbackd.model import Verdict
from rollbackd.ports import Clock
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AlertmanagerSettings, ServerSettings
from rollbackd.signals.alertmanager import Deduplicator, Payload, interpret
from rollbackd.signals.webhook_auth import WebhookAuthenticator

log = get_logger(__name__)

VerdictSink = Callable[[list[Verdict]], Awaitable[None]]


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
        while True:
            payload = await self._queue.get()
            try:
                await self.process(payload)
            except Exception:  # one bad payload must not stop the intake
                log.exception("alertmanager_payload_failed", group_key=payload.groupKey)
            finally:
                self._queue.task_done()

    async def process(self, payload: Payload) -> None:
        intake = interpret(
            payload, settings=self._settings, dedup=self._dedup, now=self._clock.now()
        )
        for (status, action), count in intake.counts.items():
            self._telemetry.alertmanager_alerts.labels(status, action).inc(count)
        if intake.truncated:
            log.warning(
                "alertmanager_alerts_truncated",
                truncated=intake.truncated,
                group_key=payload.groupKey,
            )
        log.info(
            "alertmanager_payload",
            group_key=payload.groupKey,
            status=payload.status,
            alerts=len(payload.alerts),
            verdicts=len(intake.verdicts),
        )
        if intake.verdicts:
            await self._sink(intake.verdicts)


def build_app(
    *,
    server: ServerSettings,
    alertmanager: AlertmanagerSettings,
    telemetry: Telemetry,
    intake: WebhookIntake | None,
    ready: Callable[[], bool],
) -> Starlette:
    """The HTTP surface; ``intake`` is None when the Alertmanager receiver is disabled."""
    limit = server.max_body_bytes
    authenticator = WebhookAuthenticator(alertmanager.auth) if alertmanager.auth else None

    def refuse(status: int, code: str, message: str) -> Response:
        telemetry.webhook_requests.labels(str(status)).inc()
        return JSONResponse({"status": "error", "code": code, "error": message}, status)

    async def webhook(request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return refuse(413, WebhookTooLarge.code, f"body larger than {limit} bytes")
        if "json" not in request.headers.get("content-type", "").lower():
            return refuse(415, WebhookNotJson.code, "Content-Type must be application/json")
        if authenticator is None or intake is None:
            return refuse(401, WebhookUnauthorized.code, "unauthorized")
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not authenticator.needs_body and not authenticator.check(headers, b"", time.time()):
            return refuse(401, WebhookUnauthorized.code, "unauthorized")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return refuse(413, WebhookTooLarge.code, f"body larger than {limit} bytes")
        if authenticator.needs_body and not authenticator.check(headers, bytes(body), time.time()):
            return refuse(401, WebhookUnauthorized.code, "unauthorized")
        if not ready():
            return refuse(503, WebhookBusy.code, "not the leader; retry")
        try:
            payload = Payload.model_validate(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            return refuse(400, WebhookBadPayload.code, _one_line(exc))
        if payload.version != "4":
            return refuse(
                400, WebhookBadPayload.code, f"unsupported payload version {payload.version!r}"
            )
        if not intake.offer(payload):
            return refuse(503, WebhookBusy.code, "queue full; retry")
        telemetry.webhook_requests.labels("200").inc()
        return JSONResponse({"status": "accepted", "alerts": len(payload.alerts)})

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
    if alertmanager.enabled:
        routes.append(Route(alertmanager.path, webhook, methods=["POST"]))
    return Starlette(routes=routes)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return f"invalid payload: {where}: {first['msg']} ({exc.error_count()} error(s))"
    return f"invalid JSON: {str(exc).splitlines()[0]}"


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the daemon's loop: the daemon owns SIGTERM and SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """Serves ``app`` on ``host:port`` as a task of the running loop."""

    def __init__(self, app: Starlette, *, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
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
