"""The HTTP surface: one starlette app behind the one listener, in the daemon's loop.

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
``GET|POST /approvals/{token}`` the approval pages (``web/approvals.py``), when
                               ``server.external_url`` and its key are set
=============================  ====================================================

The webhook answers as soon as the payload is validated and queued; the alerts are
turned into verdicts by ``WebhookIntake.run`` on the same loop. A 401 says nothing about
why; a 400 says in one line what was wrong with the body. The listener closes connections
that do not finish their headers within ``server.header_timeout`` and sheds those beyond
``server.max_connections``; running out of file descriptors is logged once per burst.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AlertmanagerSettings, ServerSettings
from rollbackd.web.approvals import approval_routes
from rollbackd.web.intake import WebhookIntake
from rollbackd.web.webhook import WebhookReceiver

if TYPE_CHECKING:  # the desk imports the web package: named for types only
    from rollbackd.runtime.approvals import ApprovalDesk


class _Front:
    """The listener's ASGI app: the webhook path goes to the receiver, the rest to starlette."""

    def __init__(self, app: ASGIApp, path: str, webhook: WebhookReceiver | None) -> None:
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
    approvals: ApprovalDesk | None = None,
    language: str = "zh",
) -> ASGIApp:
    """The HTTP surface; ``intake`` is None when the Alertmanager receiver is disabled.
    ``ready`` answers ``/readyz``; webhooks are taken only while ``leading`` (default:
    ``ready``); ``approvals`` serves the approval pages in ``language``."""

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
    if approvals is not None:
        secure = server.external_url.startswith("https://")
        routes += approval_routes(approvals, language=language, secure=secure)
    webhook = None
    if alertmanager.enabled:
        webhook = WebhookReceiver(
            server=server,
            alertmanager=alertmanager,
            telemetry=telemetry,
            intake=intake,
            leading=leading or ready,
        )
    return _Front(Starlette(routes=routes), alertmanager.path, webhook)
