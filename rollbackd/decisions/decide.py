"""Guards: whether a firing signal may undo a Deployment's latest change.

Each guard has a reason code that appears in logs, metrics (``decisions_total``),
Kubernetes Events and messages. The guards, in order:

=====================  ===========  ======================================================
reason                 decision     when
=====================  ===========  ======================================================
not_opted_in           skip         the Deployment is not selected or not in a namespace
opted_out              skip         annotation ``rollbackd.io/disabled: "true"``
notify_only_rule       notify       the rule or trigger says ``action: notify``
paused                 notify       ``spec.paused``: a person is in the middle of something
already_rolled_back    notify       the current template is rollbackd's own undo: never
                                    undo the undo, at most one rollback per change (an
                                    operator's manual rollback may go further back)
change_after_breach    notify       the template changed after the breach began: the change
                                    did not cause it (it may be the fix)
no_recent_change       notify       no change within ``change_window`` before the breach
cooldown               notify       ``rollbackd.io/cooldown-until`` is in the future
budget_exhausted       notify       the cluster used its automatic rollbacks for the period
breach_after_change    rollback     every guard passed
manual                 rollback     an operator asked (change window not required)
=====================  ===========  ======================================================

Pure: the caller supplies the Deployment's situation and ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rollbackd import selectors
from rollbackd.model import Target
from rollbackd.settings import KubernetesSettings, RollbackSettings
from rollbackd.state.annotations import DISABLED, DeploymentState


class Action(StrEnum):
    ROLLBACK = "rollback"
    NOTIFY = "notify"
    SKIP = "skip"


class Reason(StrEnum):
    NOT_OPTED_IN = "not_opted_in"
    OPTED_OUT = "opted_out"
    NOTIFY_ONLY_RULE = "notify_only_rule"
    PAUSED = "paused"
    ALREADY_ROLLED_BACK = "already_rolled_back"
    CHANGE_AFTER_BREACH = "change_after_breach"
    NO_RECENT_CHANGE = "no_recent_change"
    COOLDOWN = "cooldown"
    BUDGET_EXHAUSTED = "budget_exhausted"
    BREACH_AFTER_CHANGE = "breach_after_change"
    MANUAL = "manual"


@dataclass(frozen=True)
class Situation:
    """What the guards know about one Deployment at decision time."""

    target: Target
    labels: dict[str, str]
    annotations: dict[str, str]
    paused: bool
    current_hash: str  # pod-template-hash of the ReplicaSet holding the current template
    changed_at: datetime | None  # when the current template became current, if known
    state: DeploymentState


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: Reason
    message: str
    target: Target
    dry_run: bool = False

    @property
    def acts(self) -> bool:
        return self.action is Action.ROLLBACK


def is_managed(situation: Situation, kube: KubernetesSettings) -> bool:
    """Opted in: selected by the label selector, in a managed namespace."""
    in_namespace = not kube.namespaces or situation.target.namespace in kube.namespaces
    return in_namespace and selectors.matches(situation.labels, kube.selector)


def decide(
    situation: Situation,
    *,
    breach_since: datetime,
    action: str,
    kube: KubernetesSettings,
    rollback: RollbackSettings,
    budget_used: int,
    now: datetime,
    manual: bool = False,
) -> Decision:
    """Run the guards in order; the first that objects decides."""

    def outcome(kind: Action, reason: Reason, message: str) -> Decision:
        dry_run = rollback.dry_run and kind is Action.ROLLBACK
        return Decision(kind, reason, message, situation.target, dry_run)

    target, state = situation.target, situation.state
    if not is_managed(situation, kube):
        return outcome(Action.SKIP, Reason.NOT_OPTED_IN, f"{target} is not opted in")
    if situation.annotations.get(DISABLED, "").lower() == "true":
        return outcome(Action.SKIP, Reason.OPTED_OUT, f'{target} has {DISABLED}: "true"')
    if action == "notify" and not manual:
        return outcome(Action.NOTIFY, Reason.NOTIFY_ONLY_RULE, "the signal is set to notify only")
    if situation.paused:
        return outcome(Action.NOTIFY, Reason.PAUSED, f"{target} is paused; not rolling back")
    last = state.last_rollback
    own_undo = last is not None and not last.dry_run and last.to_hash == situation.current_hash
    if own_undo and not manual:
        assert last is not None
        return outcome(
            Action.NOTIFY,
            Reason.ALREADY_ROLLED_BACK,
            f"the current template is rollbackd's own rollback ({last.incident}); "
            "it will not undo its undo",
        )
    if not manual:
        window = rollback.change_window
        changed = situation.changed_at
        if changed is not None and changed > breach_since:
            return outcome(
                Action.NOTIFY,
                Reason.CHANGE_AFTER_BREACH,
                f"the template changed at {changed:%H:%M:%S}, after the breach began at "
                f"{breach_since:%H:%M:%S}: the change did not cause it",
            )
        if changed is None or breach_since - changed > window:
            return outcome(
                Action.NOTIFY,
                Reason.NO_RECENT_CHANGE,
                f"no change within {_duration(window)} before the breach began",
            )
    if state.cooling_down(now):
        assert state.cooldown_until is not None
        return outcome(
            Action.NOTIFY,
            Reason.COOLDOWN,
            f"cooling down until {state.cooldown_until:%Y-%m-%d %H:%M:%S} UTC",
        )
    if not manual and budget_used >= rollback.budget.max:
        return outcome(
            Action.NOTIFY,
            Reason.BUDGET_EXHAUSTED,
            f"{budget_used} automatic rollbacks in the last {_duration(rollback.budget.per)} "
            f"(budget {rollback.budget.max})",
        )
    if manual:
        return outcome(Action.ROLLBACK, Reason.MANUAL, "rollback requested by an operator")
    return outcome(
        Action.ROLLBACK,
        Reason.BREACH_AFTER_CHANGE,
        f"the breach began {_duration(breach_since - situation.changed_at)} after the change"
        if situation.changed_at
        else "the breach followed a recent change",
    )


def budget_used(states: list[DeploymentState], *, now: datetime, per: timedelta) -> int:
    """Automatic rollbacks across the cluster within the budget period."""
    return sum(state.rollbacks_since(now - per) for state in states)


def _duration(value: timedelta) -> str:
    seconds = max(0, int(value.total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
