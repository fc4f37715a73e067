"""The Prometheus edge over real HTTP: one query per rule, values per target, classified errors."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import math
from pathlib import Path

import pytest

from rollbackd.errors import (
    PrometheusBadQuery,
    PrometheusBadResponse,
    PrometheusError,
    PrometheusExecution,
    PrometheusPartial,
    PrometheusTimeout,
    PrometheusUnreachable,
)
from rollbackd.model import Target
from rollbackd.settings import PrometheusSettings, TargetLabels
from rollbackd.signals.prometheus import PrometheusSource
from rollbackd.testing.prometheus_stub import PrometheusStub, error, vector
from rollbackd.testing.services import free_port

LABELS = TargetLabels()


def query(url: str, expr: str = "ratio", **settings: object) -> object:
    source = PrometheusSource(PrometheusSettings.model_validate({"url": url, **settings}))
    try:
        return asyncio.run(source.query(expr, target_labels=LABELS))
    finally:
        source.close()


def failure(url: str, **settings: object) -> PrometheusError:
    with pytest.raises(PrometheusError) as caught:
        query(url, **settings)
    return caught.value


@pytest.fixture
def stub() -> PrometheusStub:
    with PrometheusStub() as server:
        yield server  # type: ignore[misc]


def test_series_map_to_targets_and_special_values_parse(stub: PrometheusStub) -> None:
    """Each series becomes one Deployment's value; NaN and ±Inf parse; unlabeled series count."""
    stub.answer(
        vector(
            ({"namespace": "shop", "deployment": "web"}, "0.25"),
            ({"namespace": "shop", "deployment": "api"}, "NaN"),
            ({"namespace": "pay", "deployment": "gw"}, "+Inf"),
            ({"namespace": "pay", "deployment": "db"}, "-Inf"),
            ({"namespace": "pay"}, "1"),
        )
    )
    result = query(stub.url)
    values = result.values  # type: ignore[attr-defined]
    assert values[Target("shop", "web")] == 0.25
    assert math.isnan(values[Target("shop", "api")])
    assert values[Target("pay", "gw")] == math.inf
    assert values[Target("pay", "db")] == -math.inf
    assert result.ignored == 1  # type: ignore[attr-defined]
    (request,) = stub.requests
    assert request.path == "/api/v1/query"
    assert request.params["query"] == "ratio"
    assert request.params["timeout"] == "9500ms"  # Prometheus gives up just before rollbackd


def test_custom_target_labels(stub: PrometheusStub) -> None:
    """Operators whose series use other label names (kube_namespace, app) map them."""
    stub.answer(vector(({"kube_namespace": "shop", "app": "web"}, "1")))
    source = PrometheusSource(PrometheusSettings(url=stub.url))
    labels = TargetLabels(namespace="kube_namespace", deployment="app")
    result = asyncio.run(source.query("x", target_labels=labels))
    assert result.values == {Target("shop", "web"): 1.0}


def test_duplicate_series_make_a_target_ambiguous(stub: PrometheusStub) -> None:
    """Two series for one Deployment (a `by` clause keeping `pod`) are flagged, not guessed."""
    stub.answer(
        vector(
            ({"namespace": "shop", "deployment": "web", "pod": "a"}, "0.9"),
            ({"namespace": "shop", "deployment": "web", "pod": "b"}, "0.0"),
        )
    )
    result = query(stub.url)
    assert result.values == {}  # type: ignore[attr-defined]
    assert result.ambiguous == {Target("shop", "web")}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected", "text"),
    [
        (400, error("bad_data", "1:5: parse error"), "application/json", PrometheusBadQuery, "1:5"),
        (422, error("execution", "many-to-many"), "application/json", PrometheusExecution, "many"),
        (503, error("timeout", "query timed out"), "application/json", PrometheusTimeout, "timed"),
        (500, b"internal", "text/plain", PrometheusUnreachable, "HTTP 500"),
        (503, b"Service Unavailable", "text/plain", PrometheusUnreachable, "HTTP 503"),
        (401, b"unauthorized", "text/plain", PrometheusBadResponse, "HTTP 401"),
        (200, b"{not json", "application/json", PrometheusBadResponse, "HTTP 200"),
        (200, b'{"status":"success"}', "application/json", PrometheusBadResponse, "unexpected"),
    ],
)
def test_failures_are_classified_with_prometheus_message(
    stub: PrometheusStub,
    status: int,
    body: bytes,
    content_type: str,
    expected: type[PrometheusError],
    text: str,
) -> None:
    """Every failure becomes one ERR_PROM_ code, keeping Prometheus's errorType and message."""
    stub.answer(body, status=status, content_type=content_type)
    exc = failure(stub.url)
    assert type(exc) is expected
    assert text in exc.message


