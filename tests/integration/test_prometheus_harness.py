"""The real Prometheus scrapes the sample app, and PromQL sees the traffic a test sets."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest

from rollbackd.testing.app import SampleApp, set_traffic
from rollbackd.testing.services import Alertmanager, Prometheus

pytestmark = pytest.mark.integration

ERROR_RATIO = (
    'sum by (namespace, deployment) (rate(http_requests_total{code=~"5.."}[5s]))'
    " / sum by (namespace, deployment) (rate(http_requests_total[5s]))"
)


def query(prometheus: Prometheus, promql: str) -> list[dict[str, object]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310
        body = json.load(answer)
    assert body["status"] == "success"
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def wait_for_ratios(
    prometheus: Prometheus, expected: dict[str, float], *, timeout: float = 30.0
) -> dict[str, float]:
    """Poll until every target's error ratio is within 0.02 of what was set, or time out."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {}
        for series in query(prometheus, ERROR_RATIO):
            labels = series["metric"]
            assert isinstance(labels, dict)
            value = series["value"]
            assert isinstance(value, list)
            seen[f"{labels['namespace']}/{labels['deployment']}"] = float(value[1])
        if seen.keys() == expected.keys() and all(
            abs(seen[k] - v) < 0.02 for k, v in expected.items()
        ):
            return seen
        time.sleep(0.5)
    pytest.fail(f"error ratios never reached {expected}; last seen {seen}")


def test_error_ratio_query_returns_the_ratio_set_on_the_sample_app(
    prometheus: Prometheus, sample_app: SampleApp
) -> None:
    """An operator's error-ratio rule sees exactly the ratio each workload produces."""
    set_traffic(sample_app.url, "shop", "web", rps=50, error_ratio=0.2)
    set_traffic(sample_app.url, "payments", "api", rps=20, error_ratio=0.0)
    seen = wait_for_ratios(prometheus, {"shop/web": 0.2, "payments/api": 0.0})
    assert seen["shop/web"] == pytest.approx(0.2, abs=0.02)


def test_ratio_change_reaches_prometheus(prometheus: Prometheus, sample_app: SampleApp) -> None:
    """A bad release raising the error ratio shows up in Prometheus within seconds."""
    set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.0)
    wait_for_ratios(prometheus, {"shop/web": 0.0})
    set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.5)
    wait_for_ratios(prometheus, {"shop/web": 0.5})


def test_latency_histogram_gives_the_p99_that_was_set(
    prometheus: Prometheus, sample_app: SampleApp
) -> None:
    """A latency rule's histogram_quantile lands in the bucket of the latency that was set."""
    set_traffic(sample_app.url, "shop", "web", rps=50, latency_seconds=0.8)
    promql = (
        "histogram_quantile(0.99, sum by (namespace, deployment, le)"
        " (rate(http_request_duration_seconds_bucket[5s])))"
    )
    deadline = time.monotonic() + 30
    value = float("nan")
    while time.monotonic() < deadline:
        result = query(prometheus, promql)
        if result:
            value = float(result[0]["value"][1])  # type: ignore[index]
            if 0.5 < value <= 1.0:
                break
        time.sleep(0.5)
    assert 0.5 < value <= 1.0, f"p99 {value} outside the (0.5, 1.0] bucket of 0.8s"


def test_alertmanager_starts_and_answers_ready(alertmanager_binary: None) -> None:
    """The real Alertmanager the webhook tests rely on starts on a free port and is ready."""
    with Alertmanager(webhook_url="http://127.0.0.1:9/unused") as alertmanager:
        url = f"{alertmanager.url}/api/v2/status"
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310
            status = json.load(answer)
        assert status["config"]["original"].count("rollbackd") >= 1
