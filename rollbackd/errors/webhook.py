"""Errors of the Alertmanager webhook receiver and its listener."""

from __future__ import annotations

from rollbackd.errors.base import RollbackdError


class WebhookError(RollbackdError):
    """An incoming webhook request was refused."""

    code = "ERR_WEBHOOK_FAILED"


class WebhookUnauthorized(WebhookError):
    """A webhook request without valid credentials (answered 401)."""

    code = "ERR_WEBHOOK_UNAUTHORIZED"


class WebhookTooLarge(WebhookError):
    """A webhook body over server.max_body_bytes (answered 413)."""

    code = "ERR_WEBHOOK_TOO_LARGE"


class WebhookNotJson(WebhookError):
    """A webhook request whose Content-Type is not JSON (answered 415)."""

    code = "ERR_WEBHOOK_NOT_JSON"


class WebhookBadPayload(WebhookError):
    """A webhook body that is not Alertmanager payload version 4 (answered 400)."""

    code = "ERR_WEBHOOK_BAD_PAYLOAD"


class WebhookBusy(WebhookError):
    """Not the leader, or the queue is full: the sender should retry."""

    code = "ERR_WEBHOOK_BUSY"
    transient = True


class WebhookBadAlert(WebhookError):
    """One alert of a payload was invalid (e.g. a ``startsAt`` without a timezone): it is
    named with its reason in the answer and skipped; the other alerts are processed."""

    code = "ERR_WEBHOOK_BAD_ALERT"


class WebhookTimeout(WebhookError):
    """A request's body did not arrive within server.body_timeout (answered 408)."""

    code = "ERR_WEBHOOK_TIMEOUT"
    transient = True


class ListenerExhausted(WebhookError):
    """The listener ran out of file descriptors or connections: new connections are shed,
    and this is logged once per burst; raise the pod's file limit or server.max_connections."""

    code = "ERR_WEBHOOK_EXHAUSTED"
    transient = True
