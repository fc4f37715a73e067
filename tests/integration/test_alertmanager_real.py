"""Real Prometheus fires an alerting rule, real Alertmanager posts it to rollbackd."""

from __future__ import annotations

from typing import Any

import pytest

from rollbackd.model import Target, Transition
from rollbackd.testing.app import SampleApp, set_traffic
from rollbackd.testing.sandbox import wait_until
from rollbackd.testing.services import Alertmanager, Prometheus
from tests.conftest import WEBHOOK_TOKEN

pytestmark = pytest.mark.integration

RULES = """
groups:
  - name: rollbackd-test
    interval: 1s
    rules:
      - alert: HighErrorRate
        expr: >-
          sum by (namespace, deployment) (rate(http_requests_total{code="500"}[5s]))
          / sum by (namespace, deployment) (rate(http_requests_total[5s])) > 0.05
        for: 2s
        labels: {severity: critical}
"""


def test_alert_fires_and_resolves_through_alertmanager(
    make_receiver: Any, sample_app: SampleApp, prometheus_binary: None, alertmanager_binary: None
) -> None:
    """An error-ratio alert reaches rollbackd as a firing verdict for shop/web, with the
    bearer token Alertmanager sends; when the errors stop, a resolved verdict follows."""
    receiver = make_receiver()
    set_traffic(sample_app.url, "shop", "web", rps=50, error_ratio=0.0)
    set_traffic(sample_app.url, "shop", "api", rps=50, error_ratio=0.0)
    webhook = f"{receiver.url}/api/v1/alertmanager"
    with (
        Alertmanager(webhook_url=webhook, bearer_token=WEBHOOK_TOKEN) as alertmanager,
        Prometheus(
            scrape_targets=[sample_app.address],
            rule_files={"rules.yml": RULES},
            alertmanagers=[alertmanager.address],
        ) as prometheus,
    ):
        prometheus.wait_until_scraped()
        set_traffic(sample_app.url, "shop", "web", rps=50, error_ratio=0.3)

        def seen(transition: Transition) -> list[Any]:
            return [v for v in receiver.verdicts if v.transition is transition]

        assert wait_until(lambda: seen(Transition.FIRING), 60), alertmanager.output()
        (firing,) = seen(Transition.FIRING)
        assert firing.target == Target("shop", "web")
        assert firing.rule == "alertmanager:HighErrorRate"
        assert firing.labels["severity"] == "critical"

        set_traffic(sample_app.url, "shop", "web", rps=50, error_ratio=0.0)
        assert wait_until(lambda: seen(Transition.RESOLVED), 60), alertmanager.output()
        (resolved,) = seen(Transition.RESOLVED)
        assert resolved.target == Target("shop", "web")
        assert "does not prove recovery" in resolved.note
    assert all(v.target == Target("shop", "web") for v in receiver.verdicts)
    assert (
        receiver.metric(
            "rollbackd_alertmanager_alerts_total", {"status": "firing", "action": "rollback"}
        )
        == 1
    )
    assert receiver.metric("rollbackd_webhook_requests_total", {"code": "401"}) == 0