def test_scalar_result_is_a_bad_query(stub: PrometheusStub) -> None:
    """A rule returning a scalar cannot name Deployments: it is refused as a bad query."""
    stub.answer(b'{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}')
    assert isinstance(failure(stub.url), PrometheusBadQuery)


@pytest.mark.parametrize(
    "value",
    ['[1700000000.0, "fast"]', "[1700000000.0]", '"0.5"'],
    ids=["not a number", "no number", "not a pair"],
)
def test_a_sample_without_a_number_is_a_bad_response(stub: PrometheusStub, value: str) -> None:
    """A backend that writes a sample without a number gets ERR_PROM_BAD_RESPONSE, like any
    malformed answer; the tick goes on (before, the error escaped the edge unclassified)."""
    series = '{"metric":{"namespace":"shop","deployment":"web"},"value":' + value + "}"
    body = '{"status":"success","data":{"resultType":"vector","result":[' + series + "]}}"
    stub.answer(body.encode())
    exc = failure(stub.url)
    assert type(exc) is PrometheusBadResponse
    assert exc.code == "ERR_PROM_BAD_RESPONSE"


def test_extra_labels_and_empty_label_values_are_mapped_as_before(stub: PrometheusStub) -> None:
    """A vector whose series carry more than the two target labels, or an empty one, is mapped
    series by series: unlabeled ones counted, the rest each one Deployment's value."""
    stub.answer(
        vector(
            ({"namespace": "shop", "deployment": "web", "le": "0.5"}, "0.25"),
            ({"namespace": "shop", "deployment": ""}, "1"),
            ({"namespace": "pay", "deployment": "gw"}, "2"),
        )
    )
    result = query(stub.url)
    assert dict(result.values) == {  # type: ignore[attr-defined]
        Target("shop", "web"): 0.25,
        Target("pay", "gw"): 2.0,
    }
    assert result.ignored == 1  # type: ignore[attr-defined]


def test_a_range_is_asked_for_to_the_millisecond(stub: PrometheusStub) -> None:
    """A range query sends its start, end and step to the millisecond: a breach's onset is
    looked for at tenths of a second (before, start and end were rounded to whole seconds,
    and up to half a second of the newest points was lost)."""
    source = PrometheusSource(PrometheusSettings(url=stub.url))
    try:
        asyncio.run(
            source.query_range("up", target_labels=LABELS, start=100.25, end=106.15, step=0.1)
        )
    finally:
        source.close()
    (request,) = stub.requests
    assert request.path == "/api/v1/query_range"
    assert (request.params["start"], request.params["end"], request.params["step"]) == (
        "100.250",
        "106.150",
        "0.100",
    )


def test_slow_prometheus_times_out(stub: PrometheusStub) -> None:
    """A Prometheus slower than the timeout yields ERR_PROM_TIMEOUT, not a hung evaluation."""
    stub.answer(vector(), delay=3)
    exc = failure(stub.url, timeout="1s")
    assert exc.code == "ERR_PROM_TIMEOUT"


