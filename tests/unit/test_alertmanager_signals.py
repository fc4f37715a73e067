"""Alertmanager payloads to verdicts, pure: triggers, targets, dedupe, tolerant parsing."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from rollbackd.model import RuleState, Target, Transition
from rollbackd.settings import WebhookAuth
from rollbackd.signals.alertmanager import RESOLVED_NOTE, Deduplicator, Payload, interpret
from rollbackd.testing.clock import FakeClock
from rollbackd.web.auth import NONCE, SIGNATURE, TIMESTAMP, WebhookAuthenticator, sign
from tests.conftest import alertmanager_settings

ALERT = {
    "status": "firing",
    "labels": {
        "alertname": "HighErrorRate",
        "namespace": "shop",
        "deployment": "web",
        "severity": "critical",
    },
    "annotations": {"summary": "5xx above 5%"},
    "startsAt": "2026-11-27T03:34:58.123456789Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus/graph",
    "fingerprint": "0123456789abcdef",
    "someFutureField": {"x": 1},
}


def payload(*alerts: dict[str, Any], **extra: Any) -> Payload:
    body = {
        "version": "4",
        "status": "firing",
        "groupKey": "{}:{}",
        "receiver": "rollbackd",
        "alerts": list(alerts) or [ALERT],
        "routeLabels": {"a": "b"},
        "notification_reason": "first notification",
        **extra,
    }
    return Payload.model_validate(body)


def test_firing_alert_is_a_firing_verdict_for_its_deployment() -> None:
    """A matching firing alert fires for shop/web at once (Prometheus already held it)."""
    intake = interpret(
        payload(), settings=alertmanager_settings(), dedup=Deduplicator(), now=FakeClock().now()
    )
    (verdict,) = intake.verdicts
    assert verdict.target == Target("shop", "web")
    assert (verdict.state, verdict.transition) == (RuleState.FIRING, Transition.FIRING)
    assert verdict.rule == "alertmanager:HighErrorRate"
    assert verdict.source == "alertmanager"
    assert verdict.since.wall == datetime(2026, 11, 27, 3, 34, 58, 123456, tzinfo=UTC)
    assert intake.counts == {("firing", "rollback"): 1}


def test_resolved_alert_resolves_and_says_it_proves_nothing() -> None:
    """A resolved alert resolves the target, noting that it does not prove recovery."""
    resolved = ALERT | {"status": "resolved", "endsAt": "2026-11-27T03:40:00Z"}
    (verdict,) = interpret(
        payload(resolved, status="resolved"),
        settings=alertmanager_settings(),
        dedup=Deduplicator(),
        now=FakeClock().now(),
    ).verdicts
    assert verdict.transition is Transition.RESOLVED
    assert verdict.note == RESOLVED_NOTE


def test_the_same_alert_five_times_acts_once() -> None:
    """Re-sends (repeat_interval, retries, an HA pair) yield one verdict."""
    dedup, settings, clock = Deduplicator(), alertmanager_settings(), FakeClock()
    outcomes = [
        interpret(payload(), settings=settings, dedup=dedup, now=clock.advance(1)) for _ in range(5)
    ]
    assert sum(len(o.verdicts) for o in outcomes) == 1
    assert [o.counts for o in outcomes[1:]] == [{("firing", "duplicate"): 1}] * 4
    # a new firing (new startsAt) of the same alert is a new event
    again = ALERT | {"startsAt": "2026-11-27T05:00:00Z"}
    assert interpret(payload(again), settings=settings, dedup=dedup, now=clock.advance(1)).verdicts


def test_triggers_and_targets_filter_alerts() -> None:
    """Alerts no trigger matches, or without target labels, are counted and ignored."""
    settings = alertmanager_settings(
        triggers=[
            {
                "match": {"alertname": "HighErrorRate"},
                "match_re": {"severity": "critical|page"},
                "action": "rollback",
            },
            {"match": {"alertname": "SlowRequests"}, "action": "notify"},
        ]
    )
    warning = copy.deepcopy(ALERT)
    warning["labels"]["severity"] = "warning"
    warning["fingerprint"] = "1"
    slow = copy.deepcopy(ALERT)
    slow["labels"]["alertname"] = "SlowRequests"
    slow["fingerprint"] = "2"
    untargeted = copy.deepcopy(ALERT)
    del untargeted["labels"]["deployment"]
    untargeted["fingerprint"] = "3"
    intake = interpret(
        payload(ALERT, warning, slow, untargeted),
        settings=settings,
        dedup=Deduplicator(),
        now=FakeClock().now(),
    )
    assert [v.action for v in intake.verdicts] == ["rollback", "notify"]
    assert intake.counts[("firing", "no_trigger")] == 1
    assert intake.counts[("firing", "no_target")] == 1


def test_dedup_forgets_after_its_ttl() -> None:
    """Memory of seen alerts is bounded in time."""
    dedup = Deduplicator(ttl=timedelta(minutes=1))
    alert = payload().alerts[0]
    now = datetime(2026, 11, 27, tzinfo=UTC)
    assert dedup.first_time(alert, now)
    assert not dedup.first_time(alert, now + timedelta(seconds=30))
    assert dedup.first_time(alert, now + timedelta(minutes=3))


def test_bearer_and_basic_auth_are_checked() -> None:
    """Only the configured credentials pass; a near miss fails."""
    bearer = WebhookAuthenticator(WebhookAuth(bearer_token="s3cret-token"))
    assert bearer.check({"authorization": "Bearer s3cret-token"}, b"", 0)
    assert not bearer.check({"authorization": "Bearer s3cret-tokem"}, b"", 0)
    assert not bearer.check({}, b"", 0)
    basic = WebhookAuthenticator(
        WebhookAuth.model_validate({"basic_auth": {"username": "am", "password": "pw-1234"}})
    )
    good = "Basic " + base64.b64encode(b"am:pw-1234").decode()
    assert basic.check({"authorization": good}, b"", 0)
    assert not basic.check({"authorization": "Basic !!!"}, b"", 0)


def test_hmac_signatures_expire_and_cannot_be_replayed() -> None:
    """A signed request passes once accepted, within the skew; a replay or an old one is refused."""
    auth = WebhookAuthenticator(WebhookAuth.model_validate({"hmac": {"secret": "k" * 32}}))
    body = b'{"version":"4"}'
    headers = {
        TIMESTAMP: "1000",
        NONCE: "nonce-0001",
        SIGNATURE: sign("k" * 32, "1000", "nonce-0001", body),
    }
    assert auth.check(headers, body, 1010)
    auth.remember(headers, 1010)  # the receiver accepted it
    assert not auth.check(headers, body, 1011)  # replay
    fresh = headers | {NONCE: "nonce-0002", SIGNATURE: sign("k" * 32, "1000", "nonce-0002", body)}
    assert not auth.check(fresh, body, 1000 + 301)  # outside the 5m skew
    assert not auth.check(fresh, body + b" ", 1000)  # body changed
