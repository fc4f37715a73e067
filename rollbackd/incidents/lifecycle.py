"""The incident core: one pure state machine, ``step(state, event, now) -> (state, effects)``.

::

    firing verdict -> ASSESSING --Assessed--> decide
        skip    -> closed, nothing said
        notify  -> NOTIFIED (breach + skipped, or one outage message for many)
        rollback, no revision to return to -> NOTIFIED (breach + skipped)
        rollback -> ROLLING_BACK (breach + rolling back; budget reserved)
        rollback, action approve -> AWAITING_APPROVAL (breach + approval requested)
            --Answered roll back / timeout with on_timeout rollback--> ASSESSING again,
              fresh, through every guard; the template must still be the one asked about
            --Answered hold--> HELD (held)   --timeout, on_timeout notify--> NOTIFIED
            --RolledBack--> succeeded: VERIFYING -> recovered | ESCALATED after verify_window
                            skipped (newer change landed): NOTIFIED
                            failed, nothing written, transient: ASSESSING again (bounded)
                            failed: ESCALATED (a person must act)
    VERIFYING --breaching again, the template rolled back from is back--> NOTIFIED
                (owner_reapplied: its owner re-applied it; said once, never undone again)
    NOTIFIED / VERIFYING / ESCALATED / AWAITING_APPROVAL / HELD --whole picture fine-->
        recovered, closed

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

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from rollbackd.incidents.acting import Acting
from rollbackd.incidents.cases import (
    ADOPTED_SEQUENCE,
    CACHE_NOT_SYNCED,
    CLOSING,
    EVENT_FAILED,
    EVENT_ROLLBACK,
    EVENT_SKIPPED,
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    Case,
    Config,
    Phase,
    State,
)
from rollbackd.incidents.decide import duration
from rollbackd.incidents.effects import (
    Assess,
    Closed,
    Decided,
    Deferred,
    Effect,
    Note,
    Say,
    StartRollback,
)
from rollbackd.incidents.inputs import (
    Adopt,
    Answered,
    Assessed,
    Input,
    Leadership,
    Reconfigured,
    Record,
    RolledBack,
    Signals,
    Tick,
)
from rollbackd.incidents.machine import budget_of, owned_by, together_of
from rollbackd.incidents.owners import policy
from rollbackd.model import Event, Incident, Target
from rollbackd.state.annotations import parse_time


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
        case Answered():
            machine.answered(event)
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
    return budget_of(state.config, state.spent, state.reserved, recent, now)


def breaching_together(state: State, now: datetime) -> frozenset[Target]:
    """Distinct workloads seen breaching within the blast-radius window."""
    return together_of(state.config, state.breaching_at, now)


class _Machine(Acting):
    """Leadership, adoption, reconfiguration and deadlines, over ``Acting``."""

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
            facts = owned_by(facts, record.owner, action)
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
                case.phase is Phase.AWAITING_APPROVAL
                and case.asked_until is not None
                and self.now >= case.asked_until
            ):
                self.unanswered(case)
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


__all__ = [
    "CACHE_NOT_SYNCED",
    "EVENT_FAILED",
    "EVENT_ROLLBACK",
    "EVENT_SKIPPED",
    "MAX_ATTEMPTS",
    "RETRY_DELAYS",
    "Adopt",
    "Answered",
    "Assess",
    "Assessed",
    "Case",
    "Closed",
    "Config",
    "Decided",
    "Deferred",
    "Effect",
    "Input",
    "Leadership",
    "Note",
    "Phase",
    "Reconfigured",
    "Record",
    "RolledBack",
    "Say",
    "Signals",
    "StartRollback",
    "State",
    "Tick",
    "breaching_together",
    "budget_used",
    "initial",
    "step",
]
