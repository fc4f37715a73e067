"""The Alertmanager webhook receiver: authentication, body limits and deadlines, answers."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from rollbackd.errors import (
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
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AlertmanagerSettings, ServerSettings
from rollbackd.signals.alertmanager import BadPayload, read_payload
from rollbackd.web.auth import WebhookAuthenticator
from rollbackd.web.intake import WebhookIntake

log = get_logger(__name__)

UNAUTHENTICATED_BODIES = 4
"""HMAC signs the body, so it is read before it is authenticated: at most this many
``max_body_bytes`` of such bodies are held at once; beyond, new ones get 503."""
_DIGITS_RE = re.compile(r"[0-9]{1,20}")


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


class WebhookReceiver:
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
