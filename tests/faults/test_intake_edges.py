"""The Alertmanager receiver fails safe, over real HTTP: credentials, bad input, replays
of a refused request, memory and connections under abuse (issue 14, cases 1 to 5)."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import queue
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from random import Random
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from rollbackd.errors import ConfigError
from rollbackd.settings import load_settings
from rollbackd.testing.sandbox import wait_until
from rollbackd.web.auth import NONCE, SIGNATURE, TIMESTAMP, sign
from tests.conftest import GOOD_HEADERS, Receiver, alertmanager_settings
from tests.integration.test_http_surface import body, post
from tests.unit.test_alertmanager_signals import ALERT

SECRET = "hmac-secret-0123456789abcdef"
HMAC = alertmanager_settings(auth={"hmac": {"secret": SECRET}})
JSON = {"Content-Type": "application/json"}


def signed(data: bytes, nonce: str, *, timestamp: str | None = None) -> dict[str, str]:
    stamp = timestamp or str(int(time.time()))
    return {
        **JSON,
        TIMESTAMP: stamp,
        NONCE: nonce,
        SIGNATURE: sign(SECRET, stamp, nonce, data),
    }


def port_of(receiver: Receiver) -> int:
    return int(receiver.url.rsplit(":", 1)[1])


def alert(**changes: Any) -> dict[str, Any]:
    one = json.loads(json.dumps(ALERT))
    one.update(changes)
    return one


# --- 1. an empty secret never means "no authentication" -------------------------------


@pytest.mark.parametrize(
    ("auth", "content"),
    [
        ("bearer_token_file: {file}", ""),
        ("bearer_token_file: {file}", "  \n\t\n"),
        ("basic_auth: {{username: am, password_file: {file}}}", ""),
        ("hmac: {{secret_file: {file}}}", "\n"),
    ],
)
def test_empty_secret_files_are_a_config_error(tmp_path: Path, auth: str, content: str) -> None:
    """A webhook credential file that is empty or only whitespace (a Secret mounted with an
    empty key) is refused at load with ERR_CONFIG_SECRET_EMPTY, not taken as no password."""
    secret = tmp_path / "secret"
    secret.write_text(content)
    config = tmp_path / "config.yaml"
    config.write_text(
        "alertmanager:\n  enabled: true\n"
        f"  auth: {{{auth.format(file=secret)}}}\n"
        "  triggers: [{match: {alertname: X}}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    codes = {problem.code for problem in caught.value.problems}
    assert codes == {"ERR_CONFIG_SECRET_EMPTY"}, caught.value.lines()


def test_blank_inline_credentials_are_a_config_error(tmp_path: Path) -> None:
    """An inline token or robot secret of spaces is refused too, with the key's line."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "prometheus:\n  bearer_token: '   '\n"
        "alertmanager:\n  enabled: true\n  auth: {bearer_token: ' '}\n"
        "  triggers: [{match: {alertname: X}}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    found = {(p.path, p.code, p.line) for p in caught.value.problems}
    assert ("prometheus.bearer_token", "ERR_CONFIG_SECRET_EMPTY", 2) in found
    assert ("alertmanager.auth.bearer_token", "ERR_CONFIG_SECRET_EMPTY", 5) in found


def test_a_token_file_that_disappears_or_empties_refuses_with_401(
    make_receiver: Any, tmp_path: Path
) -> None:
    """The token file removed or emptied at runtime: 401 for everyone (an empty credential
    included), never 500 and never open; one error line with its code; back when restored."""
    token = tmp_path / "token"
    token.write_text("file-token-31337\n")
    receiver = make_receiver(settings=alertmanager_settings(auth={"bearer_token_file": str(token)}))
    good = {**JSON, "Authorization": "Bearer file-token-31337"}
    empty = {**JSON, "Authorization": "Bearer"}
    assert post(receiver, body(alert(fingerprint="t1")), good).status_code == 200
    with capture_logs() as logs:
        token.unlink()
        answers = [post(receiver, body(), headers).status_code for headers in (good, empty, good)]
        token.write_text("")
        answers += [post(receiver, body(), headers).status_code for headers in (good, empty)]
        token.write_text("file-token-31337")
        answers.append(post(receiver, body(alert(fingerprint="t2")), good).status_code)
    assert answers == [401, 401, 401, 401, 401, 200]
    failures = [line for line in logs if line["event"] == "webhook_secret_unavailable"]
    assert len(failures) == 1
    assert failures[0]["code"] == "ERR_SECRET_UNAVAILABLE"
    assert any(line["event"] == "webhook_secret_restored" for line in logs)
    assert receiver.metric("rollbackd_webhook_requests_total", {"code": "401"}) == 5


