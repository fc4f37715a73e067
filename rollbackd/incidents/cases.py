"""The incident core's state: its open cases, their phases, and the limits it keeps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from rollbackd.model import Event, Incident, Target, Verdict
from rollbackd.settings import KubernetesSettings, RollbackSettings

MAX_ATTEMPTS = 3
"""Rollback attempts per incident when an attempt fails before anything was written."""
RETRY_DELAYS = (15.0, 60.0)
"""Seconds before a second and a third attempt (after transient API failures)."""
UNSYNCED_RETRY = timedelta(seconds=2)
"""How soon an assessment made on an unsynced Deployment cache is tried again."""
CACHE_NOT_SYNCED = "cache_not_synced"
RECHECK = timedelta(seconds=30)
"""While a rolled-back workload breaches again, how often its template is read again: the
template rolled back from may be back, re-applied by its owner."""
MAX_CLOSED = 1000
"""Recently closed incident ids kept, so a lagging record is never adopted again."""

# The reasons of rollbackd's Kubernetes Events (the executor records them too).
EVENT_ROLLBACK = "RollbackdRollback"
EVENT_FAILED = "RollbackdRollbackFailed"
EVENT_SKIPPED = "RollbackdSkipped"

ADOPTED_SEQUENCE = (Event.ROLLBACK_SUCCEEDED,)
"""What a new leader owes of an adopted incident. "Rolled back" carries every fact of the
breach and of "Rolling back" (rule, value, since, revisions): once the write landed, those
earlier messages are superseded, and resending them after the fact would only be noise."""
CLOSING = frozenset({Event.RECOVERED})


class Phase(StrEnum):
    ASSESSING = "assessing"
    ROLLING_BACK = "rolling_back"
    VERIFYING = "verifying"
    NOTIFIED = "notified"
    ESCALATED = "escalated"
    AWAITING_APPROVAL = "awaiting_approval"
    HELD = "held"


WAITING = frozenset(
    {Phase.VERIFYING, Phase.NOTIFIED, Phase.ESCALATED, Phase.AWAITING_APPROVAL, Phase.HELD}
)
"""Phases that end when the whole picture is fine again: recovered, closed."""


@dataclass(frozen=True)
class Config:
    """What the core needs of the configuration; a reload replaces it."""

    kube: KubernetesSettings
    rollback: RollbackSettings
    installation: str  # who "we" are: the Lease namespace/name
    rules: frozenset[str] = frozenset()
    graph_urls: Mapping[str, str] = field(default_factory=dict)
    epoch: str = ""
    """Unique per process start, so that incident ids never repeat across restarts."""
    warmup: timedelta = timedelta(0)
    """After becoming leader, decide only once every rule reported (its longest interval)."""


@dataclass(frozen=True)
class Case:
    """One open incident."""

    id: str
    target: Target
    phase: Phase
    facts: Incident  # what every message of it shows
    breach_since: datetime | None
    action: str  # the signal's: rollback | notify
    attempts: int = 0
    retry_at: datetime | None = None
    verify_until: datetime | None = None
    asked_until: datetime | None = None  # action approve: the question expires then
    asked_hash: str = ""  # the template the question was about
    approved_by: str = ""  # who said roll back (a person, or the timeout)
    cause: str = ""  # what a signal said of itself (a stalled rollout): leads every reason

    @property
    def asked(self) -> bool:
        """A person was asked: the breach was told with the question."""
        return self.asked_until is not None


@dataclass(frozen=True)
class State:
    config: Config
    leading: bool = False
    leading_since: datetime | None = None
    picture: Mapping[Target, Mapping[str, Verdict]] = field(default_factory=dict)
    breaching_at: Mapping[Target, datetime] = field(default_factory=dict)
    cases: Mapping[Target, Case] = field(default_factory=dict)
    reserved: Mapping[str, datetime] = field(default_factory=dict)  # incident -> since
    spent: Mapping[tuple[Target, str], datetime] = field(default_factory=dict)
    outage: frozenset[Target] = frozenset()  # targets already named in outage messages
    closed: tuple[str, ...] = ()
    opened: int = 0  # incidents opened, so that two in one second get distinct ids
