"""The incident core deciding: assessing a case through the guards, starting a rollback,
and taking its result."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from rollbackd.incidents.asking import Asking
from rollbackd.incidents.cases import (
    CACHE_NOT_SYNCED,
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    UNSYNCED_RETRY,
    Case,
    Phase,
)
from rollbackd.incidents.decide import Choice, Decision, NoUndo, Situation, decide, duration
from rollbackd.incidents.effects import Deferred, StartRollback
from rollbackd.incidents.inputs import Assessed, RolledBack
from rollbackd.incidents.machine import (
    UNKNOWN_START,
    began_of,
    budget_of,
    is_firing,
    together_of,
    with_owner,
    with_undo,
)
from rollbackd.incidents.owners import reapplied
from rollbackd.model import DecisionReason, Event, Target


class Acting(Asking):
    """Decisions and their results: a case assessed, rolled back, or failed."""

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
                case, Decision(Choice.SKIP, DecisionReason.NOT_OPTED_IN, "not managed", case.target)
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
        if not any(is_firing(v) for v in held):  # over before it was decided: nothing to do
            self.close(case, quiet=True)
            return
        # Decided on the whole picture now: a rule whose breach began earlier counts.
        began = min(map(began_of, held))
        case = replace(case, breach_since=None if began == UNKNOWN_START else began)
        together = together_of(self.config, self.breaching_at, self.now)
        decision = decide(
            situation,
            breach_since=case.breach_since,
            action=case.action,
            kube=self.config.kube,
            rollback=self.config.rollback,
            budget_used=budget_of(self.config, self.spent, self.reserved, event.recent, self.now),
            now=self.now,
            breaching_together=len(together | {case.target}),
        )
        if case.cause:  # the signal explains itself: a stalled rollout says so first
            decision = replace(decision, message=f"{case.cause}; {decision.message}")
        if decision.acts and case.approved_by and situation.current_hash != case.asked_hash:
            decision = Decision(
                Choice.NOTIFY,
                DecisionReason.CHANGE_AFTER_BREACH,
                "the workload changed since the approval was asked; not rolling back what "
                "nobody approved",
                case.target,
            )
        elif decision.acts and case.action == "approve" and not case.approved_by:
            self.ask(case, situation, decision)
            return
        self.act(case, situation, decision, together)

    def act(
        self, case: Case, situation: Situation, decision: Decision, together: frozenset[Target]
    ) -> None:
        """Carry out a decision: close, notify, or start the rollback."""
        self.decided(case, decision)
        if decision.action is Choice.SKIP:
            self.close(case, quiet=True)
            return
        facts = with_undo(
            replace(
                case.facts,
                reason=decision.message,
                reason_code=str(decision.reason),
                dry_run=decision.dry_run,
            ),
            situation.undo,
        )
        facts = with_owner(facts, situation, decision, self.config.rollback)
        case = replace(case, facts=facts)
        if decision.action is Choice.NOTIFY:
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
            if not case.asked:  # an approval request told the breach already
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
            Choice.NOTIFY,
            DecisionReason.OWNER_REAPPLIED,
            reapplied(situation.owner),
            case.target,
        )
        self.decided(case, decision)
        facts = replace(
            case.facts, reason=decision.message, reason_code=str(decision.reason), dry_run=False
        )
        facts = with_owner(facts, situation, decision, self.config.rollback)
        case = self.not_rolled_back(replace(case, facts=facts))
        self.say(case, Event.SKIPPED)

    def notify_only(
        self, case: Case, decision: Decision | None, together: frozenset[Target]
    ) -> None:
        case = self.not_rolled_back(case)
        if decision is not None and decision.reason is DecisionReason.WIDESPREAD_BREACH:
            self.announce_outage(case, together | {case.target})
            return
        if case.attempts == 0 and not case.asked:
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
        facts = with_undo(
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
        if case.attempts == 0 and not case.asked:
            self.say(failed, Event.BREACH)
        self.say(failed, Event.ROLLBACK_FAILED)