# --- 2. bad input is a 4xx, and every answer is counted --------------------------------


def test_a_non_ascii_digit_timestamp_is_401_not_500(make_receiver: Any) -> None:
    """An HMAC timestamp of '²' (a digit to str.isdigit, not to int) is refused with 401."""
    receiver = make_receiver(settings=HMAC)
    data = body()
    for stamp in ("²", "12³", "¹", "1 2", "-5", "9" * 40):
        headers = signed(data, "nonce-digits-01", timestamp=stamp)
        answer = httpx.post(  # HTTP headers are Latin-1: the server reads '²' as sent
            f"{receiver.url}/api/v1/alertmanager",
            content=data,
            headers={k: v.encode("latin-1") for k, v in headers.items()},  # type: ignore[misc]
            timeout=5,
        )
        assert answer.status_code == 401, stamp


def test_deeply_nested_json_is_400_not_500(make_receiver: Any) -> None:
    """A body nested 1,000 (or 100,000) levels deep is a 400 naming the depth."""
    receiver = make_receiver()
    for depth in (1000, 100_000):
        for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
            data = opener * depth + b"1" + closer * depth
            answer = post(receiver, data)
            assert answer.status_code == 400, depth
            assert "nested deeper than" in answer.json()["error"]
    assert receiver.metric("rollbackd_webhook_requests_total", {"code": "400"}) == 4


def test_an_unexpected_failure_is_counted(make_receiver: Any) -> None:
    """If something unforeseen fails, the 500 is counted and logged like any answer."""
    receiver = make_receiver()

    class Broken:
        def __bool__(self) -> bool:
            raise RuntimeError("readiness probe broke")

    receiver.ready[0] = Broken()  # type: ignore[call-overload]
    with capture_logs() as logs:
        assert post(receiver, body()).status_code == 500
    assert receiver.metric("rollbackd_webhook_requests_total", {"code": "500"}) == 1
    assert [line["code"] for line in logs if line["event"] == "webhook_failed"] == [
        "ERR_WEBHOOK_FAILED"
    ]


# --- 3. a bad alert is rejected alone ---------------------------------------------------


def test_an_alert_without_timezone_is_rejected_and_the_rest_processed(make_receiver: Any) -> None:
    """A startsAt without a timezone rejects that alert with its reason; the valid alert of
    the same payload becomes a verdict (before: 200, then the whole payload was dropped)."""
    receiver = make_receiver()
    naive = alert(startsAt="2026-11-27T03:34:58", fingerprint="naive")
    valid = alert(fingerprint="valid")
    valid["labels"] = {**valid["labels"], "deployment": "api"}
    answer = post(receiver, body(naive, valid))
    assert answer.status_code == 200
    result = answer.json()
    assert result["alerts"] == 1
    assert [r["index"] for r in result["rejected"]] == [0]
    assert "timezone" in result["rejected"][0]["error"]
    assert result["rejected"][0]["code"] == "ERR_WEBHOOK_BAD_ALERT"
    receiver.drain()
    assert [str(v.target) for v in receiver.verdicts] == ["shop/api"]


def test_a_payload_of_only_bad_alerts_is_400(make_receiver: Any) -> None:
    """When no alert of a payload is valid, the answer is 400 naming why, not 200."""
    receiver = make_receiver()
    answer = post(receiver, body(alert(startsAt="2026-11-27T03:34:58"), alert(labels={"a": 1})))
    assert answer.status_code == 400
    assert "alerts[0]" in answer.json()["error"]
    receiver.drain()
    assert receiver.verdicts == []


# --- 4. a refused request does not use up its nonce ------------------------------------


def test_a_503_from_a_standby_leaves_the_nonce_for_the_retry(make_receiver: Any) -> None:
    """The sender's retry of a signed request first refused with 503 (not the leader) is
    accepted (before: 401 forever); a replay after acceptance is still refused."""
    receiver = make_receiver(settings=HMAC)
    data = body()
    headers = signed(data, "nonce-retry-0001")
    receiver.ready[0] = False
    assert post(receiver, data, headers).status_code == 503
    receiver.ready[0] = True
    assert post(receiver, data, headers).status_code == 200
    assert post(receiver, data, headers).status_code == 401


# --- 5. memory and connections under abuse ----------------------------------------------


