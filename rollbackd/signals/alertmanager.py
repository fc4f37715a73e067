"""Alertmanager's webhook (payload version 4) as a second source of verdicts. Pure.

Prometheus already held an alert for its rule's ``for``, so a firing alert that matches a
configured trigger is a *firing* verdict for its Deployment; a resolved alert resolves it.
The breach began before ``startsAt`` by the rule's ``for``: the trigger's ``pending_for``
dates it here; the daemon asks Prometheus's ``ALERTS_FOR_STATE`` for the exact start.
A resolved alert does not prove recovery (Alertmanager also resolves alerts that
Prometheus stopped sending), and the verdict says so.

Alertmanager re-sends: after ``repeat_interval``, after a failed delivery, and from every
member of an HA pair. ``Deduplicator`` makes each (fingerprint, startsAt, status) act once.

``read_payload`` is total and isolates alerts: a body nested deeper than ``MAX_DEPTH`` or
with an envelope that is not version 4 is refused whole; an invalid alert (a ``startsAt``
without a timezone, a label that is not a string) is named with its reason and left out,
and the other alerts of the payload go on. Namespace and workload labels must be valid
Kubernetes names, or the alert names no target.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeGuard

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from rollbackd.model import Instant, RuleState, Target, Transition, Verdict
from rollbackd.settings import AlertmanagerSettings, Trigger

RESOLVED_NOTE = (
    "Alertmanager reported the alert resolved; that alone does not prove recovery "
    "(it also resolves alerts Prometheus stopped sending)"
)


MAX_DEPTH = 32
"""Deepest JSON nesting accepted; a version 4 payload is five levels deep."""
_PAIR_RE = re.compile(rb"\[\]|\{\}")
_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET_RE = re.compile(rb"[^\[\]{}]+")
_NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _plausible(value: datetime) -> datetime:
    if not 1970 <= value.year <= 9000:
        raise ValueError(f"time {value.isoformat()} is outside 1970..9000")
    return value


Time = Annotated[AwareDatetime, AfterValidator(_plausible)]
"""An RFC 3339 time with its offset, as Alertmanager writes it; a naive time is refused."""


class Alert(BaseModel):
    """One alert of a webhook payload; unknown and newer fields are accepted."""

    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: Time  # noqa: N815 - Alertmanager's field names
    endsAt: AwareDatetime | None = None  # noqa: N815 - 0001-01-01T00:00:00Z when unset
    generatorURL: str = ""  # noqa: N815
    fingerprint: str = ""


class _Envelope(BaseModel):
    """The webhook body, version 4, with its alerts not yet read."""

    model_config = ConfigDict(extra="allow")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: list[Any]
    groupKey: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    externalURL: str = ""  # noqa: N815


class Payload(_Envelope):
    """The webhook body, version 4, holding only its valid alerts."""

    alerts: list[Alert]


@dataclass(frozen=True)
class BadAlert:
    """An alert left out of a payload, and why."""

    index: int
    reason: str


class BadPayload(ValueError):
    """The body cannot be read as a payload at all (answered 400)."""


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON in ``body`` nests deeper than ``limit`` (or its brackets do not pair).

    Strings are removed first, then innermost ``[]``/``{}`` pairs, ``limit`` times: what
    remains is nested deeper. Linear in the body per round, and no recursion. A body with
    no more opening brackets than ``limit`` cannot nest deeper (the common case, counted in C).
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _NOT_BRACKET_RE.sub(b"", _STRING_RE.sub(b"", body))
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _PAIR_RE.sub(b"", brackets)
    return bool(brackets)


def read_payload(body: bytes) -> tuple[Payload, list[BadAlert]]:
    """The payload with its valid alerts, and the alerts left out; ``BadPayload`` if none."""
    if too_deep(body):
        raise BadPayload(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    try:  # the common case, a payload valid as a whole, parsed and checked in one pass
        return Payload.model_validate_json(body), []
    except ValidationError:
        pass  # read it again alert by alert, to keep the valid ones and name the others
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadPayload(f"invalid JSON: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    try:
        envelope = _Envelope.model_validate(document)
    except ValidationError as exc:
        raise BadPayload(f"invalid payload: {one_line(exc)}") from None
    alerts: list[Alert] = []
    bad: list[BadAlert] = []
    for index, raw in enumerate(envelope.alerts):
        try:
            alerts.append(Alert.model_validate(raw))
        except ValidationError as exc:
            bad.append(BadAlert(index, f"alerts[{index}]: {one_line(exc)}"))
    if bad and not alerts:
        raise BadPayload("; ".join(b.reason for b in bad[:5]))
    fields = {name: getattr(envelope, name) for name in type(envelope).model_fields}
    extra = envelope.model_extra or {}
    return Payload.model_construct(**{**extra, **fields, "alerts": alerts}), bad


def one_line(exc: ValidationError) -> str:
    """The first problem of a validation error, where it is and how many there were."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']} ({exc.error_count()} error(s))"


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
    """Remembers (fingerprint, startsAt, status) for ``ttl``, at most ``size`` of them.

    Each is kept as a 16-byte digest, so memory is bounded in bytes (about 200 per entry)
    however large the labels or fingerprints that senders make up.
    """

    ttl: timedelta = timedelta(hours=24)
    size: int = 50_000
    _seen: OrderedDict[bytes, datetime] = field(default_factory=OrderedDict)

    def first_time(self, alert: Alert, now: datetime) -> bool:
        who = alert.fingerprint or _label_key(alert.labels)
        identity = "\x00".join((who, alert.startsAt.isoformat(), alert.status))
        key = hashlib.blake2b(identity.encode(), digest_size=16).digest()
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
        if not _is_name(namespace, _NAMESPACE_RE) or not _is_name(deployment, _NAME_RE):
            # Anything but a Kubernetes name cannot be a managed workload (nor reach a message).
            count(alert.status, "no_target")
            continue
        if not dedup.first_time(alert, now.wall):
            count(alert.status, "duplicate")
            continue
        count(alert.status, trigger.action)
        verdicts.append(_verdict(alert, Target(namespace, deployment), trigger, now))
    return Intake(verdicts, counts, payload.truncatedAlerts)


def _is_name(value: str | None, pattern: re.Pattern[str]) -> TypeGuard[str]:
    return value is not None and pattern.fullmatch(value) is not None


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
