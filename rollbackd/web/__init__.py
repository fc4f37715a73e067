"""The HTTP surface on the one listener: the Alertmanager webhook (receiver, auth, intake),
probes and metrics, served by uvicorn in the daemon's loop."""

from rollbackd.web.app import build_app
from rollbackd.web.intake import WebhookIntake
from rollbackd.web.listener import HttpServer

__all__ = ["HttpServer", "WebhookIntake", "build_app"]
