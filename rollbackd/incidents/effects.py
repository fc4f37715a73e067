"""What the incident core asks the runtime to do: the effects ``step`` returns."""

from __future__ import annotations

from dataclasses import dataclass

from rollbackd.incidents.cases import Phase
from rollbackd.incidents.decide import Decision
from rollbackd.incidents.owners import Owner
from rollbackd.model import Incident, Target


@dataclass(frozen=True)
class Assess:
    target: Target
    incident: str


@dataclass(frozen=True)
class StartRollback:
    target: Target
    incident: str
    rule: str
    value: float | None
    op: str
    threshold: float | None
    dry_run: bool
    expected_hash: str
    pause: Owner | None = None  # the owner whose re-apply is paused with the rollback


@dataclass(frozen=True)
class Say:
    facts: Incident


@dataclass(frozen=True)
class Note:
    """A Kubernetes Event on the workload."""

    target: Target
    incident: str
    reason: str
    text: str
    warning: bool = False


@dataclass(frozen=True)
class Decided:
    target: Target
    incident: str
    decision: Decision


@dataclass(frozen=True)
class Deferred:
    """No decision yet, and why (``CACHE_NOT_SYNCED``); the assessment is tried again."""

    target: Target
    incident: str
    reason: str


@dataclass(frozen=True)
class Closed:
    target: Target
    incident: str
    phase: Phase


Effect = Assess | StartRollback | Say | Note | Decided | Deferred | Closed