def test_closed_port_is_unreachable() -> None:
    """Nothing listening: ERR_PROM_UNREACHABLE naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    exc = failure(url)
    assert exc.code == "ERR_PROM_UNREACHABLE"
    assert url in exc.message


def test_an_answer_with_warnings_is_partial_not_clean(stub: PrometheusStub) -> None:
    """Partial data (a Thanos store down) is ERR_PROM_PARTIAL, judged by on_error, never a
    clean answer; it still carries the warnings and the values it held, which eval shows."""
    stub.answer(vector(({"namespace": "a", "deployment": "b"}, "1"), warnings=["store down"]))
    exc = failure(stub.url)
    assert isinstance(exc, PrometheusPartial)
    assert exc.code == "ERR_PROM_PARTIAL"
    assert "store down" in exc.message
    assert exc.warnings == ("store down",)
    assert exc.partial is not None
    assert exc.partial.values == {Target("a", "b"): 1.0}


def test_an_answer_cut_mid_body_is_a_bad_response(stub: PrometheusStub) -> None:
    """A chunked answer cut off mid-way is ERR_PROM_BAD_RESPONSE, not a traceback."""
    stub.answer(vector(({"namespace": "a", "deployment": "b"}, "1")), cut=True)
    exc = failure(stub.url)
    assert exc.code == "ERR_PROM_BAD_RESPONSE"
    assert "cut off" in exc.message


def test_credentials_are_read_at_every_query(stub: PrometheusStub, tmp_path: Path) -> None:
    """One running source sends a rotated token or password on its next query (before:
    read once at start-up, so a rotation made rollbackd blind); a file gone is
    ERR_PROM_CREDENTIALS, and no query goes out without credentials."""
    token, password = tmp_path / "token", tmp_path / "password"
    token.write_text("first-token\n")
    password.write_text("first-pw")
    sources = [
        PrometheusSource(PrometheusSettings(url=stub.url, bearer_token_file=str(token))),
        PrometheusSource(
            PrometheusSettings.model_validate(
                {"url": stub.url, "basic_auth": {"username": "rb", "password_file": str(password)}}
            )
        ),
    ]

    async def once(source: PrometheusSource) -> None:
        await source.query("ratio", target_labels=LABELS)

    for source in sources:
        asyncio.run(once(source))
    token.write_text("rotated-token\n")
    password.write_text("rotated-pw")
    for source in sources:
        asyncio.run(once(source))
    token.unlink()
    password.write_text("")
    for source in sources:
        with pytest.raises(PrometheusError) as caught:
            asyncio.run(once(source))
        assert caught.value.code == "ERR_PROM_CREDENTIALS"
        source.close()
    sent = [r.headers["Authorization"] for r in stub.requests]
    assert sent == [
        "Bearer first-token",
        "Basic " + base64.b64encode(b"rb:first-pw").decode(),
        "Bearer rotated-token",
        "Basic " + base64.b64encode(b"rb:rotated-pw").decode(),
    ]


def test_bearer_token_file_is_sent_and_reread(stub: PrometheusStub, tmp_path: Path) -> None:
    """The bearer token comes from its file at each start, so a rotated token is picked up."""
    token = tmp_path / "token"
    token.write_text("first-token\n")
    query(stub.url, bearer_token_file=str(token))
    token.write_text("rotated-token\n")
    query(stub.url, bearer_token_file=str(token))
    sent = [r.headers["Authorization"] for r in stub.requests]
    assert sent == ["Bearer first-token", "Bearer rotated-token"]


def test_basic_auth_is_sent(stub: PrometheusStub) -> None:
    """Basic auth credentials reach Prometheus's auth proxy."""
    query(stub.url, basic_auth={"username": "rb", "password": "pw-123"})
    header = stub.requests[0].headers["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")) == b"rb:pw-123"


def test_headers_files_and_params_go_with_every_request(
    stub: PrometheusStub, tmp_path: Path
) -> None:
    """Mimir's tenant header, a header read from a file (rotated between two queries) and
    Thanos's params reach the backend on the query, the range query and the syntax check,
    under the URL's path prefix."""
    key = tmp_path / "key"
    key.write_text("key-one-0001\n")
    settings = PrometheusSettings.model_validate(
        {
            "url": f"{stub.url}/prometheus",
            "headers": {"X-Scope-OrgID": "team-a"},
            "header_files": {"X-Api-Key": str(key)},
            "params": {"dedup": "true"},
        }
    )
    source = PrometheusSource(settings)

    async def three() -> None:
        await source.query("up", target_labels=LABELS)
        key.write_text("key-two-0002\n")
        await source.query_range("up", target_labels=LABELS, start=0, end=10, step=5)
        await source.check_syntax("up")

    stub.answer(vector())
    asyncio.run(three())
    source.close()
    paths = [r.path for r in stub.requests]
    assert paths == [f"/prometheus/api/v1/{e}" for e in ("query", "query_range", "format_query")]
    assert all(r.headers["X-Scope-OrgID"] == "team-a" for r in stub.requests)
    assert all(r.params["dedup"] == "true" for r in stub.requests)
    assert [r.headers["X-Api-Key"] for r in stub.requests] == [
        "key-one-0001",
        "key-two-0002",
        "key-two-0002",
    ]


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (404, b"404 page not found\n", "text/plain"),
        (400, b'unsupported path requested: "/api/v1/format_query"\n', "text/plain"),
    ],
    ids=["prometheus before 2.38", "victoriametrics"],
)
def test_a_backend_without_format_query_is_not_checked_and_asked_once(
    stub: PrometheusStub, status: int, body: bytes, content_type: str
) -> None:
    """Where format_query is missing, the syntax check says so (False) and is not asked
    again: start-up goes on instead of failing on ERR_PROM_BAD_RESPONSE."""
    stub.answer(body, status=status, content_type=content_type)
    source = PrometheusSource(PrometheusSettings(url=stub.url))

    async def twice() -> list[bool]:
        return [await source.check_syntax("up"), await source.check_syntax("rate(x[1m])")]

    assert asyncio.run(twice()) == [False, False]
    source.close()
    assert len(stub.requests) == 1


