"""The HTTP listener over real loopback HTTP: webhook limits, auth, probes, metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from rollbackd.model import Verdict
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.signals.alertmanager import Payload, read_payload
from rollbackd.web import WebhookIntake
from tests.conftest import WEBHOOK_TOKEN, Receiver, alertmanager_settings, start_receiver
from tests.unit.test_alertmanager_signals import ALERT

pytestmark = pytest.mark.integration

GOOD = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}


def body(*alerts: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "groupKey": "g",
            "receiver": "r",
            "alerts": list(alerts) or [ALERT],
        }
    ).encode()


def post(receiver: Receiver, data: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{receiver.url}/api/v1/alertmanager",
        content=data,
        headers=GOOD if headers is None else headers,
        timeout=5,
    )


def test_accepted_alert_becomes_a_verdict(make_receiver: Any) -> None:
    """A valid, authenticated payload gets 200 at once and becomes a firing verdict."""
    receiver = make_receiver()
    answer = post(receiver, body())
    assert answer.status_code == 200
    assert answer.json() == {"status": "accepted", "alerts": 1, "rejected": []}
    receiver.drain()
    (verdict,) = receiver.verdicts
    assert str(verdict.target) == "shop/web"
    assert (
        receiver.metric(
            "rollbackd_alertmanager_alerts_total", {"status": "firing", "action": "rollback"}
        )
        == 1
    )


def test_five_sends_of_one_alert_act_once(make_receiver: Any) -> None:
    """The same alert sent five times is accepted five times and acted on once."""
    receiver = make_receiver()
    for _ in range(5):
        assert post(receiver, body()).status_code == 200
    receiver.drain()
    assert len(receiver.verdicts) == 1
    assert (
        receiver.metric(
            "rollbackd_alertmanager_alerts_total", {"status": "firing", "action": "duplicate"}
        )
        == 4
    )


@pytest.mark.parametrize(
    ("headers", "data", "status"),
    [
        ({"Authorization": "Bearer wrong", "Content-Type": "application/json"}, body(), 401),
        ({"Content-Type": "application/json"}, body(), 401),
        ({**GOOD, "Content-Type": "text/plain"}, body(), 415),
        (GOOD, b"{not json", 400),
        (GOOD, b'{"version": "4"}', 400),
        (GOOD, json.dumps({"version": "3", "status": "firing", "alerts": []}).encode(), 400),
    ],
)
def test_refusals(make_receiver: Any, headers: dict[str, str], data: bytes, status: int) -> None:
    """Wrong token 401 (saying nothing more), not JSON 415, bad payload 400 in one line."""
    receiver = make_receiver()
    answer = post(receiver, data, headers)
    assert answer.status_code == status
    if status == 401:
        assert answer.json()["error"] == "unauthorized"
    if status == 400:
        assert "\n" not in answer.json()["error"]
    receiver.drain()
    assert receiver.verdicts == []


def test_large_bodies_are_refused_without_being_read(make_receiver: Any) -> None:
    """Over max_body_bytes: 413 from the Content-Length alone, or while streaming chunks."""
    receiver = make_receiver(max_body=1024)
    assert post(receiver, b"x" * 5000).status_code == 413

    def chunks() -> Any:
        for _ in range(100):
            yield b"y" * 100

    answer = httpx.post(
        f"{receiver.url}/api/v1/alertmanager", content=chunks(), headers=GOOD, timeout=5
    )
    assert answer.status_code == 413
    # a declared length far larger than what is sent is refused before any read
    with socket.create_connection(("127.0.0.1", int(receiver.url.rsplit(":", 1)[1])), 5) as raw:
        raw.sendall(
            b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n"
        )
        assert raw.recv(100).startswith(b"HTTP/1.1 413")


def test_followers_answer_503_so_alertmanager_retries(make_receiver: Any) -> None:
    """Not the leader: the webhook and /readyz say 503; /healthz still says 200."""
    receiver = make_receiver()
    receiver.ready[0] = False
    assert post(receiver, body()).status_code == 503
    assert httpx.get(f"{receiver.url}/readyz").status_code == 503
    assert httpx.get(f"{receiver.url}/healthz").status_code == 200
    receiver.ready[0] = True
    assert httpx.get(f"{receiver.url}/readyz").status_code == 200


def test_full_queue_answers_503(make_receiver: Any) -> None:
    """When the intake queue is full, senders are told to retry instead of being dropped."""
    hold = threading.Event()
    receiver = make_receiver(capacity=1, hold=hold)
    statuses = [post(receiver, body(ALERT | {"fingerprint": str(i)})).status_code for i in range(4)]
    hold.set()
    assert statuses[:2] == [200, 200]  # one in processing, one queued
    assert statuses[2:] == [503, 503]
    receiver.drain()
    assert len(receiver.verdicts) == 2  # everything accepted was processed


def test_metrics_endpoint_serves_own_metrics(make_receiver: Any) -> None:
    """/metrics is Prometheus text with rollbackd's build_info and webhook counters."""
    receiver = make_receiver()
    post(receiver, body())
    text = httpx.get(f"{receiver.url}/metrics").text
    assert "rollbackd_build_info{" in text
    assert 'rollbackd_webhook_requests_total{code="200"} 1.0' in text


