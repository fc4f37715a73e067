"""Errors of the Alertmanager webhook receiver and its listener."""

from __future__ import annotations

from rollbackd.errors.base import RollbackdError


class WebhookError(RollbackdError, code="ERR_WEBHOOK_FAILED"):
    """An incoming webhook request was refused."""


class WebhookUnauthorized(WebhookError, code="ERR_WEBHOOK_UNAUTHORIZED"):
    """A webhook request without valid credentials (answered 401)."""


class WebhookTooLarge(WebhookError, code="ERR_WEBHOOK_TOO_LARGE"):
    """A webhook body over server.max_body_bytes (answered 413)."""


class WebhookNotJson(WebhookError, code="ERR_WEBHOOK_NOT_JSON"):
    """A webhook request whose Content-Type is not JSON (answered 415)."""


class WebhookBadPayload(WebhookError, code="ERR_WEBHOOK_BAD_PAYLOAD"):
    """A webhook body that is not Alertmanager payload version 4 (answered 400)."""


class WebhookBusy(WebhookError, code="ERR_WEBHOOK_BUSY", transient=True):
    """Not the leader, or the queue is full: the sender should retry."""


class WebhookBadAlert(WebhookError, code="ERR_WEBHOOK_BAD_ALERT"):
    """One alert of a payload was invalid (e.g. a ``startsAt`` without a timezone): it is
    named with its reason in the answer and skipped; the other alerts are processed."""


class WebhookTimeout(WebhookError, code="ERR_WEBHOOK_TIMEOUT", transient=True):
    """A request's body did not arrive within server.body_timeout (answered 408)."""


class ListenerExhausted(WebhookError, code="ERR_WEBHOOK_EXHAUSTED", transient=True):
    """The listener ran out of file descriptors or connections: new connections are shed,
    and this is logged once per burst; raise the pod's file limit or server.max_connections."""
