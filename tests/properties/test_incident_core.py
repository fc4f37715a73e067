"""The incident core driven through generated histories, with the eight invariants checked
after every step.

A small simulated cluster stands around the pure core: workloads whose templates change
(deploys, owners re-applying old templates, concurrent deploys during a rollback), breaches
and recoveries on two rules and through Alertmanager, cluster-wide outages, restarts,
leader changes, reloads, and every kind of effect result (success, conflict, timeout, 5xx,
permanent refusal, a rollout that does not finish). The simulation answers the core's
effects the way the runtime shell and the executor would, and keeps the truth the
invariants are judged against.

``make test`` runs at least 2,000 histories; ``make soak`` sets ``ROLLBACKD_SOAK_EXAMPLES``
to 50,000 and reports the count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from rollbackd.incidents import lifecycle as core
from rollbackd.incidents.decide import NoUndo, Situation, Undo
from rollbackd.incidents.owners import Kind, Owner, OwnerAction, Tool, policy
from rollbackd.model import Event, Instant, RuleState, Target, Transition, Verdict
from rollbackd.rollbacks.rollouts import PROGRESS_DEADLINE
from rollbackd.settings import KubernetesSettings, OwnerPolicies, RollbackSettings
from rollbackd.state.annotations import DeploymentState, LastRollback, format_time

EXAMPLES = int(os.environ.get("ROLLBACKD_SOAK_EXAMPLES", "2000"))
TARGETS = tuple(Target("shop", f"app{i}") for i in range(6))
RULES = ("errors", "latency")
ROLLBACK = RollbackSettings.model_validate(
    {
        "change_window": "30m",
        "cooldown": "15m",
        "budget": {"max": 1, "per": "1h"},
        "blast_radius": {"max_targets": 3, "window": "5m"},
        "verify_window": "10m",
    }
)
CONFIG = core.Config(
    kube=KubernetesSettings(),
    rollback=ROLLBACK,
    installation="rollbackd/rollbackd",
    rules=frozenset(RULES),
    warmup=timedelta(seconds=15),
)
START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LABELS = {"rollbackd.io/enabled": "true"}
ORDER = {
    Event.BREACH: 0,
    Event.ROLLBACK_STARTED: 1,
    Event.ROLLBACK_SUCCEEDED: 2,
    Event.ROLLBACK_FAILED: 2,
    Event.SKIPPED: 2,
    Event.ESCALATED: 3,
    Event.OUTAGE: 0,
    Event.RECOVERED: 4,
    Event.OWNER_PAUSED: 2,
    Event.APPROVAL_REQUESTED: 1,
    Event.APPROVED: 1,
    Event.HELD: 2,
}
OWNERS = (
    None,
    None,
    None,
    Owner(Tool.ARGOCD, Kind.APPLICATION, "shop", "argocd"),
    Owner(Tool.FLUX, Kind.KUSTOMIZATION, "shop", "flux-system"),
    Owner(Tool.FLUX, Kind.HELMRELEASE, "web", "flux-system"),
    Owner(Tool.HELM, Kind.HELM_RELEASE, "web", "shop"),
    Owner(Tool.ARGOCD, Kind.APPLICATION, "web", "argocd", certain=False, evidence="a label"),
)
POLICIES = st.builds(
    OwnerPolicies,
    argocd=st.sampled_from(("notify", "pause")),
    flux=st.sampled_from(("pause", "notify")),
    helm=st.sampled_from(("notify", "rollback")),
    default=st.sampled_from(("notify", "rollback")),
)

REASONS: dict[str, int] = {}
HISTORIES = {
    "count": 0,
    "rollbacks": 0,
    "outages": 0,
    "adopted": 0,
    "owned": 0,
    "paused": 0,
    "reapplied": 0,
    "asked": 0,
    "approved": 0,
    "held": 0,
}


@dataclass
class Workload:
    """One Deployment as the simulated cluster holds it."""

    templates: list[str]  # every template it ever ran, oldest first
    current: str
    changed_at: datetime  # the truth: when the current template became current
    fresh: bool = True  # a new ReplicaSet dates the change; a re-adopted one does not
    observed: bool = True  # the running process observed the change
    change: int = 0  # which change is current, for "one rollback per change"
    bad: set[str] = field(default_factory=set)
    last: LastRollback | None = None
    cooldown_until: datetime | None = None
    garbage: bool = False  # an unreadable rollbackd.io/* annotation
    owner: Owner | None = None  # the GitOps controller or Helm release that applies it
    paused: bool = False  # a rollback paused the owner's re-apply
    breaches: dict[str, datetime | None] = field(default_factory=dict)  # rule -> began


class IncidentCore(RuleBasedStateMachine):
    """Histories of a cluster around the pure incident core."""

    @initialize(
        owners=st.lists(st.sampled_from(OWNERS), min_size=len(TARGETS), max_size=len(TARGETS)),
        policies=POLICIES,
        asking=st.sampled_from((None, "latency", "errors")),
        on_timeout=st.sampled_from(("notify", "rollback")),
    )
    def start(
        self,
        owners: list[Owner | None],
        policies: OwnerPolicies,
        asking: str | None,
        on_timeout: str,
    ) -> None:
        self.now = START
        self.mono = 1_000.0
        approval = ROLLBACK.approval.model_copy(update={"on_timeout": on_timeout})
        rollback = ROLLBACK.model_copy(update={"owners": policies, "approval": approval})
        self.config = replace(CONFIG, rollback=rollback)
        self.asking = asking  # the rule whose signals ask a person first (action: approve)
        self.asked: dict[str, tuple[str, datetime]] = {}  # incident -> (template, asked at)
        self.answers: dict[str, bool] = {}  # incident -> what the person answered first
        self.state = core.initial(self.config)
        # Every workload was released a minute ago: a breach now may be that release's fault.
        self.world = {
            t: Workload(
                ["h0", f"h0{i}"], f"h0{i}", START - timedelta(minutes=1), change=1, owner=owner
            )
            for (i, t), owner in zip(enumerate(TARGETS), owners, strict=True)
        }
        self.serial = 0
        self.assessing: list[core.Assess] = []
        self.inflight: list[core.StartRollback] = []
        self.written: list[tuple[Target, datetime]] = []  # automatic rollbacks on the cluster
        self.signalled: dict[Target, datetime] = {}  # breach signals the leader has seen
        self.rolled_back_changes: dict[tuple[Target, int], int] = {}
        self.said: dict[str, list[Event]] = {}
        self.started: dict[str, int] = {}  # incident -> StartRollbacks
        self.ended: set[str] = set()  # incidents whose rollback ended without a write
        self.closed: set[str] = set()
        HISTORIES["count"] += 1
        self.feed(core.Leadership(True))
        self.now += CONFIG.warmup  # the first evaluation cycle has reported
        HISTORIES["owned"] += sum(owner is not None for owner in owners)
        self.mono += CONFIG.warmup.total_seconds()

    # --- the machine under test ------------------------------------------------------

    def feed(self, event: core.Input) -> list[core.Effect]:
        before_cases = dict(self.state.cases)
        before = self.state
        state, effects = core.step(self.state, event, self.now)
        assert before.cases == before_cases, "step changed its input state"
        if not before.leading and not isinstance(event, core.Leadership):
            acting = [e for e in effects if isinstance(e, core.Say | core.StartRollback)]
            assert not acting, f"invariant 8: a non-leader acted: {acting}"
        if not state.leading:
            assert not [e for e in effects if isinstance(e, core.Say | core.StartRollback)]
        self.state = state
        for effect in effects:
            self.carry_out(effect)
        return effects

    def carry_out(self, effect: core.Effect) -> None:
        match effect:
            case core.Assess():
                self.assessing.append(effect)
            case core.StartRollback():
                self.check_rollback_allowed(effect)
                self.check_approved(effect)
                HISTORIES["rollbacks"] += 1
                self.inflight.append(effect)
                self.started[effect.incident] = self.started.get(effect.incident, 0) + 1
            case core.Say(facts):
                HISTORIES["outages"] += facts.event is Event.OUTAGE
                said = self.said.setdefault(facts.id, [])
                assert facts.id not in self.closed or facts.event is Event.OUTAGE, (
                    f"invariant 7: {facts.event} said after {facts.id} closed"
                )
                if facts.event is Event.SKIPPED:
                    assert Event.SKIPPED not in said, (
                        f"one message: {facts.id} said it would not roll back twice ({said})"
                    )
                if said and facts.event is not Event.OUTAGE:
                    assert ORDER[facts.event] >= ORDER[said[-1]] or said[-1] is Event.OUTAGE, (
                        f"invariant 7: {facts.event} after {said}"
                    )
                said.append(facts.event)
                self.heard(facts.id, facts.target, facts.event)
            case core.Decided(_, _, decision):
                REASONS[str(decision.reason)] = REASONS.get(str(decision.reason), 0) + 1
            case core.Closed(_, incident, _):
                self.closed.add(incident)
            case _:
                pass

    # --- the invariants, judged on the simulated truth ----------------------------------

    def check_rollback_allowed(self, start: core.StartRollback) -> None:
        target = start.target
        w = self.world[target]
        assert self.state.leading, "invariant 8: a rollback by a replica that does not lead"
        assert start.expected_hash == w.current, "invariant 4: decided on an old template"
        began = [b for b in w.breaches.values()]
        assert began, "invariant 1: a rollback with no breach"
        assert None not in began, "invariant 1: acted on an unknown breach start"
        breach = min(b for b in began if b is not None)
        assert w.fresh or w.observed, "invariant 1: acted on an unknown change time"
        assert w.changed_at <= breach, "invariant 1: the change came after the breach began"
        assert breach - w.changed_at <= ROLLBACK.change_window, "invariant 1: not recent"
        assert not w.garbage, "invariant 5: acted on unreadable state"
        assert w.current not in w.bad, "invariant 2: re-applied bad template undone again"
        assert not (w.last and w.last.to_hash == w.current), "invariant 2: undid the undo"
        key = (target, w.change)
        assert key not in self.rolled_back_changes, "invariant 2: two rollbacks of one change"
        assert not (w.cooldown_until and self.now < w.cooldown_until), "cooldown ignored"
        since = self.now - ROLLBACK.budget.per
        used = sum(at >= since for _, at in self.written) + len(self.inflight) + 1
        assert used <= ROLLBACK.budget.max, f"invariant 3: budget {used}"
        window = ROLLBACK.blast_radius.window
        together = {t for t, at in self.signalled.items() if self.now - at <= window}
        assert len(together | {target}) <= ROLLBACK.blast_radius.max_targets, (
            f"invariant 3: rolled back during an outage of {len(together)}"
        )
        assert start.incident not in self.ended, "invariant 4: re-decided after a newer change"
        wanted = policy(w.owner, self.config.rollback.owners)
        assert wanted is not OwnerAction.NOTIFY, (
            f"invariant 2: rolled back what {w.owner} re-applies, against its policy"
        )
        if wanted is OwnerAction.PAUSE:
            assert start.pause == w.owner, "invariant 2: an owner to pause was not paused"
            HISTORIES["paused"] += 1
        else:
            assert start.pause is None, f"a pause nobody asked for: {start.pause}"

    def heard(self, incident: str, target: Target, event: Event) -> None:
        """What the approval invariant needs of a message: asked, approved, held."""
        if event is Event.APPROVAL_REQUESTED:
            assert incident not in self.asked, "one question per incident"
            self.asked[incident] = (self.world[target].current, self.now)
            HISTORIES["asked"] += 1
        elif event is Event.APPROVED:
            assert incident in self.asked, "approved what nobody was asked"
            HISTORIES["approved"] += 1
        elif event is Event.HELD:
            assert self.answers.get(incident) is False, "held what nobody held"
            HISTORIES["held"] += 1

    def check_approved(self, start: core.StartRollback) -> None:
        """A signal that says approve rolls back only what a person (or on_timeout)
        approved, never after a hold, and only the template the question was about."""
        case = self.state.cases.get(start.target)
        assert case is not None
        if case.action != "approve":
            return
        assert start.incident in self.asked, "rolled back without asking"
        template, asked_at = self.asked[start.incident]
        answer = self.answers.get(start.incident)
        assert answer is not False, "rolled back after a hold"
        if answer is None:  # nobody answered: only on_timeout rollback, after the timeout
            approval = self.config.rollback.approval
            assert approval.on_timeout == "rollback", "rolled back without an approval"
            assert self.now >= asked_at + approval.timeout, "rolled back before the timeout"
        assert start.expected_hash == template, "rolled back a template nobody was asked about"

    @invariant()
    def budget_holds(self) -> None:
        """Invariant 3 at every instant, rollbacks in flight counted."""
        if not hasattr(self, "written"):
            return
        since = self.now - ROLLBACK.budget.per
        used = sum(at >= since for _, at in self.written) + len(self.inflight)
        assert used <= ROLLBACK.budget.max

    @invariant()
    def one_incident_one_id(self) -> None:
        """Invariant 7: one open incident per workload, each with its own id."""
        if not hasattr(self, "state"):
            return
        ids = [case.id for case in self.state.cases.values()]
        assert len(ids) == len(set(ids))

    # --- signals -----------------------------------------------------------------------

    def instant(self, at: datetime) -> Instant:
        return Instant(self.mono - (self.now - at).total_seconds(), at)

    def verdict(self, target: Target, rule: str, began: datetime | None) -> Verdict:
        verdict = Verdict(
            rule=rule,
            target=target,
            value=0.3,
            op=">",
            threshold=0.05,
            state=RuleState.FIRING,
            since=self.instant(began or self.now),
            transition=Transition.FIRING,
            breaching=True,
            began=began,
            source="alertmanager" if rule.startswith("alertmanager:") else "prometheus",
            action="approve" if rule == self.asking else "rollback",
        )
        if rule == PROGRESS_DEADLINE:  # as the watch reports it, and again to a new leader
            return replace(
                verdict,
                value=None,
                op="",
                threshold=600.0,
                source="kubernetes",
                note="the rollout stalled: no progress for 600s",
            )
        return verdict

    @rule(i=st.integers(0, 5))
    def stalls(self, i: int) -> None:
        """A workload's rollout stalls (ProgressDeadlineExceeded): the built-in rule
        progress-deadline fires now, a signal with no value that explains itself."""
        target = TARGETS[i]
        began = self.world[target].breaches.setdefault(PROGRESS_DEADLINE, self.now)
        self.signal([self.verdict(target, PROGRESS_DEADLINE, began)])

    def signal(self, verdicts: list[Verdict]) -> None:
        if self.state.leading:
            for v in verdicts:
                if v.state in (RuleState.PENDING, RuleState.FIRING):
                    self.signalled[v.target] = self.now
        self.feed(core.Signals(tuple(verdicts)))

    @rule(
        i=st.integers(0, 5),
        rule_name=st.sampled_from(RULES),
        held=st.sampled_from((0, 0, 5, 30, 120, 900)),
    )
    def breach(self, i: int, rule_name: str, held: int) -> None:
        """A rule fires for a workload; its breach began ``held`` seconds ago."""
        target = TARGETS[i]
        w = self.world[target]
        began = w.breaches.get(rule_name) or self.now - timedelta(seconds=held)
        w.breaches[rule_name] = began
        self.signal([self.verdict(target, rule_name, began)])

    @rule(i=st.integers(0, 5), dated=st.sampled_from((True, True, True, False)))
    def alert_fires(self, i: int, dated: bool) -> None:
        """Alertmanager sends a firing alert, with or without a known breach start."""
        target = TARGETS[i]
        w = self.world[target]
        name = "alertmanager:HighErrorRate"
        if name not in w.breaches:
            w.breaches[name] = self.now - timedelta(seconds=120) if dated else None
        self.signal([self.verdict(target, name, w.breaches[name])])

    @rule(n=st.integers(2, 6), held=st.sampled_from((0, 10, 60)))
    def together(self, n: int, held: int) -> None:
        """Several workloads breach in the same tick: a few bad releases, or (more than
        the blast radius) a database down."""
        began = self.now - timedelta(seconds=held)
        verdicts = []
        for target in TARGETS[:n]:
            self.world[target].breaches.setdefault("errors", began)
            verdicts.append(self.verdict(target, "errors", self.world[target].breaches["errors"]))
        self.signal(verdicts)

    @rule(
        i=st.integers(0, 5),
        rule_name=st.sampled_from((*RULES, "alertmanager:HighErrorRate", PROGRESS_DEADLINE)),
    )
    def clears(self, i: int, rule_name: str) -> None:
        """One rule stops breaching for a workload (other rules may still fire)."""
        target = TARGETS[i]
        self.world[target].breaches.pop(rule_name, None)
        self.signal(
            [
                Verdict(
                    rule=rule_name,
                    target=target,
                    value=0.0,
                    op=">",
                    threshold=0.05,
                    state=RuleState.INACTIVE,
                    since=self.instant(self.now),
                    transition=Transition.RESOLVED,
                    breaching=False,
                )
            ]
        )

    @precondition(
        lambda self: any(c.phase is core.Phase.AWAITING_APPROVAL for c in self.state.cases.values())
    )
    @rule(data=st.data(), approve=st.booleans())
    def person_answers(self, data: st.DataObject, approve: bool) -> None:
        """Someone opens the DingTalk link and answers "roll back now" or "hold"."""
        waiting = [c for c in self.state.cases.values() if c.phase is core.Phase.AWAITING_APPROVAL]
        case = data.draw(st.sampled_from(waiting))
        self.answers.setdefault(case.id, approve)
        self.feed(core.Answered(case.target, case.id, approve=approve, by="a test"))

    # --- changes -----------------------------------------------------------------------

    def change(self, target: Target, template: str, *, fresh: bool) -> None:
        w = self.world[target]
        w.current, w.changed_at, w.fresh, w.observed = template, self.now, fresh, True
        w.change += 1
        if template not in w.templates:
            w.templates.append(template)

    @rule(i=st.integers(0, 5))
    def deploy(self, i: int) -> None:
        """A new release."""
        self.serial += 1
        self.change(TARGETS[i], f"h{self.serial}", fresh=True)

    @rule(i=st.integers(0, 5), data=st.data())
    def owner_reapplies(self, i: int, data: st.DataObject) -> None:
        """GitOps, Helm or CI puts an older template back (often a bad one)."""
        w = self.world[TARGETS[i]]
        older = [t for t in w.templates if t != w.current]
        if older:
            self.change(TARGETS[i], data.draw(st.sampled_from(older)), fresh=False)

    @rule(data=st.data())
    def owner_reapplies_the_bad_template(self, data: st.DataObject) -> None:
        """Right after an undo, the owner (Argo CD's selfHeal, Flux, Helm) applies the
        template rolled back from again, unless the rollback paused it; the breach is back."""
        undone = [
            t
            for t, w in self.world.items()
            if w.owner is not None
            and w.last is not None
            and not w.paused
            and w.current != w.last.from_hash
        ]
        if not undone:
            return
        target = data.draw(st.sampled_from(undone))
        w = self.world[target]
        assert w.last is not None
        self.change(target, w.last.from_hash, fresh=False)
        HISTORIES["reapplied"] += 1
        self.breach(TARGETS.index(target), "errors", 0)

    @rule(i=st.integers(0, 5))
    def garbage_state(self, i: int) -> None:
        """Someone writes garbage into a rollbackd.io/* annotation, or repairs it."""
        w = self.world[TARGETS[i]]
        w.garbage = not w.garbage

    @rule(minutes=st.sampled_from((0.25, 1, 5, 12, 40)))
    def time_passes(self, minutes: float) -> None:
        """The clock moves on; timers fire."""
        self.now += timedelta(minutes=minutes)
        self.mono += minutes * 60
        self.feed(core.Tick())

    # --- the process: restarts, leadership, reloads ------------------------------------

    def records(self) -> tuple[core.Record, ...]:
        return tuple(
            core.Record(t, w.last, tuple(self.said.get(w.last.incident, ())))
            for t, w in self.world.items()
            if w.last is not None
        )

    def first_cycle(self) -> None:
        """The first evaluation after start or failover reports every held breach."""
        verdicts = [
            self.verdict(t, rule_name, began)
            for t, w in self.world.items()
            for rule_name, began in w.breaches.items()
        ]
        if verdicts:
            self.signal(verdicts)

    @rule()
    def restart(self) -> None:
        """The process restarts: memory is gone, the records on the workloads stay."""
        self.serial += 1
        self.state = core.initial(replace(self.config, epoch=f"start-{self.serial}"))
        self.assessing.clear()
        self.written_inflight_lost()
        self.signalled.clear()
        for w in self.world.values():
            w.observed = False  # only a fresh ReplicaSet still dates its change
        self.feed(core.Leadership(True))
        self.feed(core.Adopt(self.records()))
        self.first_cycle()

    def written_inflight_lost(self) -> None:
        # A rollback in flight when the process died either landed or did not; here, not.
        self.inflight.clear()

    @rule()
    def leadership_lost_and_regained(self) -> None:
        """Another replica led for a while; this one leads again and adopts."""
        self.feed(core.Leadership(False))
        self.assessing.clear()
        self.signalled.clear()
        self.now += timedelta(seconds=20)
        self.mono += 20
        self.feed(core.Leadership(True))
        self.feed(core.Adopt(self.records()))
        self.first_cycle()

    @rule()
    def reload(self) -> None:
        """SIGHUP with the same rules: open incidents and their picture carry over."""
        self.feed(core.Reconfigured(self.config))

    # --- effect results ----------------------------------------------------------------

    def situation(self, target: Target) -> Situation:
        w = self.world[target]
        older = [t for t in w.templates[: w.templates.index(w.current)] if t not in w.bad]
        undo: Undo | NoUndo = (
            Undo(1, 0) if older else NoUndo("no_history", "no older revision to return to")
        )
        state = DeploymentState(
            last_rollback=w.last,
            bad_templates=tuple(sorted(w.bad)),
            cooldown_until=w.cooldown_until,
            problems=("rollbackd.io/last-rollback is not valid JSON",) if w.garbage else (),
        )
        return Situation(
            target=target,
            labels=LABELS,
            annotations={},
            paused=False,
            current_hash=w.current,
            changed_at=w.changed_at if (w.fresh or w.observed) else None,
            state=state,
            undo=undo,
            owner=w.owner,
        )

    def recent(self) -> frozenset[tuple[Target, str]]:
        return frozenset((t, format_time(at)) for t, at in self.written)

    @precondition(lambda self: bool(self.assessing))
    @rule(data=st.data(), how=st.sampled_from(("ok",) * 6 + ("error", "unmanaged", "unsynced")))
    def answer_assessment(self, data: st.DataObject, how: str) -> None:
        """The shell reads the workload (or fails to, or reads it from a cache with a gap)
        and reports back."""
        assess = self.assessing.pop(data.draw(st.integers(0, len(self.assessing) - 1)))
        if how == "unsynced":
            event = core.Assessed(
                assess.target,
                assess.incident,
                self.situation(assess.target),
                self.recent(),
                synced=False,
            )
            effects = self.feed(event)
            decided = [e for e in effects if isinstance(e, core.StartRollback | core.Decided)]
            assert not decided, "invariant 5: decided on a Deployment cache with a gap"
            return
        if how == "error":
            event = core.Assessed(
                assess.target, assess.incident, None, error_code="ERR_KUBE_TIMEOUT", error="x"
            )
        elif how == "unmanaged":
            event = core.Assessed(assess.target, assess.incident, None)
        else:
            event = core.Assessed(
                assess.target, assess.incident, self.situation(assess.target), self.recent()
            )
        effects = self.feed(event)
        if how != "ok":
            started = [e for e in effects if isinstance(e, core.StartRollback)]
            assert not started, "invariant 5: acted on an unread workload"

    @precondition(lambda self: len(self.assessing) > 1)
    @rule()
    def answer_all_assessments(self) -> None:
        """The shell's reads of one tick all come back (their results in some order)."""
        while self.assessing:
            assess = self.assessing.pop(0)
            self.feed(
                core.Assessed(
                    assess.target, assess.incident, self.situation(assess.target), self.recent()
                )
            )

    @precondition(lambda self: bool(self.inflight))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(
            (
                "succeeded",
                "succeeded",
                "conflict",
                "timeout",
                "5xx",
                "forbidden",
                "newer_change",
                "not_available",
            )
        ),
    )
    def rollback_finishes(self, data: st.DataObject, outcome: str) -> None:
        """The executor's answer: the patch landed, or it did not and why."""
        start = self.inflight.pop(data.draw(st.integers(0, len(self.inflight) - 1)))
        w = self.world[start.target]
        if outcome == "newer_change":
            self.deploy(TARGETS.index(start.target))  # a deploy lands just before the patch
        if w.current != start.expected_hash and outcome in ("succeeded", "not_available"):
            outcome = "newer_change"  # the executor's precondition refuses the write
        written = outcome in ("succeeded", "not_available")
        at = ""
        if written:
            older = [t for t in w.templates[: w.templates.index(w.current)] if t not in w.bad]
            to_hash = older[-1]
            at = format_time(self.now)
            w.last = LastRollback(
                incident=start.incident,
                at=at,
                from_revision=2,
                to_revision=1,
                from_hash=w.current,
                to_hash=to_hash,
                rule=start.rule,
                value=start.value,
                threshold=start.threshold,
                by=CONFIG.installation,
            )
            self.rolled_back_changes[(start.target, w.change)] = 1
            w.bad.add(w.current)
            w.cooldown_until = self.now + ROLLBACK.cooldown
            w.paused = w.paused or start.pause is not None
            self.written.append((start.target, self.now))
            self.change(start.target, to_hash, fresh=False)
        else:
            self.ended.add(start.incident) if outcome in ("newer_change", "forbidden") else None
        codes = {
            "succeeded": ("succeeded", "ok", False),
            "not_available": ("failed", "ERR_ROLLBACK_NOT_AVAILABLE", False),
            "conflict": ("failed", "ERR_KUBE_CONFLICT", True),
            "timeout": ("failed", "ERR_KUBE_TIMEOUT", True),
            "5xx": ("failed", "ERR_KUBE_FAILED", True),
            "forbidden": ("failed", "ERR_KUBE_FORBIDDEN", False),
            "newer_change": ("skipped", "newer_change", False),
        }
        kind, code, transient = codes[outcome]
        effects = self.feed(
            core.RolledBack(
                target=start.target,
                incident=start.incident,
                outcome=kind,
                code=code,
                message=code,
                written=written,
                transient=transient,
                at=at,
            )
        )
        case = self.state.cases.get(start.target)
        if self.state.leading and case is not None and case.id == start.incident:
            said = [e.facts.event for e in effects if isinstance(e, core.Say)]
            retrying = case.phase is core.Phase.ASSESSING
            assert said or retrying, "invariant 7: a rollback result was never told"


IncidentCore.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=not os.environ.get("ROLLBACKD_SOAK_EXAMPLES"),
)
TestIncidentCore = IncidentCore.TestCase


def teardown_module() -> None:
    print(
        f"\nincident core: {HISTORIES['count']} generated histories checked, "
        f"{HISTORIES['rollbacks']} rollbacks started, {HISTORIES['outages']} outages announced, "
        f"{HISTORIES['owned']} owned workloads, {HISTORIES['paused']} owner pauses, "
        f"{HISTORIES['reapplied']} bad templates re-applied by their owner, "
        f"{HISTORIES['asked']} approvals asked, {HISTORIES['approved']} approved, "
        f"{HISTORIES['held']} held"
    )
    print("decisions:", dict(sorted(REASONS.items(), key=lambda kv: -kv[1])))