header_names = st.sampled_from(
    [
        "Authorization",
        "Content-Type",
        "Content-Length",
        "X-Any",
        "X-Rollbackd-Nonce",
        "Transfer-Encoding",
    ]
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def fuzz_receiver() -> Iterator[Receiver]:
    receiver, stop = start_receiver()
    yield receiver
    stop()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
    headers=st.dictionaries(header_names, header_values, max_size=4),
    authorized=st.booleans(),
)
def test_fuzzed_requests_never_cause_a_5xx(
    fuzz_receiver: Receiver, data: bytes, headers: dict[str, str], authorized: bool
) -> None:
    """Whatever arrives, the answer is a 2xx or 4xx, never a server error."""
    receiver = fuzz_receiver
    sent = dict(headers)
    sent.pop("Content-Length", None)
    sent.pop("Transfer-Encoding", None)
    if authorized:
        sent["Authorization"] = f"Bearer {WEBHOOK_TOKEN}"
    sent.setdefault("Content-Type", "application/json")
    try:
        answer = post(receiver, data, sent)
    except httpx.LocalProtocolError:
        return  # the client itself refused to send those headers
    assert answer.status_code < 500, answer.text


def test_payloads_waiting_together_are_handed_over_in_order_split_at_a_repeat() -> None:
    """Payloads that queued while the core was busy reach it together (one hand-over, so
    one ALERTS_FOR_STATE query) and in arrival order; a second verdict for the same rule
    and Deployment starts a new hand-over, so a firing and its resolution are never merged
    into one picture. A hand-over that fails is logged and the next one still arrives."""

    def payload(deployment: str, status: str, fingerprint: str) -> Payload:
        one = {
            **ALERT,
            "status": status,
            "fingerprint": fingerprint,
            "labels": {**ALERT["labels"], "deployment": deployment},
        }
        return read_payload(body(one))[0]

    handed: list[list[tuple[str, str]]] = []

    async def sink(verdicts: list[Verdict]) -> None:
        handed.append([(v.target.deployment, v.state.value) for v in verdicts])
        if len(handed) == 1:
            raise RuntimeError("the core is down for a moment")

    async def scenario() -> None:
        intake = WebhookIntake(
            alertmanager_settings(), clock=SystemClock(), telemetry=Telemetry(), sink=sink
        )
        for one in (
            payload("web", "firing", "a"),
            payload("api", "firing", "b"),
            payload("web", "resolved", "a"),
            payload("cart", "firing", "c"),
        ):
            assert intake.offer(one)
        worker = asyncio.create_task(intake.run())
        await intake.drain()
        worker.cancel()

    with capture_logs() as logs:
        asyncio.run(scenario())
    assert handed == [
        [("web", "firing"), ("api", "firing")],
        [("web", "inactive"), ("cart", "firing")],
    ]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "alertmanager_verdicts_failed"
    ]