def test_dedup_memory_is_bounded_whatever_the_fingerprints(make_receiver: Any) -> None:
    """30 payloads with 400 KB fingerprints leave under 3 MB behind (before: the
    fingerprints themselves were kept, 12 MB and growing)."""
    receiver = make_receiver()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with httpx.Client(timeout=10) as client:
            for n in range(30):
                data = body(alert(fingerprint=f"{n:04d}" + "f" * 400_000))
                url = f"{receiver.url}/api/v1/alertmanager"
                assert client.post(url, content=data, headers=GOOD_HEADERS).status_code == 200
        receiver.drain()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(receiver.verdicts) == 30
    assert grown < 3_000_000, grown


def _open(port: int, data: bytes = b"") -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), 5)
    if data:
        raw.sendall(data)
    return raw


@pytest.fixture
def connect() -> Iterator[Callable[..., socket.socket]]:
    """Open raw connections that are closed after the test, whatever its outcome."""
    opened: list[socket.socket] = []

    def open_one(port: int, data: bytes = b"") -> socket.socket:
        opened.append(_open(port, data))
        return opened[-1]

    yield open_one
    for raw in opened:
        raw.close()


def _closed_by_server(raw: socket.socket, deadline: float) -> bytes | None:
    """What the server sent by the time it closed or ``deadline`` came; None if it sent
    nothing and the connection is still open."""
    raw.settimeout(0.1)
    received = b""
    while time.monotonic() < deadline:
        try:
            chunk = raw.recv(4096)
        except TimeoutError:
            continue
        except ConnectionError:
            return received
        if not chunk:
            return received
        received += chunk
    return received or None


def test_silent_and_trickling_connections_are_closed(
    make_receiver: Any, connect: Callable[..., socket.socket]
) -> None:
    """Connections that send nothing, or their headers one byte at a time, are closed after
    server.header_timeout (before: 2,000 silent ones were still open after 22 s)."""
    receiver = make_receiver(server={"header_timeout": "500ms"})
    port = port_of(receiver)
    silent = [connect(port) for _ in range(50)]
    trickle = connect(port, b"P")
    started = time.monotonic()
    for byte in b"OST /api/v1/alertmanager HTTP/1.1\r\n":
        if time.monotonic() - started > 1.5:
            break
        with contextlib.suppress(OSError):
            trickle.send(bytes([byte]))
        time.sleep(0.05)
    deadline = time.monotonic() + 5
    assert all(_closed_by_server(raw, deadline) is not None for raw in [*silent, trickle])
    for raw in [*silent, trickle]:
        raw.close()
    assert post(receiver, body()).status_code == 200  # the listener still serves


def test_a_body_that_never_finishes_gets_408(
    make_receiver: Any, connect: Callable[..., socket.socket]
) -> None:
    """Headers complete but the body stalls: 408 after server.body_timeout, counted."""
    receiver = make_receiver(server={"body_timeout": "500ms"})
    raw = connect(
        port_of(receiver),
        b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: " + GOOD_HEADERS["Authorization"].encode() + b"\r\n"
        b"Connection: close\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{",
    )
    answer = _closed_by_server(raw, time.monotonic() + 5)
    raw.close()
    assert answer is not None
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"ERR_WEBHOOK_TIMEOUT" in answer
    assert receiver.metric("rollbackd_webhook_requests_total", {"code": "408"}) == 1


def test_a_client_that_leaves_mid_body_is_counted_not_failed(
    make_receiver: Any, connect: Callable[..., socket.socket]
) -> None:
    """A sender that disconnects halfway through its body is counted as 499 (nginx's
    "client closed request"), not logged and counted as an internal error (500), and the
    receiver goes on serving (before: ERR_WEBHOOK_FAILED with a traceback each time)."""
    receiver = make_receiver()
    raw = connect(
        port_of(receiver),
        b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: " + GOOD_HEADERS["Authorization"].encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{",
    )
    raw.close()
    gone = {"code": "499"}
    assert wait_until(lambda: receiver.metric("rollbackd_webhook_requests_total", gone) == 1, 5)
    assert receiver.metric("rollbackd_webhook_requests_total", {"code": "500"}) == 0
    assert post(receiver, body(ALERT)).status_code == 200


