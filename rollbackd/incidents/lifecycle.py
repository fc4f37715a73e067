"""The incident core: one pure state machine, ``step(state, event, now) -> (state, effects)``.

::

    firing verdict -> ASSESSING --Assessed--> decide
        skip    -> closed, nothing said
        notify  -> NOTIFIED (breach + skipped, or one outage message for many)
        rollback, no revision to return to -> NOTIFIED (breach + skipped)
        rollback -> ROLLING_BACK (breach + rolling back; budget reserved)
            --RolledBack--> succeeded: VERIFYING -> recovered | ESCALATED after verify_window
                            skipped (newer change landed): NOTIFIED
                            failed, nothing written, transient: ASSESSING again (bounded)
                            failed: ESCALATED (a person must act)
    VERIFYING --breaching again, the template rolled back from is back--> NOTIFIED
                (owner_reapplied: its owner re-applied it; said once, never undone again)
    NOTIFIED / VERIFYING / ESCALATED --whole picture fine--> recovered, closed

The state holds the whole picture: the latest breaching verdict of every rule for every
target, the open incidents, the budget reserved by rollbacks in flight and the rollbacks
this process wrote. Recovery is judged on all rules at once; the budget is reserved before
a rollback starts and released only by its result; many workloads breaching together is an
outage, not a bad release. A replica that is not the leader keeps no incidents and emits
nothing; a new leader adopts open incidents from the records on the workloads and sends the
messages the previous leader had not delivered.

Pure: no I/O, no clock, no randomness. The runtime feeds events and carries out effects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from rollbackd.incidents.decide import (
    Action,
    Decision,
    NoUndo,
    Reason,
    Situation,
    Undo,
    decide,
    duration,
)
from rollbackd.incidents.owners import Owner, OwnerAction, next_step, policy, reapplied
from rollbackd.model import Event, Incident, RuleState, Target, Transition, Verdict, new_incident_id
from rollbackd.settings import KubernetesSettings, RollbackSettings
from rollbackd.state.annotations import LastRollback, parse_time

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


# --- events --------------------------------------------------------------------------------


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


Input = Signals | Assessed | RolledBack | Leadership | Adopt | Reconfigured | Tick


# --- effects -------------------------------------------------------------------------------


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


# --- the machine ---------------------------------------------------------------------------


def initial(config: Config, *, leading: bool = False) -> State:
    return State(config=config, leading=leading)


def step(state: State, event: Input, now: datetime) -> tuple[State, list[Effect]]:
    """The next state and what to do; ``state`` itself is never changed."""
    machine = _Machine(state, now)
    match event:
        case Signals(verdicts):
            machine.signals(verdicts)
        case Assessed():
            machine.assessed(event)
        case RolledBack():
            machine.rolled_back(event)
        case Leadership(leading):
            machine.leadership(leading)
        case Adopt(records):
            machine.adopt(records)
        case Reconfigured(config):
            machine.reconfigure(config)
        case Tick():
            pass
    machine.deadlines()
    return machine.result()


def budget_used(state: State, recent: Iterable[tuple[Target, str]], now: datetime) -> int:
    """Automatic rollbacks in the period, recorded or written here, plus those in flight."""
    return _budget_used(state.config, state.spent, state.reserved, recent, now)


def breaching_together(state: State, now: datetime) -> frozenset[Target]:
    """Distinct workloads seen breaching within the blast-radius window."""
    return _together(state.config, state.breaching_at, now)


def _budget_used(
    config: Config,
    spent: Mapping[tuple[Target, str], datetime],
    reserved: Mapping[str, datetime],
    recent: Iterable[tuple[Target, str]],
    now: datetime,
) -> int:
    since = now - config.rollback.budget.per
    done = {
        key for key in {*recent, *spent} if (at := parse_time(key[1])) is not None and at >= since
    }
    return len(done) + len(reserved)


def _together(
    config: Config, breaching_at: Mapping[Target, datetime], now: datetime
) -> frozenset[Target]:
    since = now - config.rollback.blast_radius.window
    return frozenset(t for t, at in breaching_at.items() if at >= since)


class _Machine:
    """One step's working copy of the state; ``result`` freezes it again."""

    def __init__(self, state: State, now: datetime) -> None:
        self.config = state.config
        self.leading = state.leading
        self.leading_since = state.leading_since
        # Shallow copies: an inner mapping is replaced, never changed (copy on write), so a
        # step costs what it touches, not the size of the cluster.
        self.picture: dict[Target, Mapping[str, Verdict]] = dict(state.picture)
        self.breaching_at = dict(state.breaching_at)
        self.cases = dict(state.cases)
        self.reserved = dict(state.reserved)
        self.spent = dict(state.spent)
        self.outage = set(state.outage)
        self.closed = list(state.closed)
        self.opened = state.opened
        self.now = now
        self.effects: list[Effect] = []

    def frozen(self) -> State:
        return State(
            config=self.config,
            leading=self.leading,
            leading_since=self.leading_since,
            picture=self.picture,
            breaching_at=self.breaching_at,
            cases=self.cases,
            reserved=self.reserved,
            spent=self.spent,
            outage=frozenset(self.outage),
            closed=tuple(self.closed[-MAX_CLOSED:]),
            opened=self.opened,
        )

    def result(self) -> tuple[State, list[Effect]]:
        return self.frozen(), self.effects

    # --- signals ---------------------------------------------------------------------------

    def signals(self, verdicts: tuple[Verdict, ...]) -> None:
        if not self.leading:
            return
        batch: dict[Target, list[Verdict]] = {}
        for verdict in verdicts:
            batch.setdefault(verdict.target, []).append(verdict)
            rules = dict(self.picture.get(verdict.target, {}))
            if verdict.state in (RuleState.PENDING, RuleState.FIRING):
                rules[verdict.rule] = verdict
                self.breaching_at[verdict.target] = self.now
            else:
                rules.pop(verdict.rule, None)
            if rules:
                self.picture[verdict.target] = rules
            else:
                self.picture.pop(verdict.target, None)
        for target, seen in batch.items():
            case = self.cases.get(target)
            if case is None:
                held = list(self.picture.get(target, {}).values())
                firing = [v for v in held if _firing(v)]
                if firing:
                    self.open(min(firing, key=_began), began=min(map(_began, held)))
            elif case.phase in (
                Phase.VERIFYING,
                Phase.NOTIFIED,
                Phase.ESCALATED,
            ) and self.recovered(target, seen):
                note = next((v.note for v in seen if v.note), "")
                self.say(case, Event.RECOVERED, note=note or case.facts.note)
                self.close(case)
            elif (
                case.phase is Phase.VERIFYING
                and any(_firing(v) for v in seen)
                and (case.retry_at is None or self.now >= case.retry_at)  # at most every RECHECK
            ):
                self.cases[target] = replace(case, retry_at=self.now + RECHECK)
                self.effects.append(Assess(target, case.id))
        self.prune()

    def recovered(self, target: Target, seen: list[Verdict]) -> bool:
        """No rule pending or firing for ``target``, and one of this batch says it is fine."""
        if self.picture.get(target):
            return False
        return any(v.breaching is False or v.transition is Transition.RESOLVED for v in seen)

    def prune(self) -> None:
        window = self.config.rollback.blast_radius.window
        for target, at in list(self.breaching_at.items()):
            if self.now - at > window and target not in self.picture:
                del self.breaching_at[target]
        if len(_together(self.config, self.breaching_at, self.now)) <= (
            self.config.rollback.blast_radius.max_targets
        ):
            self.outage.clear()  # the outage is over; a new one is announced again
        since = self.now - self.config.rollback.budget.per
        for key, at in list(self.spent.items()):
            if at < since:
                del self.spent[key]

    def open(self, verdict: Verdict, *, began: datetime) -> None:
        """A new incident for ``verdict``; its breach began with the earliest signal held."""
        target = verdict.target
        breach_since = None if began == _UNKNOWN else began
        incident = self.new_id(target)
        facts = Incident(
            id=incident,
            event=Event.BREACH,
            target=target,
            rule=verdict.rule,
            value=_finite(verdict.value),
            op=verdict.op,
            threshold=verdict.threshold if verdict.op else None,
            since=breach_since,
            graph_url=self.config.graph_urls.get(verdict.rule, ""),
            labels=dict(verdict.labels),
        )
        self.cases[target] = Case(
            incident, target, Phase.ASSESSING, facts, breach_since, verdict.action
        )
        self.effects.append(Assess(target, incident))

    def new_id(self, target: Target) -> str:
        """An id no open or recently closed incident has: a readable id keeps only 16 bits
        of its own, so many incidents opened in one second could otherwise share one."""
        taken = {case.id for case in self.cases.values()} | set(self.closed)
        while True:
            self.opened += 1
            seed = f"{self.config.installation}/{self.config.epoch}/{target}/{self.opened}"
            incident = new_incident_id(self.now, seed=seed)
            if incident not in taken:
                return incident

    # --- decisions -------------------------------------------------------------------------

    def assessed(self, event: Assessed) -> None:
        case = self.cases.get(event.target)
        if not self.leading or case is None or case.id != event.incident:
            return
        if case.phase is Phase.VERIFYING:
            self.rechecked(case, event)
            return
        if case.phase is not Phase.ASSESSING:
            return
        warm = (self.leading_since or self.now) + self.config.warmup
        if self.now < warm:  # the picture is not whole yet: decide when every rule reported
            self.cases[case.target] = replace(case, retry_at=warm)
            return
        if not event.synced:  # the cache may lag: whatever it shows is no ground to act on
            self.effects.append(Deferred(case.target, case.id, CACHE_NOT_SYNCED))
            self.cases[case.target] = replace(case, retry_at=self.now + UNSYNCED_RETRY)
            return
        if event.situation is None and not event.error_code:
            self.decided(
                case, Decision(Action.SKIP, Reason.NOT_OPTED_IN, "not managed", case.target)
            )
            self.close(case, quiet=True)
            return
        if event.situation is None:  # reading failed: retried, then reported; never acted on
            self.attempt_failed(
                case, event.error_code, f"could not read the workload: {event.error}"
            )
            return
        situation = event.situation
        held = list(self.picture.get(case.target, {}).values())
        if not any(_firing(v) for v in held):  # over before it was decided: nothing to do
            self.close(case, quiet=True)
            return
        # Decided on the whole picture now: a rule whose breach began earlier counts.
        began = min(map(_began, held))
        case = replace(case, breach_since=None if began == _UNKNOWN else began)
        together = _together(self.config, self.breaching_at, self.now)
        decision = decide(
            situation,
            breach_since=case.breach_since,
            action=case.action,
            kube=self.config.kube,
            rollback=self.config.rollback,
            budget_used=_budget_used(
                self.config, self.spent, self.reserved, event.recent, self.now
            ),
            now=self.now,
            breaching_together=len(together | {case.target}),
        )
        self.decided(case, decision)
        if decision.action is Action.SKIP:
            self.close(case, quiet=True)
            return
        facts = _with_undo(
            replace(
                case.facts,
                reason=decision.message,
                reason_code=str(decision.reason),
                dry_run=decision.dry_run,
            ),
            situation.undo,
        )
        facts = _with_owner(facts, situation, decision, self.config.rollback)
        case = replace(case, facts=facts)
        if decision.action is Action.NOTIFY:
            self.notify_only(case, decision, together)
            return
        undo = situation.undo
        if isinstance(undo, NoUndo) or undo is None:
            reason = undo.reason if undo else "not_planned"
            message = undo.message if undo else "no rollback could be planned"
            case = replace(case, facts=replace(facts, reason=message, reason_code=reason))
            self.notify_only(case, None, together)
            return
        first = case.attempts == 0
        self.reserved[case.id] = self.now
        case = replace(case, phase=Phase.ROLLING_BACK, retry_at=None)
        self.cases[case.target] = case
        if first:
            self.say(case, Event.BREACH)
            self.say(case, Event.ROLLBACK_STARTED)
        self.effects.append(
            StartRollback(
                target=case.target,
                incident=case.id,
                rule=facts.rule,
                value=facts.value,
                op=facts.op,
                threshold=facts.threshold,
                dry_run=decision.dry_run,
                expected_hash=situation.current_hash,
                pause=decision.pause,
            )
        )

    def rechecked(self, case: Case, event: Assessed) -> None:
        """Breaching again after the rollback: if the template rolled back from is back,
        its owner re-applied it. Not a new change: one message, no second rollback."""
        situation = event.situation
        if situation is None or not event.synced:
            return
        if situation.current_hash not in situation.state.bad_templates:
            return  # still the rolled-back template: verification goes on
        decision = Decision(
            Action.NOTIFY,
            Reason.OWNER_REAPPLIED,
            reapplied(situation.owner),
            case.target,
        )
        self.decided(case, decision)
        facts = replace(
            case.facts, reason=decision.message, reason_code=str(decision.reason), dry_run=False
        )
        facts = _with_owner(facts, situation, decision, self.config.rollback)
        case = self.not_rolled_back(replace(case, facts=facts))
        self.say(case, Event.SKIPPED)

    def decided(self, case: Case, decision: Decision) -> None:
        self.effects.append(Decided(case.target, case.id, decision))

    def not_rolled_back(self, case: Case) -> Case:
        """NOTIFIED, with the RollbackdSkipped Event saying why (its facts' reason)."""
        case = replace(case, phase=Phase.NOTIFIED)
        self.cases[case.target] = case
        self.effects.append(
            Note(
                case.target,
                case.id,
                EVENT_SKIPPED,
                f"skipped ({case.facts.reason_code}): {case.facts.reason}",
            )
        )
        return case

    def notify_only(
        self, case: Case, decision: Decision | None, together: frozenset[Target]
    ) -> None:
        case = self.not_rolled_back(case)
        if decision is not None and decision.reason is Reason.WIDESPREAD_BREACH:
            self.announce_outage(case, together | {case.target})
            return
        if case.attempts == 0:
            self.say(case, Event.BREACH)
        self.say(case, Event.SKIPPED)

    def announce_outage(self, case: Case, together: frozenset[Target]) -> None:
        """One message naming every workload of the outage not named yet."""
        fresh = sorted(together - self.outage)
        if not fresh:
            return
        self.outage.update(fresh)
        names = ", ".join(
            f"{t} ({c.id})" if (c := self.cases.get(t)) is not None else str(t) for t in fresh
        )
        radius = self.config.rollback.blast_radius
        self.say(
            case,
            Event.OUTAGE,
            note=f"{len(self.outage)} workloads breaching within {duration(radius.window)}",
            reason=f"breaching together, so none is rolled back: {names}",
        )

    # --- results ---------------------------------------------------------------------------

    def rolled_back(self, event: RolledBack) -> None:
        self.reserved.pop(event.incident, None)
        written = event.written and event.outcome != "dry_run"
        if written and event.at:
            self.spent[(event.target, event.at)] = self.now
        case = self.cases.get(event.target)
        if not self.leading or case is None or case.id != event.incident:
            return  # leadership moved on: the new leader adopts it from the record
        facts = _with_undo(
            replace(
                case.facts,
                reason=event.message,
                reason_code=event.code,
                dry_run=event.outcome == "dry_run",
            ),
            event.undo,
        )
        case = replace(case, facts=facts)
        if event.outcome in ("succeeded", "dry_run"):
            case = replace(
                case,
                phase=Phase.VERIFYING,
                verify_until=self.now + self.config.rollback.verify_window,
            )
            self.cases[case.target] = case
            self.say(case, Event.ROLLBACK_SUCCEEDED)
            if event.paused:
                self.say(case, Event.OWNER_PAUSED)
        elif event.outcome == "skipped":
            self.cases[case.target] = replace(case, phase=Phase.NOTIFIED)
            self.say(case, Event.SKIPPED)
        elif not event.written and event.transient:
            self.attempt_failed(case, event.code, event.message)
        else:
            self.cases[case.target] = replace(case, phase=Phase.ESCALATED)
            self.say(case, Event.ROLLBACK_FAILED)

    def attempt_failed(self, case: Case, code: str, message: str) -> None:
        """Nothing was written: try again later while attempts remain, else report."""
        attempts = case.attempts + 1
        if attempts < MAX_ATTEMPTS:
            delay = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
            self.cases[case.target] = replace(
                case,
                phase=Phase.ASSESSING,
                attempts=attempts,
                retry_at=self.now + timedelta(seconds=delay),
            )
            return
        failed = replace(
            case,
            phase=Phase.ESCALATED,
            attempts=attempts,
            facts=replace(
                case.facts,
                reason=f"{message} (after {attempts} attempts; nothing was written)",
                reason_code=code,
            ),
        )
        self.cases[case.target] = failed
        if case.attempts == 0:
            self.say(failed, Event.BREACH)
        self.say(failed, Event.ROLLBACK_FAILED)

    # --- leadership and adoption -----------------------------------------------------------

    def leadership(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        self.leading_since = self.now if leading else None
        if not leading:  # the acting set goes; the records on the workloads stay
            self.cases.clear()
            self.picture.clear()
            self.breaching_at.clear()
            self.outage.clear()

    def adopt(self, records: tuple[Record, ...]) -> None:
        if not self.leading:
            return
        window = self.config.rollback.verify_window
        for record in records:
            last, target = record.rollback, record.target
            at = parse_time(last.at)
            if (
                last.by != self.config.installation
                or last.dry_run
                or at is None
                or self.now - at > window
                or target in self.cases
                or last.incident in self.closed
                or CLOSING & set(record.said)
            ):
                continue
            facts = Incident(
                id=last.incident,
                event=Event.ROLLBACK_SUCCEEDED,
                target=target,
                rule=last.rule,
                value=last.value,
                op=last.op,
                threshold=last.threshold,
                since=at,
                reason=f"rolled back by an operator: {last.note}"
                if last.manual and last.note
                else ("rolled back by an operator" if last.manual else ""),
                reason_code="manual" if last.manual else "",
                from_revision=last.from_revision,
                to_revision=last.to_revision,
                from_images=last.from_images,
                to_images=last.to_images,
                graph_url=self.config.graph_urls.get(last.rule, ""),
            )
            action = policy(record.owner, self.config.rollback.owners)
            facts = _owned_by(facts, record.owner, action)
            # Told already that its owner re-applied the bad template: wait for recovery
            # without verifying (and telling) again.
            reapplied = Event.SKIPPED in record.said
            case = Case(
                last.incident,
                target,
                Phase.NOTIFIED if reapplied else Phase.VERIFYING,
                facts,
                breach_since=None,
                action="rollback",
                verify_until=at + window,
            )
            self.cases[target] = case
            missing = [e for e in ADOPTED_SEQUENCE if e not in record.said]
            if Event.ROLLBACK_SUCCEEDED in missing:
                # The leader that wrote it may have died before its Event: record it now.
                self.effects.append(
                    Note(
                        target,
                        last.incident,
                        EVENT_ROLLBACK,
                        f"rolled back from revision {last.from_revision} "
                        f"to revision {last.to_revision}",
                    )
                )
            for kind in missing:
                self.say(case, kind)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        for target, held in list(self.picture.items()):
            # A rule removed by the reload no longer holds anything open.
            rules = {r: v for r, v in held.items() if r in config.rules or v.source != "prometheus"}
            if rules:
                self.picture[target] = rules
            else:
                del self.picture[target]

    # --- time ------------------------------------------------------------------------------

    def deadlines(self) -> None:
        if not self.leading:
            return
        for case in list(self.cases.values()):
            if (
                case.phase is Phase.ASSESSING
                and case.retry_at is not None
                and self.now >= case.retry_at
            ):
                self.cases[case.target] = replace(case, retry_at=None)
                self.effects.append(Assess(case.target, case.id))
            elif (
                case.phase is Phase.VERIFYING
                and case.verify_until is not None
                and self.now > case.verify_until
            ):
                window = duration(self.config.rollback.verify_window)
                if self.picture.get(case.target):
                    escalated = replace(
                        case,
                        phase=Phase.ESCALATED,
                        facts=replace(
                            case.facts,
                            reason=f"still breaching {window} after the rollback; "
                            "no further automatic action",
                            reason_code="still_breaching",
                        ),
                    )
                    self.cases[case.target] = escalated
                    self.say(escalated, Event.ESCALATED)
                else:  # nothing breaches: recovered, though no rule said so explicitly
                    self.say(
                        case,
                        Event.RECOVERED,
                        note=f"no rule reported a breach in the {window} after the rollback",
                    )
                    self.close(case)

    # --- helpers ---------------------------------------------------------------------------

    def say(
        self, case: Case, kind: Event, *, note: str | None = None, reason: str | None = None
    ) -> None:
        facts = replace(case.facts, event=kind)
        if note is not None:
            facts = replace(facts, note=note)
        if reason is not None:
            facts = replace(facts, reason=reason)
        self.effects.append(Say(facts))

    def close(self, case: Case, *, quiet: bool = False) -> None:
        self.cases.pop(case.target, None)
        self.closed.append(case.id)
        if not quiet:
            self.effects.append(Closed(case.target, case.id, case.phase))


def _firing(verdict: Verdict) -> bool:
    return verdict.state is RuleState.FIRING


_UNKNOWN = datetime.min.replace(tzinfo=UTC)


def _began(verdict: Verdict) -> datetime:
    """When the verdict's breach began; unknown sorts first: assume the earliest."""
    return verdict.began or _UNKNOWN


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value  # NaN is not a value


def _with_owner(
    facts: Incident, situation: Situation, decision: Decision, rollback: RollbackSettings
) -> Incident:
    """The facts with the workload's owner and what a person must do about it."""
    action = policy(situation.owner, rollback.owners) if decision.acts else OwnerAction.NOTIFY
    return _owned_by(facts, situation.owner, action)


def _owned_by(facts: Incident, owner: Owner | None, action: OwnerAction) -> Incident:
    if owner is None:
        return facts
    step = next_step(owner, action, str(facts.target), images=", ".join(facts.from_images))
    return replace(facts, owner=owner.label, next_step=step)


def _with_undo(facts: Incident, undo: Undo | NoUndo | None) -> Incident:
    """The facts with the revisions and images the planned rollback would move between."""
    if not isinstance(undo, Undo):
        return facts
    return replace(
        facts,
        from_revision=undo.from_revision,
        to_revision=undo.to_revision,
        from_images=undo.from_images,
        to_images=undo.to_images,
    )
