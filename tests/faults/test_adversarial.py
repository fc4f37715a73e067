"""Adversarial signals and input: flapping, no-op changes, huge and unicode values."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from rollbackd.incidents.decide import decide
from rollbackd.model import DecisionReason, QueryResult, RuleState, Target, Transition
from rollbackd.rollbacks.plan import situation_of
from rollbackd.rules.evaluate import RuleEvaluator
from rollbackd.settings import KubernetesSettings, RollbackSettings, RuleSettings
from rollbackd.testing.clock import FakeClock
from rollbackd.testing.kube import seed
from tests.conftest import GOOD_HEADERS, Kube
from tests.integration.test_rollbacks import ENABLED
from tests.unit.test_alertmanager_signals import ALERT

WEB = Target("shop", "web")


def test_flapping_around_the_threshold_never_fires() -> None:
    """A value flapping just above and below the threshold every evaluation never holds
    for `for`, so it never fires."""
    evaluator = RuleEvaluator(
        RuleSettings.model_validate(
            {"name": "e", "expr": "x", "threshold": 0.05, "for": "10s", "interval": "2s"}
        )
    )
    clock = FakeClock()
    for tick in range(200):
        value = 0.051 if tick % 2 == 0 else 0.049
        (verdict,) = evaluator.evaluate(QueryResult(values={WEB: value}), now=clock.advance(2))
        assert verdict.transition is not Transition.FIRING
        assert verdict.state is not RuleState.FIRING


def test_metadata_only_change_is_not_a_change(kube: Kube) -> None:
    """Annotating or labelling a Deployment (the same template) is not a release: a breach
    long after the last real change is only reported."""
    seed.create_namespace(kube.api, "shop")
    seed.create_deployment(kube.api, "shop", "web", image="nginx:1.0", labels=ENABLED)
    seed.patch(kube.api, "shop", "web", {"metadata": {"annotations": {"team": "a"}}})
    deployment = seed.read(kube.api, "shop", "web")
    replicasets = kube.server.cluster.list_objects("replicasets", "shop")
    situation = situation_of(deployment, replicasets)
    later = datetime.now(UTC) + timedelta(hours=2)
    decision = decide(
        situation,
        breach_since=later,
        action="rollback",
        kube=KubernetesSettings(),
        rollback=RollbackSettings(),
        budget_used=0,
        now=later,
    )
    assert decision.reason is DecisionReason.NO_RECENT_CHANGE
    assert len(replicasets) == 1  # no new revision either


def test_huge_and_unicode_label_values_are_handled(make_receiver: Any) -> None:
    """Alerts with 100 KB label values or unicode names are accepted or refused cleanly
    (413 over the limit), never a server error, and never a verdict for nonsense: a
    namespace or Deployment label that is not a Kubernetes name names no target."""
    receiver = make_receiver(max_body=200_000)
    unicode_alert = json.loads(json.dumps(ALERT))
    unicode_alert["labels"].update(namespace="命名空间", deployment="部署-✓", summary="失败率 30%")
    unicode_alert["fingerprint"] = "u1"
    big = json.loads(json.dumps(ALERT))
    big["labels"]["summary"] = "x" * 100_000
    big["fingerprint"] = "b1"
    huge = json.loads(json.dumps(ALERT))
    huge["labels"]["summary"] = "y" * 300_000
    answers = []
    for alert in (unicode_alert, big, huge):
        body = json.dumps(
            {"version": "4", "status": "firing", "alerts": [alert]}, ensure_ascii=False
        ).encode()
        answers.append(
            httpx.post(
                f"{receiver.url}/api/v1/alertmanager", content=body, headers=GOOD_HEADERS, timeout=5
            ).status_code
        )
    assert answers == [200, 200, 413]
    receiver.drain()
    assert {str(v.target) for v in receiver.verdicts} == {"shop/web"}
    assert (
        receiver.metric(
            "rollbackd_alertmanager_alerts_total", {"status": "firing", "action": "no_target"}
        )
        == 1
    )
