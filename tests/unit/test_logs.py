"""Logs: one JSON stream with bound context, and no secret ever written."""

from __future__ import annotations

import io
import json
import logging

import structlog

from rollbackd.runtime.logs import REDACTED, configure_logging, get_logger


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_bound_context() -> None:
    """Every line of an incident carries its incident id, namespace, deployment and rule."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    with structlog.contextvars.bound_contextvars(
        incident_id="inc-1", namespace="shop", deployment="web", rule="errors"
    ):
        get_logger("rollbackd.test").info("rule_evaluated", value=0.2)
    (line,) = lines(out)
    assert line["event"] == "rule_evaluated"
    assert line["incident_id"] == "inc-1"
    assert line["deployment"] == "web"
    assert line["level"] == "info"
    assert "timestamp" in line


def test_secrets_are_redacted_by_value_key_and_shape() -> None:
    """Configured secrets, secret-named fields and DingTalk tokens in URLs never reach a log."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, secrets=["SECsupersecret42"])
    log = get_logger("rollbackd.test")
    log.info("sent", url="https://oapi.dingtalk.com/robot/send?access_token=abc123&sign=xyz%3D")
    log.info("config", note="the secret is SECsupersecret42", app_secret="plain-value")
    log.info("header", value="Authorization: Bearer eyJhbGciOi.abc.def")
    text = out.getvalue()
    for secret in ["abc123", "xyz%3D", "SECsupersecret42", "plain-value", "eyJhbGciOi"]:
        assert secret not in text
    assert text.count(REDACTED) >= 5


def test_stdlib_loggers_share_the_stream_and_redaction() -> None:
    """kubernetes, uvicorn and other stdlib loggers come out as the same redacted JSON."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    logging.getLogger("uvicorn.error").warning("GET /robot/send?access_token=tok999 failed")
    (line,) = lines(out)
    assert line["logger"] == "uvicorn.error"
    assert "tok999" not in str(line["event"])


def test_httpx_info_lines_are_silenced() -> None:
    """httpx logs every request URL at INFO, token included: its logger is held at WARNING."""
    out = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=out)
    logging.getLogger("httpx").info("HTTP Request: POST https://x/robot/send?access_token=t")
    assert out.getvalue() == ""
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING


def test_level_filters() -> None:
    """At level warning, info lines are dropped."""
    out = io.StringIO()
    configure_logging(fmt="json", level="warning", stream=out)
    get_logger("rollbackd.test").info("quiet")
    get_logger("rollbackd.test").warning("loud")
    assert [line["event"] for line in lines(out)] == ["loud"]
