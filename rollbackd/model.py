"""The values that flow through rollbackd's pipeline, defined once.

signals -> ``QueryResult`` -> rules -> ``Verdict`` -> decisions -> rollbacks -> notifications.
Every value is immutable; stages take values and a ``now`` and return values.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from itertools import compress, repeat
from math import isnan
from operator import ne
from typing import Any, NamedTuple

Obj = dict[str, Any]
"""A Kubernetes object as the API's JSON: what every stage reads and writes."""


class Target(NamedTuple):
    """A Deployment, the unit rollbackd judges and acts on.

    A named tuple rather than a dataclass: targets are dict keys in every evaluation, and
    a tuple's hash and equality run in C (a third of the time at 10,000 Deployments).
    """

    namespace: str
    deployment: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.deployment}"


def new_incident_id(now: datetime, seed: str = "") -> str:
    """An incident id people can read aloud and sort: ``rb-20261127-153052-7f3a``.

    With a ``seed`` (the workload, in the incident core) the id is derived, not random, so
    the core stays a pure function of its inputs.
    """
    suffix = (
        hashlib.sha256(f"{seed}@{now.isoformat()}".encode()).hexdigest()[:4]
        if seed
        else secrets.token_hex(2)
    )
    return f"rb-{now:%Y%m%d-%H%M%S}-{suffix}"


@dataclass(frozen=True, slots=True)
class Instant:
    """A moment, read once from the clock.

    Durations (hold windows, cooldowns) are measured on ``monotonic`` seconds, which never
    jump; ``wall`` (UTC) is only for showing people when something happened.
    """

    monotonic: float
    wall: datetime

    def seconds_since(self, earlier: Instant) -> float:
        return self.monotonic - earlier.monotonic


class SeriesValues(Mapping[Target, float]):
    """The values of an instant vector whose every series carries exactly the two target
    labels, kept as three columns (namespaces, names, numbers) until they are asked for.

    Such a vector names each target once (a vector never repeats a label set), so none is
    ambiguous, and ``pick`` finds the few targets worth judging without building a
    ``Target`` for each of the thousands that are healthy. Any other use builds the whole
    mapping once.
    """

    __slots__ = ("_names", "_namespaces", "_numbers", "_whole")

    def __init__(self, namespaces: list[str], names: list[str], numbers: list[float]) -> None:
        self._namespaces, self._names, self._numbers = namespaces, names, numbers
        self._whole: dict[Target, float] | None = None

    def _built(self) -> dict[Target, float]:
        if self._whole is None:
            new = tuple.__new__
            self._whole = {
                new(Target, key): number
                for key, number in zip(
                    zip(self._namespaces, self._names, strict=True), self._numbers, strict=True
                )
            }
            self._namespaces, self._names, self._numbers = [], [], []
        return self._whole

    def __getitem__(self, target: Target) -> float:
        return self._built()[target]

    def __iter__(self) -> Iterator[Target]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._whole) if self._whole is not None else len(self._numbers)

    def pick(self, wanted: Collection[Target], breach: Breach | None = None) -> dict[Target, float]:
        """The targets of ``wanted`` present, and (with ``breach``) every target whose value
        is over the line or NaN, in the answer's order; the scans run in C."""
        if self._whole is not None:
            return _picked(self._whole, wanted, breach)
        names, namespaces, numbers = self._names, self._namespaces, self._numbers
        every = range(len(numbers))
        looked_for = {target.deployment for target in wanted}
        found = set(compress(every, map(looked_for.__contains__, names))) if looked_for else set()
        kept: set[int] = set()
        if breach is not None:
            compare, threshold = breach
            kept.update(compress(every, map(compare, numbers, repeat(threshold))))
            kept.update(compress(every, map(ne, numbers, numbers)))  # NaN
        new = tuple.__new__
        picked: dict[Target, float] = {}
        for index in sorted(found | kept):
            target: Target = new(Target, (namespaces[index], names[index]))
            if index in kept or target in wanted:
                picked[target] = numbers[index]
        return picked


Breach = tuple[Callable[[float, float], bool], float]
"""A rule's comparison and threshold: a value ``v`` breaches when ``compare(v, threshold)``."""


def pick(
    values: Mapping[Target, float], wanted: Collection[Target], breach: Breach | None = None
) -> dict[Target, float]:
    """The targets of ``wanted`` present in ``values``, and (with ``breach``) every target
    whose value is over the line or NaN."""
    if isinstance(values, SeriesValues):
        return values.pick(wanted, breach)
    return _picked(values, wanted, breach)


def _picked(
    values: Mapping[Target, float], wanted: Collection[Target], breach: Breach | None
) -> dict[Target, float]:
    if breach is None:
        return {t: v for t, v in values.items() if t in wanted}
    compare, threshold = breach
    return {t: v for t, v in values.items() if t in wanted or isnan(v) or compare(v, threshold)}


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One instant query's answer, as values per target.

    ``ignored`` counts series that lacked a target label; ``ambiguous`` holds targets that
    appeared in more than one series (a ``by`` clause that keeps too many labels), whose
    value cannot be trusted.
    """

    values: Mapping[Target, float]
    ignored: int = 0
    ambiguous: frozenset[Target] = frozenset()


class RuleState(StrEnum):
    """Where a (rule, target) pair stands, as in Prometheus alerting rules."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class Transition(StrEnum):
    """What changed at this evaluation."""

    PENDING = "pending"  # inactive -> pending: the breach began
    FIRING = "firing"  # pending -> firing: the breach held for `for`
    CLEARED = "cleared"  # pending -> inactive: the breach ended before `for`
    RESOLVED = "resolved"  # firing -> inactive: no breach for `keep_firing_for`


