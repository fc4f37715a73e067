"""Prometheus misbehaving: no rollback, the right error code, recovery without a restart.

Each case drives the daemon's evaluation path (RuleRunner and the hold windows) against a
scripted Prometheus over real HTTP, with a rule that would fire at once (`for: 0s`) on any
breach: a fault must not look like one.
"""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from rollbackd.model import Reason, RuleState, Target
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import PrometheusSettings, RuleSettings
from rollbackd.signals.prometheus import PrometheusSource
from rollbackd.testing.clock import FakeClock
from rollbackd.testing.prometheus_stub import PrometheusStub, error, vector

WEB = Target("shop", "web")
HEALTHY = vector(({"namespace": "shop", "deployment": "web"}, "0.01"))
BREACHING = vector(({"namespace": "shop", "deployment": "web"}, "0.30"))

CASES = [
    ("down", None, "ERR_PROM_UNREACHABLE"),
    ("slow", {"body": HEALTHY, "delay": 2.0}, "ERR_PROM_TIMEOUT"),
    (
        "http 500",
        {"body": b"oops", "status": 500, "content_type": "text/plain"},
        "ERR_PROM_UNREACHABLE",
    ),
    (
        "bad json",
        {"body": b'{"status": "succ', "content_type": "application/json"},
        "ERR_PROM_BAD_RESPONSE",
    ),
    ("cut mid-body", {"body": HEALTHY, "cut": True}, "ERR_PROM_BAD_RESPONSE"),
    (
        "partial answer",
        {"body": vector(({"namespace": "shop", "deployment": "web"}, "0.30"), warnings=["down"])},
        "ERR_PROM_PARTIAL",
    ),
    (
        "query timeout",
        {"body": error("timeout", "query timed out"), "status": 503},
        "ERR_PROM_TIMEOUT",
    ),
]


# A partial answer is not a failed query: its metric result and its log line say so.
PARTIAL = {"ERR_PROM_PARTIAL": ("partial_response", "prometheus_partial_response")}


def runner(url: str) -> tuple[RuleRunner, Telemetry]:
    rule = RuleSettings.model_validate(
        {"name": "errors", "expr": "ratio", "threshold": 0.05, "for": "0s", "interval": "2s"}
    )
    telemetry = Telemetry()
    source = PrometheusSource(PrometheusSettings(url=url, timeout="1s"))
    return RuleRunner([rule], source=source, clock=FakeClock(), telemetry=telemetry), telemetry


@pytest.mark.parametrize(("name", "answer", "code"), CASES, ids=[c[0] for c in CASES])
def test_fault_never_fires_logs_its_code_once_and_recovers(
    name: str, answer: dict[str, object] | None, code: str
) -> None:
    """Three faulty ticks: nothing fires, one log line with the code; then a healthy answer
    is used at once, without a restart."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    with PrometheusStub() as stub:
        url = stub.url
        if answer is None:
            stub.stop()  # nothing listens any more: unreachable
        else:
            stub.answer(**answer)  # type: ignore[arg-type]
        run, telemetry = runner(url)
        faulty = [asyncio.run(run.run()) for _ in range(3)]
        assert all(v.state is not RuleState.FIRING for batch in faulty for v in batch)
        assert run.failures["errors"].code == code
        result, logged = PARTIAL.get(code, (code, "prometheus_query_failed"))
        assert (
            telemetry.value(
                "rollbackd_rule_evaluations_total", {"rule": "errors", "result": result}
            )
            == 3
        )
        if answer is not None:
            stub.answer(HEALTHY)
            (healthy,) = asyncio.run(run.run())
            assert (healthy.target, healthy.breaching) == (WEB, False)
            assert "errors" not in run.failures
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events.count(logged) == 1
    assert events.count("prometheus_query_recovered") == (0 if answer is None else 1)


def test_a_partial_breach_is_judged_by_on_error() -> None:
    """A breaching value in a partial answer does not fire under on_error: hold; it is
    judged as the operator chose, with its own reason partial_response, and its value is
    still shown (before: a clean breach)."""
    partial = vector(({"namespace": "shop", "deployment": "web"}, "0.30"), warnings=["down"])
    with PrometheusStub() as stub:
        stub.answer(partial)
        run, _ = runner(stub.url)
        first = asyncio.run(run.run())
        stub.answer(BREACHING)
        (firing,) = asyncio.run(run.run())
        stub.answer(partial)
        (held,) = asyncio.run(run.run())
    assert all(v.state is not RuleState.FIRING for v in first)
    assert firing.state is RuleState.FIRING
    assert (held.reason, held.error_code, held.breaching, held.value) == (
        Reason.PARTIAL_RESPONSE,
        "ERR_PROM_PARTIAL",
        None,
        0.30,
    )


def test_nan_is_no_data_never_a_breach() -> None:
    """NaN (0/0 with no traffic) is no data: under the default policy it never fires."""
    with PrometheusStub() as stub:
        stub.answer(vector(({"namespace": "shop", "deployment": "web"}, "NaN")))
        run, _ = runner(stub.url)
        (verdict,) = asyncio.run(run.run())
    assert verdict.reason is Reason.NO_DATA
    assert verdict.state is RuleState.INACTIVE


def test_breach_then_outage_keeps_the_state_and_fires_nothing_new() -> None:
    """A target already firing stays firing through an outage (no flapping messages), and a
    healthy target is not made to fire by it."""
    with PrometheusStub() as stub:
        stub.answer(BREACHING)
        run, _ = runner(stub.url)
        (first,) = asyncio.run(run.run())
        assert first.state is RuleState.FIRING
        stub.answer(b"oops", status=500, content_type="text/plain")
        (held,) = asyncio.run(run.run())
        assert (held.state, held.transition, held.reason) == (RuleState.FIRING, None, Reason.ERROR)