def test_unauthenticated_bodies_share_one_memory_budget(
    make_receiver: Any, connect: Callable[..., socket.socket]
) -> None:
    """In HMAC mode, unfinished unsigned bodies beyond 4 x max_body_bytes in total get 503
    at once instead of each holding its memory (before: 100 x 1 MB held, +135 MB)."""
    receiver = make_receiver(settings=HMAC, max_body=100_000)
    port = port_of(receiver)
    head = (
        b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    held = [connect(port, head + b"x" * 90_000) for _ in range(10)]
    answers = [_closed_by_server(raw, time.monotonic() + 0.3) for raw in held]
    refused = [a for a in answers if a is not None and a.startswith(b"HTTP/1.1 503")]
    assert 5 <= len(refused) <= 6, answers  # 4 x 100 KB held, the rest refused
    for raw in held:
        raw.close()
    data = body()
    deadline = time.monotonic() + 5
    status = 0
    while time.monotonic() < deadline and status != 200:  # the budget is given back
        status = post(
            receiver, data, signed(data, f"nonce-after-{time.monotonic_ns()}")
        ).status_code
    assert status == 200


def test_connections_beyond_max_connections_are_shed(
    make_receiver: Any, connect: Callable[..., socket.socket]
) -> None:
    """Beyond server.max_connections, new connections are closed at once; the listener
    keeps serving once they go."""
    receiver = make_receiver(server={"max_connections": 5})
    port = port_of(receiver)
    opened = [connect(port) for _ in range(15)]
    closed = [raw for raw in opened if _closed_by_server(raw, time.monotonic() + 0.2) is not None]
    assert len(closed) >= 9  # the sixth and later, give or take the one being accepted
    for raw in opened:
        raw.close()
    assert post(receiver, body()).status_code == 200


FD_LIMITED = textwrap.dedent(
    """
    import resource, sys, time
    resource.setrlimit(resource.RLIMIT_NOFILE, (80, 80))
    from rollbackd.runtime.logs import configure_logging
    configure_logging(level="info", fmt="json", stream=sys.stdout)
    from tests.conftest import start_receiver
    receiver, stop = start_receiver(server={"max_connections": 5000})
    print("URL", receiver.url, flush=True)
    sys.stdin.readline()
    stop()
    """
)


def test_running_out_of_file_descriptors_is_logged_once_per_burst() -> None:
    """At the file limit, the listener logs one ERR_WEBHOOK_EXHAUSTED line for the burst
    (before: 40,887 'out of system resource' lines) and serves again once it passes."""
    with subprocess.Popen(
        [sys.executable, "-c", FD_LIMITED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parents[2],
    ) as process:
        output = _flood_at_the_file_limit(process)
    events = [json.loads(x).get("event") for x in output if x.startswith("{")]
    assert events.count("listener_exhausted") == 1, output[-20:]
    assert not [x for x in output if "out of system resource" in x and "listener" not in x]


def _flood_at_the_file_limit(process: subprocess.Popen[str]) -> list[str]:
    """Open connections past the child's file limit, then let them go; its output lines."""
    assert process.stdout is not None
    assert process.stdin is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    output: list[str] = []

    def wait_for(text: str) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=0.1))
                if text in output[-1]:
                    return output[-1]
        raise AssertionError(f"{text!r} not seen in {output[-20:]}")

    flood: list[socket.socket] = []
    try:
        url = wait_for("URL ").split()[1]
        for _ in range(200):
            with contextlib.suppress(OSError):
                flood.append(_open(int(url.rsplit(":", 1)[1])))
        wait_for('"listener_exhausted"')
        time.sleep(1.5)  # asyncio retries accept() every second: the retry fails again
        for raw in flood:
            raw.close()
        deadline, status = time.monotonic() + 10, 0
        while time.monotonic() < deadline and status != 200:
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(f"{url}/healthz", timeout=1).status_code
        assert status == 200
    finally:
        for raw in flood:
            raw.close()
        process.stdin.write("\n")
        process.stdin.flush()
        process.wait(timeout=20)
    with contextlib.suppress(queue.Empty):
        while True:
            output.append(lines.get(timeout=0.5))
    return output


# --- generated bodies: no 5xx, no valid alert lost, memory bounded ---------------------

_names = st.sampled_from(["web", "api", "shop", "a-1", "payments-v2", "x9"])
_keys = st.sampled_from(["severity", "team", "summary", "描述", "le", ""])
_text = st.text(max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_keys, inner, max_size=2),
    max_leaves=4,
)
_zones = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))])
_aware = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(8999, 1, 1), timezones=_zones
)


