"""Logging: one structured stream, JSON in the cluster and readable on a terminal.

Every line carries the context bound with ``bind_contextvars`` (``incident_id``,
``namespace``, ``deployment``, ``rule``) and the cluster's name when one is configured.
A redaction processor masks secrets by key name, by the shape of well-known tokens in
text (DingTalk ``access_token``/``sign`` query parameters, ``Bearer`` headers) and by
value, for every secret the loaded configuration holds, also URL-encoded and in Base64.
The CLI prints through the same redactor, so no command shows a secret either.
Standard-library loggers (kubernetes, urllib3, uvicorn, apscheduler) go through the same
processors.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Literal, TextIO
from urllib.parse import quote, quote_plus

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

_SECRET_KEY_RE = re.compile(
    r"(token|secret|password|passwd|authorization|api_key|apikey|app_key|sign)$", re.IGNORECASE
)
_SECRET_TEXT_RES = (
    re.compile(r"(?P<keep>(?:access_token|sign|appkey|appsecret|accessToken)=)[^&\s\"']+"),
    re.compile(r"(?P<keep>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
    re.compile(r"(?P<keep>x-acs-dingtalk-access-token[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+", re.I),
)


class Redactor:
    """A structlog processor that masks secrets wherever they appear in an event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values from now on, as written and as they travel: URL-encoded (a
        query parameter) and Base64 (basic auth)."""
        forms = set()
        for secret in secrets:
            if len(secret) < 6:  # very short values would mask ordinary words
                continue
            encoded = base64.b64encode(secret.encode()).decode()
            forms |= {secret, quote(secret, safe=""), quote_plus(secret), encoded}
            forms.add(encoded.rstrip("="))
        self._secrets = sorted({*self._secrets, *forms}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern in _SECRET_TEXT_RES:
            value = pattern.sub(lambda m: m.group("keep") + REDACTED, value)
        return value

    def value(self, value: object) -> object:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, MutableMapping):
            return {k: self.item(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def item(self, key: str, value: object) -> object:
        if _SECRET_KEY_RE.search(key) and value not in (None, "", False):
            return REDACTED
        return self.value(value)

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        return {key: self.item(key, value) for key, value in event.items()}


REDACTOR = Redactor()
"""The process-wide redactor; ``configure_logging`` adds the configuration's secrets."""

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def _shared_processors(context: dict[str, str]) -> list[Processor]:
    def add_context(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        for key, value in context.items():
            event.setdefault(key, value)
        return event

    return [
        structlog.contextvars.merge_contextvars,
        add_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        REDACTOR,
    ]


def configure_logging(
    *,
    level: Literal["debug", "info", "warning", "error"] = "info",
    fmt: Literal["json", "console", "auto"] = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    cluster: str = "",
) -> None:
    """Set up structlog and the standard library to write one redacted stream.

    ``fmt="auto"`` writes JSON unless the stream is a terminal. With ``cluster``
    (``kubernetes.cluster_name``) every line names it, as ``cluster``.
    """
    context = {"cluster": cluster} if cluster else {}
    REDACTOR.add(secrets)
    out = stream or sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(context),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(context),
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # httpx logs every request URL at INFO, and a DingTalk URL carries the robot's token.
    # apscheduler logs every run of every job at INFO; rollbackd logs each cycle itself.
    for noisy in ("httpx", "httpcore", "urllib3", "kubernetes.client.rest", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named after its module."""
    return structlog.stdlib.get_logger(name)
