"""The sample workload: counters that follow the traffic a test sets, over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from rollbackd.testing.app import SampleApp, Traffic, Workload, set_traffic


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def samples(workload: Workload) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in workload.collect():
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


def test_counters_follow_rate_and_error_ratio() -> None:
    """Ten seconds at 10 rps with 20% errors: 80 successes and 20 errors."""
    clock = Clock()
    workload = Workload(clock)
    workload.set("shop", "web", Traffic(rps=10, error_ratio=0.2, latency_seconds=0.3))
    clock.now = 10
    found = samples(workload)
    ok = "http_requests_total{code=200,deployment=web,namespace=shop}"
    err = "http_requests_total{code=500,deployment=web,namespace=shop}"
    assert found[ok] == pytest.approx(80)
    assert found[err] == pytest.approx(20)
    bucket = "http_request_duration_seconds_bucket{deployment=web,le=%s,namespace=shop}"
    below, above = bucket % "0.25", bucket % "0.5"
    assert found[below] == 0
    assert found[above] == pytest.approx(100)


def test_change_keeps_the_past_at_old_rates() -> None:
    """Raising the error ratio affects only requests after the change, like a real release."""
    clock = Clock()
    workload = Workload(clock)
    workload.set("shop", "web", Traffic(rps=10, error_ratio=0.0))
    clock.now = 10
    workload.set("shop", "web", Traffic(rps=10, error_ratio=1.0))
    clock.now = 15
    err = "http_requests_total{code=500,deployment=web,namespace=shop}"
    assert samples(workload)[err] == pytest.approx(50)


def test_http_api_sets_lists_and_rejects_bad_traffic() -> None:
    """Tests steer the app over HTTP; nonsense such as a ratio of 2 is answered 400."""
    with SampleApp() as app:
        set_traffic(app.url, "shop", "web", rps=5, error_ratio=0.5)
        with urllib.request.urlopen(f"{app.url}/targets", timeout=5) as answer:  # noqa: S310
            assert json.load(answer)["shop/web"]["error_ratio"] == 0.5
        with urllib.request.urlopen(f"{app.url}/metrics", timeout=5) as answer:  # noqa: S310
            assert b'http_requests_total{code="500",deployment="web",namespace="shop"}' in (
                answer.read()
            )
        with pytest.raises(urllib.error.HTTPError) as caught:
            set_traffic(app.url, "shop", "web", error_ratio=2)
        assert caught.value.code == 400
        caught.value.close()
