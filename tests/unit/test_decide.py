"""The guards: each reason code, in order, with a fake `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rollbackd.incidents.decide import Choice, Situation, budget_used, decide
from rollbackd.model import DecisionReason, Target
from rollbackd.settings import KubernetesSettings, RollbackSettings
from rollbackd.state.annotations import (
    DeploymentState,
    LastRollback,
    after_rollback,
    read_state,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BREACH = NOW - timedelta(minutes=2)
KUBE = KubernetesSettings()
ROLLBACK = RollbackSettings()


def situation(**changes: object) -> Situation:
    base: dict[str, object] = {
        "target": Target("shop", "web"),
        "labels": {"app": "web", "rollbackd.io/enabled": "true"},
        "annotations": {},
        "paused": False,
        "current_hash": "abc123",
        "changed_at": BREACH - timedelta(minutes=5),
        "state": DeploymentState(),
    }
    base.update(changes)
    return Situation(**base)  # type: ignore[arg-type]


def verdict(s: Situation, **kwargs: object) -> tuple[Choice, DecisionReason]:
    options: dict[str, object] = {
        "breach_since": BREACH,
        "action": "rollback",
        "kube": KUBE,
        "rollback": ROLLBACK,
        "budget_used": 0,
        "now": NOW,
    }
    options.update(kwargs)
    decision = decide(s, **options)  # type: ignore[arg-type]
    return decision.action, decision.reason


def test_breach_soon_after_a_change_rolls_back() -> None:
    """A breach five minutes after a deploy, every guard passing: rollback."""
    assert verdict(situation()) == (Choice.ROLLBACK, DecisionReason.BREACH_AFTER_CHANGE)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"labels": {"app": "web"}}, (Choice.SKIP, DecisionReason.NOT_OPTED_IN)),
        (
            {"annotations": {"rollbackd.io/disabled": "true"}},
            (Choice.SKIP, DecisionReason.OPTED_OUT),
        ),
        ({"paused": True}, (Choice.NOTIFY, DecisionReason.PAUSED)),
        ({"changed_at": None}, (Choice.NOTIFY, DecisionReason.NO_RECENT_CHANGE)),
        (
            {"changed_at": BREACH - timedelta(hours=2)},
            (Choice.NOTIFY, DecisionReason.NO_RECENT_CHANGE),
        ),
        (
            {"changed_at": BREACH + timedelta(seconds=30)},
            (Choice.NOTIFY, DecisionReason.CHANGE_AFTER_BREACH),
        ),
    ],
)
def test_guards(change: dict[str, object], expected: tuple[Choice, DecisionReason]) -> None:
    """Each guard stops an automatic rollback with its own reason code."""
    assert verdict(situation(**change)) == expected


def test_namespace_list_limits_management() -> None:
    """With namespaces configured, a Deployment elsewhere is not managed."""
    kube = KubernetesSettings(namespaces=["payments"])
    assert verdict(situation(), kube=kube) == (Choice.SKIP, DecisionReason.NOT_OPTED_IN)


def test_notify_only_rules_never_roll_back() -> None:
    """A rule with action notify informs people and touches nothing."""
    assert verdict(situation(), action="notify") == (Choice.NOTIFY, DecisionReason.NOTIFY_ONLY_RULE)


def test_never_undo_the_undo() -> None:
    """When the current template is rollbackd's own rollback, a breach does not undo it."""
    last = LastRollback(
        "rb-1", "2026-11-27T11:50:00Z", 3, 2, "bad111", "abc123", "errors", 0.3, 0.05
    )
    state = DeploymentState(last_rollback=last)
    assert verdict(situation(state=state)) == (Choice.NOTIFY, DecisionReason.ALREADY_ROLLED_BACK)
    # an operator may still go further back by hand
    assert verdict(situation(state=state), manual=True) == (Choice.ROLLBACK, DecisionReason.MANUAL)


def test_cooldown_read_back_from_annotations() -> None:
    """A cooldown written with a rollback holds for a new process that reads it back."""
    last = LastRollback("rb-1", "2026-11-27T11:55:00Z", 1, 0, "old999", "zzz", "errors", 0.3, 0.05)
    written = after_rollback(
        DeploymentState(), last, now=NOW - timedelta(minutes=5), cooldown=timedelta(minutes=15)
    )
    state = read_state(written)  # what a restarted process sees
    assert verdict(situation(state=state)) == (Choice.NOTIFY, DecisionReason.COOLDOWN)
    later = NOW + timedelta(minutes=11)
    assert (
        verdict(
            situation(state=state),
            now=later,
            breach_since=later - timedelta(minutes=1),
        )[1]
        != DecisionReason.COOLDOWN
    )


def test_budget_counts_automatic_rollbacks_across_deployments() -> None:
    """Five rollbacks in the last hour anywhere in the cluster exhaust a budget of five."""
    last = LastRollback("rb", "x", 1, 0, "h", "g", "r", None, None)
    states = [
        read_state(
            after_rollback(
                DeploymentState(), last, now=NOW - timedelta(minutes=m), cooldown=timedelta(0)
            )
        )
        for m in (5, 10, 20, 30, 50, 70)
    ]
    used = budget_used(states, now=NOW, per=timedelta(hours=1))
    assert used == 5
    assert verdict(situation(), budget_used=used) == (
        Choice.NOTIFY,
        DecisionReason.BUDGET_EXHAUSTED,
    )
    manual_only = read_state(
        after_rollback(DeploymentState(), last, now=NOW, cooldown=timedelta(0), automatic=False)
    )
    assert budget_used([manual_only], now=NOW, per=timedelta(hours=1)) == 0


def test_dry_run_is_marked_on_the_decision() -> None:
    """In dry-run mode the decision still says rollback, flagged dry-run."""
    decision = decide(
        situation(),
        breach_since=BREACH,
        action="rollback",
        kube=KUBE,
        rollback=RollbackSettings(dry_run=True),
        budget_used=0,
        now=NOW,
    )
    assert decision.acts
    assert decision.dry_run


def test_unreadable_state_is_reported_not_fatal() -> None:
    """Garbage in rollbackd's annotations is named, and the rest still reads."""
    state = read_state(
        {
            "rollbackd.io/last-rollback": "{not json",
            "rollbackd.io/cooldown-until": "soon",
            "rollbackd.io/bad-templates": "a,b",
        }
    )
    assert state.bad_templates == ("a", "b")
    assert len(state.problems) == 2
