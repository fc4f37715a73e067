"""The incident core's working copy of one step: the picture of verdicts, opening cases,
saying and closing, and the pure helpers every phase shares."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from rollbackd.incidents.cases import (
    EVENT_SKIPPED,
    MAX_CLOSED,
    RECHECK,
    WAITING,
    Case,
    Config,
    Phase,
    State,
)
from rollbackd.incidents.decide import Decision, NoUndo, Situation, Undo
from rollbackd.incidents.effects import Assess, Closed, Decided, Effect, Note, Say
from rollbackd.incidents.owners import Owner, OwnerAction, next_step, policy
from rollbackd.model import Event, Incident, RuleState, Target, Transition, Verdict, new_incident_id
from rollbackd.settings import RollbackSettings
from rollbackd.state.annotations import parse_time


def budget_of(
    config: Config,
    spent: Mapping[tuple[Target, str], datetime],
    reserved: Mapping[str, datetime],
    recent: Iterable[tuple[Target, str]],
    now: datetime,
) -> int:
    """Automatic rollbacks in the budget's period: recorded, written here, or in flight."""
    since = now - config.rollback.budget.per
    done = {
        key for key in {*recent, *spent} if (at := parse_time(key[1])) is not None and at >= since
    }
    return len(done) + len(reserved)


def together_of(
    config: Config, breaching_at: Mapping[Target, datetime], now: datetime
) -> frozenset[Target]:
    """Workloads seen breaching within the blast-radius window."""
    since = now - config.rollback.blast_radius.window
    return frozenset(t for t, at in breaching_at.items() if at >= since)


class Working:
    """One step's working copy of the state; ``result`` freezes it again. Signals open
    cases here; ``Acting`` decides them and ``lifecycle`` drives the rest."""

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
                firing = [v for v in held if is_firing(v)]
                if firing:
                    self.open(min(firing, key=began_of), began=min(map(began_of, held)))
            elif case.phase in WAITING and self.recovered(target, seen):
                note = next((v.note for v in seen if v.note), "")
                self.say(case, Event.RECOVERED, note=note or case.facts.note)
                self.close(case)
            elif (
                case.phase is Phase.VERIFYING
                and any(is_firing(v) for v in seen)
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
        if len(together_of(self.config, self.breaching_at, self.now)) <= (
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
        breach_since = None if began == UNKNOWN_START else began
        incident = self.new_id(target)
        facts = Incident(
            id=incident,
            event=Event.BREACH,
            target=target,
            rule=verdict.rule,
            value=finite_or_none(verdict.value),
            op=verdict.op,
            threshold=verdict.threshold if verdict.op else None,
            since=breach_since,
            graph_url=self.config.graph_urls.get(verdict.rule, ""),
            labels=dict(verdict.labels),
        )
        self.cases[target] = Case(
            incident,
            target,
            Phase.ASSESSING,
            facts,
            breach_since,
            verdict.action,
            cause=verdict.note,
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

    def close(self, case: Case, *, quiet: bool = False) -> None:
        self.cases.pop(case.target, None)
        self.closed.append(case.id)
        if not quiet:
            self.effects.append(Closed(case.target, case.id, case.phase))


def is_firing(verdict: Verdict) -> bool:
    return verdict.state is RuleState.FIRING


UNKNOWN_START = datetime.min.replace(tzinfo=UTC)


def began_of(verdict: Verdict) -> datetime:
    """When the verdict's breach began; unknown sorts first: assume the earliest."""
    return verdict.began or UNKNOWN_START


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value  # NaN is not a value


def with_owner(
    facts: Incident, situation: Situation, decision: Decision, rollback: RollbackSettings
) -> Incident:
    """The facts with the workload's owner and what a person must do about it."""
    action = policy(situation.owner, rollback.owners) if decision.acts else OwnerAction.NOTIFY
    return owned_by(facts, situation.owner, action)


def owned_by(facts: Incident, owner: Owner | None, action: OwnerAction) -> Incident:
    if owner is None:
        return facts
    step = next_step(owner, action, str(facts.target), images=", ".join(facts.from_images))
    return replace(facts, owner=owner.label, next_step=step)


def with_undo(facts: Incident, undo: Undo | NoUndo | None) -> Incident:
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
