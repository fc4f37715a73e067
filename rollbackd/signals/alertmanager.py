"""Alertmanager's webhook (payload version 4) as a second source of verdicts. Pure.

Prometheus already held an alert for its rule's ``for``, so a firing alert that matches a
configured trigger is a *firing* verdict for its Deployment; a resolved alert resolves it.
The breach began before ``startsAt`` by the rule's ``for``: the trigger's ``pending_for``
dates it here; the daemon asks Prometheus's ``ALERTS_FOR_STATE`` for the exact start.
A resolved alert does not prove recovery (Alertmanager also resolves alerts that
Prometheus stopped sending), and the verdict says so.

Alertmanager re-sends: after ``repeat_interval``, after a failed delivery, and from every
member of an HA pair. ``Deduplicator`` makes each (fingerprint, startsAt, status) act once.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rollbackd.model import Instant, RuleState, Target, Transition, Verdict
from rollbackd.settings import AlertmanagerSettings, Trigger

RESOLVED_NOTE = (
    "Alertmanager reported the alert resolved; that alone does not prove recovery "
    "(it also resolves alerts Prometheus stopped sending)"
)


class Alert(BaseModel):
    """One alert of a webhook payload; unknown and newer fields are accepted."""

    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime  # noqa: N815 - Alertmanager's field names
    endsAt: datetime | None = None  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: str = ""


class Payload(BaseModel):
    """The webhook body, version 4."""

    model_config = ConfigDict(extra="allow")

    version: str
    status: Literal["firing", "resolved"]
    alerts: list[Alert]
    groupKey: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    externalURL: str = ""  # noqa: N815


@dataclass(frozen=True)
class Intake:
    """What one payload yields: verdicts, and counts of what was not acted on."""

    verdicts: list[Verdict]
    counts: dict[tuple[str, str], int]  # (status, action) -> alerts, for the metric
    truncated: int = 0


def trigger_for(trigger_list: list[Trigger], labels: dict[str, str]) -> Trigger | None:
    """The first trigger whose every matcher holds (regexes anchored, as Alertmanager's)."""
    for trigger in trigger_list:
        if all(labels.get(k) == v for k, v in trigger.match.items()) and all(
            re.fullmatch(pattern, labels.get(k, "")) for k, pattern in trigger.match_re.items()
        ):
            return trigger
    return None


@dataclass
class Deduplicator:
    """Remembers (fingerprint, startsAt, status) for ``ttl``, at most ``size`` of them."""

    ttl: timedelta = timedelta(hours=24)
    size: int = 50_000
    _seen: OrderedDict[tuple[str, str, str], datetime] = field(default_factory=OrderedDict)

    def first_time(self, alert: Alert, now: datetime) -> bool:
        key = (
            alert.fingerprint or _label_key(alert.labels),
            alert.startsAt.isoformat(),
            alert.status,
        )
        while self._seen and next(iter(self._seen.values())) < now - self.ttl:
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        self._seen[key] = now
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


def _label_key(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def interpret(
    payload: Payload,
    *,
    settings: AlertmanagerSettings,
    dedup: Deduplicator,
    now: Instant,
) -> Intake:
    """Turn a payload into verdicts for the Deployments its alerts name."""
    verdicts: list[Verdict] = []
    counts: dict[tuple[str, str], int] = {}

    def count(status: str, action: str) -> None:
        counts[(status, action)] = counts.get((status, action), 0) + 1

    names = settings.target_labels
    for alert in payload.alerts:
        trigger = trigger_for(settings.triggers, alert.labels)
        namespace = alert.labels.get(names.namespace)
        deployment = alert.labels.get(names.deployment)
        if trigger is None:
            count(alert.status, "no_trigger")
            continue
        if not namespace or not deployment:
            count(alert.status, "no_target")
            continue
        if not dedup.first_time(alert, now.wall):
            count(alert.status, "duplicate")
            continue
        count(alert.status, trigger.action)
        verdicts.append(_verdict(alert, Target(namespace, deployment), trigger, now))
    return Intake(verdicts, counts, payload.truncatedAlerts)


def _verdict(alert: Alert, target: Target, trigger: Trigger, now: Instant) -> Verdict:
    firing = alert.status == "firing"
    began = alert.startsAt
    # Place startsAt on the monotonic clock too, so hold and change windows compare.
    since = Instant(now.monotonic - (now.wall - began).total_seconds(), began)
    return Verdict(
        rule=f"alertmanager:{alert.labels.get('alertname', '')}",
        target=target,
        value=None,
        op="",
        threshold=0.0,
        state=RuleState.FIRING if firing else RuleState.INACTIVE,
        since=since if firing else now,
        transition=Transition.FIRING if firing else Transition.RESOLVED,
        breaching=firing,
        source="alertmanager",
        labels=dict(alert.labels),
        action=trigger.action,
        note="" if firing else RESOLVED_NOTE,
        # startsAt is when the alert began *firing*; the breach began the rule's `for`
        # earlier. Without `pending_for` it is unknown here (ALERTS_FOR_STATE may tell).
        began=began - trigger.pending_for if firing and trigger.pending_for is not None else None,
    )
