"""What happens to the incident core: the events ``step`` takes."""

from __future__ import annotations

from dataclasses import dataclass

from rollbackd.incidents.cases import Config
from rollbackd.incidents.decide import Situation, Undo
from rollbackd.incidents.owners import Owner
from rollbackd.model import Target, Verdict
from rollbackd.state.annotations import LastRollback


@dataclass(frozen=True)
class Signals:
    """Verdicts from one source: a rule's evaluation, or one webhook payload."""

    verdicts: tuple[Verdict, ...]


@dataclass(frozen=True)
class Assessed:
    """The workload as read for a decision: its situation, or why it could not be read.

    ``situation`` is None when the workload is not managed (not in the cache of opted-in
    workloads). ``recent`` holds every automatic rollback recorded on the cluster's
    workloads, as (target, time) pairs, for the budget. ``synced`` is false when the
    Deployment cache had a gap (a broken watch, a 410, a relist): then nothing read from it
    may be current, and no decision is made on it.
    """

    target: Target
    incident: str
    situation: Situation | None
    recent: frozenset[tuple[Target, str]] = frozenset()
    error_code: str = ""
    error: str = ""
    synced: bool = True


@dataclass(frozen=True)
class RolledBack:
    """The result of a ``StartRollback``."""

    target: Target
    incident: str
    outcome: str  # succeeded | failed | skipped | dry_run
    code: str
    message: str
    written: bool = False
    transient: bool = False
    at: str = ""  # the record's time, as written on the workload
    undo: Undo | None = None  # the revisions it moved between, when it got that far
    paused: bool = False  # the owner's re-apply was paused with it


@dataclass(frozen=True)
class Answered:
    """A person's answer to an approval request: roll back now, or hold."""

    target: Target
    incident: str
    approve: bool
    by: str  # who, as far as rollbackd can tell: "DingTalk link from 10.0.0.7"


@dataclass(frozen=True)
class Leadership:
    leading: bool


@dataclass(frozen=True)
class Record:
    """A rollback record found on a workload, with the messages it says were delivered."""

    target: Target
    rollback: LastRollback
    said: tuple[str, ...] = ()
    owner: Owner | None = None  # who re-applies the workload, read from its markers


@dataclass(frozen=True)
class Adopt:
    records: tuple[Record, ...]


@dataclass(frozen=True)
class Reconfigured:
    config: Config


@dataclass(frozen=True)
class Tick:
    """Time passed: deadlines and retries."""


Input = Signals | Assessed | RolledBack | Answered | Leadership | Adopt | Reconfigured | Tick