class Reason(StrEnum):
    """Why a target's value was not compared with the threshold as-is."""

    NONE = ""
    NO_DATA = "no_data"
    LOW_TRAFFIC = "low_traffic"
    AMBIGUOUS = "ambiguous"
    ERROR = "error"
    PARTIAL_RESPONSE = "partial_response"  # the answer carried warnings: data may be missing


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's judgement of one target at one evaluation."""

    rule: str
    target: Target
    value: float | None
    op: str
    threshold: float
    state: RuleState
    since: Instant
    transition: Transition | None = None
    breaching: bool | None = None  # None: unknown (error or no data under `hold`)
    reason: Reason = Reason.NONE
    error_code: str = ""
    source: str = "prometheus"  # or "alertmanager"
    labels: dict[str, str] = field(default_factory=dict)
    action: str = "rollback"  # the rule's or trigger's: rollback | notify
    note: str = ""
    began: datetime | None = None  # when the breach began (the pending start), if breaching


class Event(StrEnum):
    """The moments of an incident that people hear about."""

    BREACH = "breach"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_SUCCEEDED = "rollback_succeeded"
    ROLLBACK_FAILED = "rollback_failed"
    SKIPPED = "skipped"
    RECOVERED = "recovered"
    ESCALATED = "escalated"
    OUTAGE = "outage"  # many workloads breaching together: one message names them all
    OWNER_PAUSED = "owner_paused"  # the rollback paused the owner's re-apply
    OWNER_RESUMED = "owner_resumed"  # the pause was lifted (by a person or by itself)
    APPROVAL_REQUESTED = "approval_requested"  # action: approve asks a person first
    APPROVED = "approved"  # a person (or on_timeout) said roll back
    HELD = "held"  # a person said hold
    DEPLOY_STARTED = "deploy_started"  # a managed workload began rolling out a new template
    DEPLOY_SUCCEEDED = "deploy_succeeded"  # ... and finished, by kubectl rollout status
    DEPLOY_FAILED = "deploy_failed"  # ... and stalled (ProgressDeadlineExceeded)


DEPLOY_EVENTS = frozenset({Event.DEPLOY_STARTED, Event.DEPLOY_SUCCEEDED, Event.DEPLOY_FAILED})
"""The deploy-status messages: sent only where an operator lists them."""


class DecisionReason(StrEnum):
    """Why a firing signal was rolled back, notified or skipped: one code per guard, seen in
    Events, logs, metrics (``decisions_total``), messages and replay reports."""

    NOT_OPTED_IN = "not_opted_in"
    OPTED_OUT = "opted_out"
    NOTIFY_ONLY_RULE = "notify_only_rule"
    PAUSED = "paused"
    STATE_UNREADABLE = "state_unreadable"
    ALREADY_ROLLED_BACK = "already_rolled_back"
    OWNER_REAPPLIED = "owner_reapplied"
    UNKNOWN_BREACH_START = "unknown_breach_start"
    CHANGE_AFTER_BREACH = "change_after_breach"
    NO_RECENT_CHANGE = "no_recent_change"
    OWNER_POLICY = "owner_policy"
    WIDESPREAD_BREACH = "widespread_breach"
    COOLDOWN = "cooldown"
    BUDGET_EXHAUSTED = "budget_exhausted"
    AWAITING_APPROVAL = "awaiting_approval"
    HELD_BY_OPERATOR = "held_by_operator"
    BREACH_AFTER_CHANGE = "breach_after_change"
    MANUAL = "manual"


@dataclass(frozen=True)
class Incident:
    """One moment of an incident, with everything a message shows. One id threads them all."""

    id: str
    event: Event
    target: Target
    rule: str = ""
    value: float | None = None
    op: str = ""
    threshold: float | None = None
    since: datetime | None = None
    reason: str = ""
    reason_code: str = ""
    dry_run: bool = False
    from_revision: int | None = None
    to_revision: int | None = None
    from_images: tuple[str, ...] = ()
    to_images: tuple[str, ...] = ()
    graph_url: str = ""
    note: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    owner: str = ""  # the GitOps controller or Helm release that applies the workload
    next_step: str = ""  # what a person must do so that the owner stops re-applying it
    cluster: str = ""  # kubernetes.cluster_name: which cluster, where several share a group
    expires: datetime | None = None  # when the question of an approval request expires
    approval_url: str = ""  # the page behind its buttons (signed, one-time)
    change_cause: str = ""  # the release's kubernetes.io/change-cause annotation
    release: str = ""  # the deploy-status thread of the revision the incident is about


@dataclass(frozen=True)
class Message:
    """A rendered notification, ready for any robot."""

    incidents: tuple[str, ...]  # every incident it speaks of (a digest names many)
    event: str
    title: str
    text: str
    labels: dict[str, str] = field(default_factory=dict)
    problem: str = ""  # why the built-in plain text was used instead of the template
    entries: tuple[Entry, ...] = ()  # each incident's latest state, what a digest keeps
    buttons: tuple[tuple[str, str], ...] = ()  # (title, url): sent as an actionCard


@dataclass(frozen=True, slots=True)
class Entry:
    """One incident as a digest line: the events it went through and its latest outcome."""

    incident: str
    events: tuple[str, ...]
    line: str  # markdown, already escaped
