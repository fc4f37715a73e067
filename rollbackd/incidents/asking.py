"""The incident core asking first: ``action: approve`` puts a person between the guards
and the rollback. The question is bound to one incident and one template, expires with
``rollback.approval.timeout``, and an answer of "roll back now" goes through every guard
again, fresh."""

from __future__ import annotations

from dataclasses import replace

from rollbackd.incidents.cases import Case, Phase
from rollbackd.incidents.decide import Choice, Decision, Situation, duration
from rollbackd.incidents.effects import Assess
from rollbackd.incidents.inputs import Answered
from rollbackd.incidents.machine import Working, with_owner, with_undo
from rollbackd.model import DecisionReason, Event


class Asking(Working):
    """Questions to a person, their answers and their timeouts."""

    def ask(self, case: Case, situation: Situation, decision: Decision) -> None:
        """Every guard allows the rollback and the signal says approve: ask a person, with
        a question bound to this template that expires with ``approval.timeout``."""
        approval = self.config.rollback.approval
        until = self.now + approval.timeout
        asking = Decision(
            Choice.ASK,
            DecisionReason.AWAITING_APPROVAL,
            f"{decision.message}; every guard allows a rollback, asking first (answer by "
            f"{until:%H:%M:%S} UTC, then {approval.on_timeout})",
            case.target,
            decision.dry_run,
            decision.pause,
        )
        self.decided(case, asking)
        facts = replace(
            case.facts,
            reason=asking.message,
            reason_code=str(asking.reason),
            dry_run=decision.dry_run,
            expires=until,
        )
        facts = with_owner(
            with_undo(facts, situation.undo), situation, decision, self.config.rollback
        )
        case = replace(
            case,
            phase=Phase.AWAITING_APPROVAL,
            facts=facts,
            retry_at=None,
            asked_until=until,
            asked_hash=situation.current_hash,
        )
        self.cases[case.target] = case
        self.say(case, Event.BREACH)
        self.say(case, Event.APPROVAL_REQUESTED)

    def answered(self, event: Answered) -> None:
        """A person answered: roll back now goes through every guard again; hold notifies."""
        case = self.cases.get(event.target)
        if (
            not self.leading
            or case is None
            or case.id != event.incident
            or case.phase is not Phase.AWAITING_APPROVAL
        ):
            return
        if event.approve:
            self.approve(case, event.by, note=f"rollback approved by {event.by}")
            return
        case = self.declined(
            case, DecisionReason.HELD_BY_OPERATOR, f"held by {event.by}: not rolling back"
        )
        self.cases[case.target] = replace(case, phase=Phase.HELD)
        self.say(case, Event.HELD)

    def approve(self, case: Case, by: str, *, note: str) -> None:
        """Approved: assessed again, fresh, so every guard decides once more."""
        case = replace(case, phase=Phase.ASSESSING, approved_by=by, retry_at=None)
        self.cases[case.target] = case
        self.say(case, Event.APPROVED, note=note)
        self.effects.append(Assess(case.target, case.id))

    def unanswered(self, case: Case) -> None:
        """Nobody answered before the question expired: ``on_timeout`` decides."""
        approval = self.config.rollback.approval
        waited = duration(approval.timeout)
        if approval.on_timeout == "rollback":
            self.approve(
                case,
                "timeout",
                note=f"nobody answered within {waited}; on_timeout is rollback",
            )
            return
        case = self.declined(
            case,
            DecisionReason.AWAITING_APPROVAL,
            f"nobody answered within {waited}; on_timeout is notify: not rolling back",
        )
        self.say(case, Event.SKIPPED)

    def declined(self, case: Case, reason: DecisionReason, message: str) -> Case:
        """Not rolled back after asking (held, or unanswered): decided, recorded, NOTIFIED."""
        decision = Decision(Choice.NOTIFY, reason, message, case.target)
        self.decided(case, decision)
        facts = replace(case.facts, reason=message, reason_code=str(reason))
        return self.not_rolled_back(replace(case, facts=facts))