def test_a_refused_expression_is_a_bad_query_on_every_backend(stub: PrometheusStub) -> None:
    """Prometheus's bad_data (400) and VictoriaMetrics's parse error (422, errorType "422")
    are both ERR_PROM_BAD_QUERY with the backend's message."""
    stub.answer(error("bad_data", "1:14: parse error: unclosed left parenthesis"), status=400)
    source = PrometheusSource(PrometheusSettings(url=stub.url))
    with pytest.raises(PrometheusBadQuery, match="unclosed left parenthesis"):
        asyncio.run(source.check_syntax("sum(rate(x[1m]"))
    source.close()
    stub.answer(error("422", 'argList: unexpected token ""; unparsed data: ""'), status=422)
    exc = failure(stub.url)
    assert exc.code == "ERR_PROM_BAD_QUERY"
    assert "unparsed data" in exc.message


def _matrix(*series: tuple[dict[str, str], list[tuple[float, str]]]) -> bytes:
    result = [
        {"metric": labels, "values": [[stamp, value] for stamp, value in values]}
        for labels, values in series
    ]
    return json.dumps(
        {"status": "success", "data": {"resultType": "matrix", "result": result}}
    ).encode()


def _range(stub: PrometheusStub, body: bytes) -> list[tuple[float, dict[Target, float]]]:
    stub.answer(body)
    source = PrometheusSource(PrometheusSettings(url=stub.url))
    try:
        answer = asyncio.run(
            source.query_range("ratio", target_labels=LABELS, start=0, end=30, step=15)
        )
    finally:
        source.close()
    return [(stamp, dict(result.values)) for stamp, result in answer]


def test_a_dense_and_a_sparse_matrix_map_to_the_same_columns(stub: PrometheusStub) -> None:
    """A history whose series share their times is mapped in one pass of columns; one with
    a missing point, or with extra labels, is mapped time by time: the values per time are
    the same either way (NaN and infinities included), and gc is left as it was."""
    web, api = {"namespace": "a", "deployment": "web"}, {"namespace": "a", "deployment": "api"}
    points = [(0, "0.1"), (15, "NaN"), (30, "+Inf")]
    dense = _range(stub, _matrix((web, points), (api, [(0, "1"), (15, "2"), (30, "3")])))
    sparse = _range(stub, _matrix((web, points), (api, [(0, "1"), (30, "3")])))
    labelled = _range(
        stub,
        _matrix(
            ({**web, "pod": "p"}, points), ({**api, "pod": "q"}, [(0, "1"), (15, "2"), (30, "3")])
        ),
    )
    web_t, api_t = Target("a", "web"), Target("a", "api")
    assert [s for s, _ in dense] == [0.0, 15.0, 30.0]
    assert dense[0][1] == {web_t: 0.1, api_t: 1.0}
    assert math.isnan(dense[1][1][web_t])
    assert dense[2][1] == {web_t: math.inf, api_t: 3.0}
    assert dense[1][1][api_t] == 2.0
    assert sparse[1][1].keys() == {web_t}
    assert [(s, {t: v for t, v in c.items() if not math.isnan(v)}) for s, c in labelled] == [
        (s, {t: v for t, v in c.items() if not math.isnan(v)}) for s, c in dense
    ]
    assert gc.isenabled()


def test_a_range_answer_that_is_not_a_matrix_of_numbers_is_a_bad_response(
    stub: PrometheusStub,
) -> None:
    """A range sample without a number is ERR_PROM_BAD_RESPONSE, never a raw exception."""
    web = {"namespace": "a", "deployment": "web"}
    with pytest.raises(PrometheusBadResponse):
        _range(stub, _matrix((web, [(0, "fast")])))