@st.composite
def _valid_alert(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(st.dictionaries(_keys, _text, max_size=2))
    labels.update(alertname="HighErrorRate", namespace=draw(_names), deployment=draw(_names))
    return {
        "status": draw(st.sampled_from(["firing", "resolved"])),
        "labels": labels,
        "annotations": draw(st.dictionaries(_keys, _text, max_size=2)),
        "startsAt": draw(_aware).isoformat(),
        **draw(st.dictionaries(st.sampled_from(["extra", "future"]), _json, max_size=1)),
    }


_invalid_alert = st.one_of(
    _valid_alert().map(lambda a: {**a, "startsAt": a["startsAt"][:19]}),  # no timezone
    _valid_alert().map(lambda a: {**a, "labels": {**a["labels"], "n": 1}}),
    _valid_alert().map(lambda a: {**a, "status": "pending"}),
    _valid_alert().map(lambda a: {**a, "startsAt": "0001-01-01T00:00:00Z"}),
    _valid_alert().map(lambda a: {k: v for k, v in a.items() if k != "labels"}),
    _json,
)
_alert = st.one_of(
    _valid_alert().map(lambda a: (True, a)), _invalid_alert.map(lambda a: (False, a))
)

RECEIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.conftest import start_receiver
    receiver, stop = start_receiver()
    Path(sys.argv[1]).write_text(receiver.url)
    sys.stdin.readline()
    stop()
    """
)


@dataclass
class Remote:
    """A receiver in its own process, so that its memory is measured alone."""

    url: str
    pid: int
    client: httpx.Client
    senders: ThreadPoolExecutor  # bodies go out four at a time, as several senders would
    baseline: int
    verdicts: int = 0  # expected so far

    def rss(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert found is not None
        return int(found.group(1)) * 1024

    def acted(self) -> int:
        """Alerts turned into verdicts so far, from rollbackd's own metric."""
        text = self.client.get(f"{self.url}/metrics").text
        pattern = r'^rollbackd_alertmanager_alerts_total\{action="rollback",status="\w+"\} (\S+)'
        return int(sum(float(v) for v in re.findall(pattern, text, re.MULTILINE)))


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    where = tmp_path_factory.mktemp("remote") / "url"
    with (
        subprocess.Popen(
            [sys.executable, "-c", RECEIVER, str(where)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=Path(__file__).parents[2],
        ) as process,
        httpx.Client(timeout=10, headers=GOOD_HEADERS) as client,
        ThreadPoolExecutor(4) as senders,
    ):
        assert process.stdin is not None
        deadline = time.monotonic() + 30
        while not where.exists() or not where.read_text():
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.05)
        remote = Remote(where.read_text(), process.pid, client, senders, baseline=0)
        remote.baseline = remote.rss()
        yield remote
        process.stdin.write("\n")
        process.stdin.flush()


BODIES_PER_EXAMPLE = 40


@settings(
    max_examples=int(os.environ.get("ROLLBACKD_INTAKE_EXAMPLES", "125")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pool=st.lists(_alert, min_size=1, max_size=10),
    picks=st.randoms(use_true_random=False),
    envelope=st.dictionaries(st.sampled_from(["groupKey", "receiver", "y"]), _text, max_size=2),
)
def test_generated_payloads_answer_no_5xx_and_lose_no_valid_alert(
    remote: Remote, pool: list[tuple[bool, Any]], picks: Random, envelope: dict[str, str]
) -> None:
    """5,000 generated payloads (125 examples of 40 bodies drawn from one pool of alerts)
    mixing valid alerts with bad ones (no timezone, a number for a label, an unknown
    status, any JSON): never a 5xx; a 200 names exactly the valid alerts and each becomes
    a verdict; the receiver's RSS grows by less than 64 MB."""
    bodies = []
    for _ in range(BODIES_PER_EXAMPLE):
        alerts = picks.sample(pool, k=picks.randint(0, len(pool)))
        chosen = [
            {**alert, "fingerprint": f"{time.monotonic_ns()}-{n}"} if valid else alert
            for n, (valid, alert) in enumerate(alerts)
        ]
        document = {**envelope, "version": "4", "status": "firing", "alerts": chosen}
        bodies.append((sum(1 for ok, _ in alerts if ok), len(chosen), json.dumps(document)))
    url = f"{remote.url}/api/v1/alertmanager"
    answers = remote.senders.map(lambda b: remote.client.post(url, content=b[2].encode()), bodies)
    for (valid, alerts, _), answer in zip(bodies, answers, strict=True):
        assert answer.status_code < 500, answer.text
        if valid == 0 and alerts:
            assert answer.status_code == 400, answer.text
            continue
        assert answer.status_code == 200, answer.text
        assert answer.json()["alerts"] == valid
        remote.verdicts += valid
    deadline = time.monotonic() + 5
    while remote.acted() != remote.verdicts and time.monotonic() < deadline:
        time.sleep(0.001)
    assert remote.acted() == remote.verdicts
    assert remote.rss() - remote.baseline < 64 * 1024 * 1024
