"""The reported cases of issue 13, each against the pure incident core (and the pure
stages beside it): every test failed on the code before the core existed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rollbackd.incidents import lifecycle as core
from rollbackd.incidents.decide import NoUndo, Situation, Undo
from rollbackd.incidents.owners import Kind, Owner, Tool
from rollbackd.model import DecisionReason, Event, Instant, RuleState, Target, Transition, Verdict
from rollbackd.settings import AlertmanagerSettings, KubernetesSettings, RollbackSettings
from rollbackd.signals.alertmanager import Deduplicator, Payload, interpret
from rollbackd.state.annotations import DeploymentState, LastRollback, format_time, state_of

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LABELS = {"rollbackd.io/enabled": "true"}


def config(**rollback: object) -> core.Config:
    return core.Config(
        kube=KubernetesSettings(),
        rollback=RollbackSettings.model_validate(rollback),
        installation="rollbackd/rollbackd",
        rules=frozenset({"errors", "latency"}),
    )


def leader(cfg: core.Config | None = None) -> core.State:
    state, _ = core.step(core.initial(cfg or config()), core.Leadership(True), NOW)
    return state


def target(i: int = 0) -> Target:
    return Target("shop", f"app{i}")


def _verdict(t: Target, rule: str, *, breaching: bool, began: datetime | None) -> Verdict:
    return Verdict(
        rule=rule,
        target=t,
        value=0.3 if breaching else 0.0,
        op=">",
        threshold=0.05,
        state=RuleState.FIRING if breaching else RuleState.INACTIVE,
        since=Instant(0.0, began or NOW),
        transition=Transition.FIRING if breaching else Transition.RESOLVED,
        breaching=breaching,
        began=began,
    )


def firing(t: Target, rule: str = "errors", *, began: datetime | None = NOW) -> Verdict:
    return _verdict(t, rule, breaching=True, began=began)


def fine(t: Target, rule: str = "errors") -> Verdict:
    return _verdict(t, rule, breaching=False, began=None)


def situation(t: Target, **changes: object) -> Situation:
    base: dict[str, object] = {
        "target": t,
        "labels": LABELS,
        "annotations": {},
        "paused": False,
        "current_hash": "bad1",
        "changed_at": NOW - timedelta(minutes=2),
        "state": DeploymentState(),
        "undo": Undo(2, 1, ("web:2.0",), ("web:1.0",)),
    }
    base.update(changes)
    return Situation(**base)  # type: ignore[arg-type]


def run(
    state: core.State, events: list[core.Input], now: datetime = NOW
) -> tuple[core.State, list[core.Effect]]:
    effects: list[core.Effect] = []
    for event in events:
        state, more = core.step(state, event, now)
        effects += more
    return state, effects


def assess_all(
    machine: core.State, effects: list[core.Effect], /, **changes: object
) -> tuple[core.State, list[core.Effect]]:
    """Answer every Assess effect, in order, as the shell would."""
    assessed: list[core.Input] = [
        core.Assessed(e.target, e.incident, situation(e.target, **changes))
        for e in effects
        if isinstance(e, core.Assess)
    ]
    return run(machine, assessed)


def of(kind: type, effects: list[core.Effect]) -> list[core.Effect]:
    return [e for e in effects if isinstance(e, kind)]


def said(effects: list[core.Effect]) -> list[Event]:
    return [e.facts.event for e in effects if isinstance(e, core.Say)]


def decided(effects: list[core.Effect]) -> list[DecisionReason]:
    return [e.decision.reason for e in effects if isinstance(e, core.Decided)]


def test_case_1_budget_holds_within_one_tick() -> None:
    """Case 1: eight recently changed workloads firing in one tick with budget 5: exactly
    five are rolled back, the other three are told budget_exhausted."""
    cfg = config(budget={"max": 5}, blast_radius={"max_targets": 10})
    state, effects = run(leader(cfg), [core.Signals(tuple(firing(target(i)) for i in range(8)))])
    state, effects = assess_all(state, effects)
    assert len(of(core.StartRollback, effects)) == 5
    assert decided(effects).count(DecisionReason.BUDGET_EXHAUSTED) == 3
    assert len(state.reserved) == 5


def test_case_1_budget_released_only_by_the_result() -> None:
    """Case 1: a reservation stays until its rollback's result; a written one counts for
    the period even before the watch shows its annotation."""
    cfg = config(budget={"max": 1})
    state, effects = run(leader(cfg), [core.Signals((firing(target(0)),))])
    state, effects = assess_all(state, effects)
    (start,) = of(core.StartRollback, effects)
    done = core.RolledBack(
        start.target,
        start.incident,
        "succeeded",
        "ok",
        "rolled back",
        written=True,
        at=format_time(NOW),
    )
    state, _ = run(state, [done])
    assert not state.reserved
    state, effects = run(state, [core.Signals((firing(target(1)),))])
    state, effects = assess_all(state, effects)
    assert decided(effects) == [DecisionReason.BUDGET_EXHAUSTED]


def test_case_2_outage_rolls_nothing_back_and_names_everyone_once() -> None:
    """Case 2: a database outage hits four recently changed workloads: nothing is rolled
    back, every decision says widespread_breach, and one message names them all."""
    state, effects = run(leader(), [core.Signals(tuple(firing(target(i)) for i in range(4)))])
    state, effects = assess_all(state, effects)
    assert not of(core.StartRollback, effects)
    assert decided(effects) == [DecisionReason.WIDESPREAD_BREACH] * 4
    outage = [e.facts for e in of(core.Say, effects) if e.facts.event is Event.OUTAGE]
    assert len(outage) == 1
    assert all(str(target(i)) in outage[0].reason for i in range(4))
    assert said(effects) == [Event.OUTAGE]
    assert len(of(core.Note, effects)) == 4  # a RollbackdSkipped Event on each


def test_case_3_alertmanager_breach_starts_its_pending_for_earlier() -> None:
    """Case 3: an alert firing since 12:00 with pending_for 5m began breaching at 11:55; a
    fix deployed at 11:58 (during the pending period) is not rolled back."""
    settings = AlertmanagerSettings.model_validate(
        {
            "enabled": True,
            "auth": {"bearer_token": "t"},
            "triggers": [{"match": {"alertname": "HighErrorRate"}, "pending_for": "5m"}],
        }
    )
    payload = Payload.model_validate(
        {
            "version": "4",
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "HighErrorRate",
                        "namespace": "shop",
                        "deployment": "app0",
                    },
                    "startsAt": NOW.isoformat(),
                }
            ],
        }
    )
    (verdict,) = interpret(
        payload, settings=settings, dedup=Deduplicator(), now=Instant(100.0, NOW)
    ).verdicts
    assert verdict.began == NOW - timedelta(minutes=5)
    state, effects = run(leader(), [core.Signals((verdict,))])
    state, effects = assess_all(state, effects, changed_at=NOW - timedelta(minutes=2))
    assert decided(effects) == [DecisionReason.CHANGE_AFTER_BREACH]
    assert not of(core.StartRollback, effects)


def test_case_3_unknown_breach_start_only_notifies() -> None:
    """Case 3: an alert with no ALERTS_FOR_STATE and no pending_for: the start is unknown,
    so it notifies with unknown_breach_start and rolls nothing back."""
    state, effects = run(leader(), [core.Signals((firing(target(0), "am:X", began=None),))])
    state, effects = assess_all(state, effects)
    assert decided(effects) == [DecisionReason.UNKNOWN_BREACH_START]
    assert said(effects) == [Event.BREACH, Event.SKIPPED]


def test_case_4_a_newer_change_ends_the_rollback_without_a_second_decision() -> None:
    """Case 4: the executor saw a newer change land: the incident is told skipped, and no
    second rollback is ever started for it."""
    state, effects = run(leader(), [core.Signals((firing(target(0)),))])
    state, effects = assess_all(state, effects)
    (start,) = of(core.StartRollback, effects)
    state, effects = run(
        state,
        [
            core.RolledBack(start.target, start.incident, "skipped", "newer_change", "newer"),
            core.Signals((firing(target(0)),)),
            core.Tick(),
        ],
        NOW + timedelta(minutes=5),
    )
    assert said(effects) == [Event.SKIPPED]
    assert not of(core.StartRollback, effects)
    assert not of(core.Assess, effects)


def test_case_7_a_transient_failure_is_tried_again_bounded() -> None:
    """Case 7: a timeout before anything was written leaves the incident able to try again
    (the guards judged afresh); after three failed attempts it is reported as failed."""
    state, effects = run(leader(), [core.Signals((firing(target(0)),))])
    state, effects = assess_all(state, effects)
    starts = of(core.StartRollback, effects)
    now = NOW
    for _ in range(core.MAX_ATTEMPTS):
        (start,) = starts
        failed = core.RolledBack(
            start.target,
            start.incident,
            "failed",
            "ERR_KUBE_TIMEOUT",
            "timed out",
            transient=True,
        )
        state, effects = run(state, [failed], now)
        if Event.ROLLBACK_FAILED in said(effects):
            break
        now += timedelta(minutes=2)
        state, effects = run(state, [core.Tick()], now)
        state, effects = assess_all(state, effects)
        starts = of(core.StartRollback, effects)
        assert said(effects) == []  # "Rolling back" is not repeated
    assert said(effects) == [Event.ROLLBACK_FAILED]
    assert not state.reserved


def test_case_10_recovery_is_judged_on_every_rule() -> None:
    """Case 10: one rule recovers while another still fires: no "Recovered", the incident
    keeps its id; only when both are fine is it closed."""
    state, effects = run(
        leader(), [core.Signals((firing(target(0), "errors"), firing(target(0), "latency")))]
    )
    state, effects = assess_all(state, effects, current_hash="x", changed_at=None)
    incident = state.cases[target(0)].id
    state, effects = run(state, [core.Signals((fine(target(0), "errors"),))])
    assert Event.RECOVERED not in said(effects)
    assert state.cases[target(0)].id == incident
    state, effects = run(state, [core.Signals((fine(target(0), "latency"),))])
    assert said(effects) == [Event.RECOVERED]
    assert target(0) not in state.cases


def test_case_11_unreadable_state_fails_closed() -> None:
    """Case 11: garbage in rollbackd.io/last-rollback or cooldown-until means no automatic
    rollback (state_unreadable), not "no state"."""
    garbage = state_of(
        {"rollbackd.io/last-rollback": "{not json", "rollbackd.io/cooldown-until": "x"}
    )
    assert len(garbage.problems) == 2
    state, effects = run(leader(), [core.Signals((firing(target(0)),))])
    state, effects = assess_all(state, effects, state=garbage)
    assert decided(effects) == [DecisionReason.STATE_UNREADABLE]
    assert not of(core.StartRollback, effects)


def test_case_11_an_old_copy_restored_by_a_person_undo_is_not_believed() -> None:
    """Case 11: a person's undo copies an old ReplicaSet's rollbackd.io/* annotations back
    onto the Deployment; the newer copy on the current ReplicaSet still counts."""
    newer = LastRollback(
        "rb-new", "2026-11-27T11:50:00Z", 3, 2, "bad2", "good1", "errors", 0.3, 0.05
    )
    old_on_deployment = {"rollbackd.io/bad-templates": "bad1"}
    current_rs = {
        "rollbackd.io/bad-templates": "bad1,bad2",
        "rollbackd.io/last-rollback": (
            '{"incident":"rb-new","at":"2026-11-27T11:50:00Z","from_revision":3,'
            '"to_revision":2,"from_hash":"bad2","to_hash":"good1","rule":"errors",'
            '"value":0.3,"threshold":0.05}'
        ),
        "rollbackd.io/cooldown-until": "2026-11-27T12:05:00Z",
    }
    merged = state_of(old_on_deployment, [current_rs])
    assert set(merged.bad_templates) == {"bad1", "bad2"}
    assert merged.last_rollback == newer
    assert merged.cooling_down(NOW)


def test_case_12_leadership_loss_drops_the_acting_set() -> None:
    """Case 12: a replica that loses the Lease keeps no incidents and says nothing of the
    rollback result that arrives later; it never escalates when leadership returns."""
    state, effects = run(leader(), [core.Signals((firing(target(0)),))])
    state, effects = assess_all(state, effects)
    (start,) = of(core.StartRollback, effects)
    state, effects = run(
        state,
        [
            core.Leadership(False),
            core.RolledBack(start.target, start.incident, "failed", "ERR_LEADER_LOST", "lost"),
        ],
    )
    assert not state.cases
    assert not state.reserved
    assert said(effects) == []
    state, effects = run(state, [core.Leadership(True), core.Tick()], NOW + timedelta(minutes=30))
    assert said(effects) == []


def record(**changes: object) -> core.Record:
    last = LastRollback(
        incident="rb-20261127-115900-aaaa",
        at=format_time(NOW - timedelta(minutes=1)),
        from_revision=2,
        to_revision=1,
        from_hash="bad1",
        to_hash="good1",
        rule="errors",
        value=0.4,
        threshold=0.05,
        op=">",
        from_images=("web:2.0",),
        to_images=("web:1.0",),
        by="rollbackd/rollbackd",
    )
    said = changes.pop("said", ())
    return core.Record(target(0), replace(last, **changes), said)  # type: ignore[arg-type]


def test_case_14_a_new_leader_sends_the_lost_rolled_back_message_and_event() -> None:
    """Case 14: the leader died right after the patch: the new leader sends "Rolled back"
    once, with the record's facts, and records the RollbackdRollback Event."""
    state, effects = run(leader(), [core.Adopt((record(said=("breach",)),))])
    assert said(effects) == [Event.ROLLBACK_SUCCEEDED]
    (note,) = of(core.Note, effects)
    assert note.reason == core.EVENT_ROLLBACK
    state, effects = run(state, [core.Adopt((record(),))])
    assert said(effects) == []  # already open: not twice


def test_case_15_a_closed_incident_is_not_adopted_again() -> None:
    """Case 15: the record says "Recovered" was delivered: a new leader does not adopt the
    incident and sends no second "Recovered"."""
    state, effects = run(
        leader(), [core.Adopt((record(said=("rollback_succeeded", "recovered")),))]
    )
    assert not state.cases
    assert said(effects) == []


def test_owner_re_apply_during_verification_is_said_once_across_failovers() -> None:
    """The owner re-applies the template rolled back from while the rollback is being
    verified: one "not rolled back" (owner_reapplied) in the incident's thread; a new
    leader adopting the incident from its record does not say it again."""
    state, _ = run(leader(), [core.Adopt((record(said=("rollback_succeeded",)),))])
    state, effects = run(state, [core.Signals((firing(target(0)),))])
    (assess,) = of(core.Assess, effects)
    back = situation(target(0), current_hash="bad1", state=DeploymentState(bad_templates=("bad1",)))
    state, effects = run(state, [core.Assessed(assess.target, assess.incident, back)])
    assert said(effects) == [Event.SKIPPED]
    assert decided(effects) == [DecisionReason.OWNER_REAPPLIED]
    assert not of(core.StartRollback, effects)
    state, effects = run(state, [core.Signals((firing(target(0)),))])
    assert said(effects) == []  # not one per tick
    failover = leader()
    failover, effects = run(
        failover, [core.Adopt((record(said=("rollback_succeeded", "skipped")),))]
    )
    failover, effects = run(failover, [core.Signals((firing(target(0)),))])
    assert said(effects) == []
    assert not of(core.Assess, effects)


def test_an_adopted_incident_still_names_its_owner() -> None:
    """A new leader finishing an incident's messages names the workload's owner and the
    next step, as the leader that rolled it back would have."""
    owner = Owner(Tool.FLUX, Kind.KUSTOMIZATION, "shop", "flux-system")
    adopted = replace(record(said=("breach",)), owner=owner)
    _, effects = run(leader(), [core.Adopt((adopted,))])
    (message,) = of(core.Say, effects)
    assert message.facts.owner == "Flux Kustomization flux-system/shop"
    assert "source of Kustomization shop" in message.facts.next_step


def test_case_16_another_installation_s_rollback_is_not_adopted() -> None:
    """Case 16: a rollback recorded by another installation (another Lease) is left alone:
    never adopted, never escalated."""
    state, effects = run(leader(), [core.Adopt((record(by="other-ns/other-lease"),))])
    assert not state.cases
    state, effects = run(state, [core.Tick()], NOW + timedelta(hours=1))
    assert said(effects) == []


def test_case_17_adopted_incidents_keep_their_facts() -> None:
    """Case 17: an adopted incident's messages show the operator and images, and its
    escalation names a 90 s verify window as 1m30s."""
    cfg = config(verify_window="90s")
    state, effects = run(leader(cfg), [core.Adopt((record(said=("rollback_succeeded",)),))])
    state, effects = run(state, [core.Signals((firing(target(0)),))], NOW)
    state, effects = run(state, [core.Tick()], NOW + timedelta(minutes=5))
    (escalated,) = [e.facts for e in of(core.Say, effects)]
    assert escalated.event is Event.ESCALATED
    assert escalated.op == ">"
    assert escalated.from_images == ("web:2.0",)
    assert escalated.to_images == ("web:1.0",)
    assert "1m30s" in escalated.reason


def test_case_18_a_manual_rollback_reason_reaches_the_messages() -> None:
    """Case 18: `rollback --reason` is recorded; the leader announces the manual rollback
    with that reason."""
    _, effects = run(
        leader(), [core.Adopt((record(manual=True, note="bad config push", rule="manual"),))]
    )
    (message,) = [e.facts for e in of(core.Say, effects)]
    assert message.event is Event.ROLLBACK_SUCCEEDED
    assert "bad config push" in message.reason


def test_case_19_rolling_back_is_said_only_once_the_plan_is_known() -> None:
    """Case 19: with no revision to return to (revisionHistoryLimit: 0) the messages read
    Breach -> Not rolled back, never "Rolling back"."""
    state, effects = run(leader(), [core.Signals((firing(target(0)),))])
    state, effects = assess_all(
        state, effects, undo=NoUndo("no_history", "no rollout history found")
    )
    assert said(effects) == [Event.BREACH, Event.SKIPPED]
    assert not of(core.StartRollback, effects)


def test_one_actor_a_follower_emits_nothing() -> None:
    """Invariant 8: a replica that does not lead neither acts nor speaks."""
    state, effects = run(core.initial(config()), [core.Signals((firing(target(0)),))])
    assert effects == []
    assert not state.cases


def test_step_leaves_its_input_state_alone() -> None:
    """The core is pure: stepping never changes the state passed in."""
    state = leader()
    before = (dict(state.cases), dict(state.picture), dict(state.reserved))
    core.step(state, core.Signals((firing(target(0)),)), NOW)
    assert (dict(state.cases), dict(state.picture), dict(state.reserved)) == before


def test_a_reload_that_removes_a_rule_lets_its_incident_recover() -> None:
    """A SIGHUP that removes a rule: what that rule held firing no longer keeps the
    incident open, so the remaining rules' recovery closes it."""
    state, effects = run(
        leader(), [core.Signals((firing(target(0), "errors"), firing(target(0), "latency")))]
    )
    state, effects = assess_all(state, effects, changed_at=None)
    assert target(0) in state.cases
    fewer = replace(config(), rules=frozenset({"errors"}))
    state, effects = run(state, [core.Reconfigured(fewer), core.Signals((fine(target(0)),))])
    assert said(effects) == [Event.RECOVERED]


def test_many_incidents_in_one_second_never_share_an_id() -> None:
    """An outage opening hundreds of incidents in the same second: every one has its own id
    (a readable id has only 16 bits of its own; the soak found a collision)."""
    cfg = config(blast_radius={"max_targets": 1000})
    _, effects = run(leader(cfg), [core.Signals(tuple(firing(target(i)) for i in range(600)))])
    ids = [e.incident for e in of(core.Assess, effects)]
    assert len(ids) == len(set(ids)) == 600
