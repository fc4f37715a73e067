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
state_unreadable       notify       a ``rollbackd.io/*`` annotation cannot be read: what
                                    rollbackd remembers is unknown, so it does not act
already_rolled_back    notify       the current template is rollbackd's own undo: never
                                    undo the undo, at most one rollback per change (an
                                    operator's manual rollback may go further back)
owner_reapplied        notify       the current template is one rollbackd rolled back
                                    from, put back by its owner (GitOps, Helm, CI): not a
                                    new change
unknown_breach_start   notify       when the breach began is unknown (an alert without
                                    ``ALERTS_FOR_STATE`` or ``pending_for``)
change_after_breach    notify       the template changed after the breach began: the change
                                    did not cause it (it may be the fix)
no_recent_change       notify       no change within ``change_window`` before the breach,
                                    or the change time is unknown
owner_policy           notify       an owner re-applies the workload and ``rollback.owners``
                                    says notify for it (``owners.py``): a live undo would
                                    be reverted, so the message says what a person must do
widespread_breach      notify       more than ``blast_radius.max_targets`` workloads
                                    breached within ``blast_radius.window``: an outage
cooldown               notify       ``rollbackd.io/cooldown-until`` is in the future
                                    (``rollback --force`` passes it)
budget_exhausted       notify       the cluster used its automatic rollbacks for the period,
                                    counting rollbacks in flight
awaiting_approval      ask          every guard passed and the signal says ``action:
                                    approve``: a person is asked on DingTalk (and, when
                                    nobody answers and ``on_timeout`` is notify, notify)
held_by_operator       notify       the person asked chose "Hold"
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
from rollbackd.incidents.owners import Owner, OwnerAction, policy, reapplied
from rollbackd.model import DecisionReason, Target
from rollbackd.settings import KubernetesSettings, RollbackSettings
from rollbackd.state.annotations import DISABLED, DeploymentState


class Choice(StrEnum):
    """What a decision does with a firing signal."""

    ROLLBACK = "rollback"
    ASK = "ask"  # action approve: every guard allows it, a person is asked first
    NOTIFY = "notify"
    SKIP = "skip"


@dataclass(frozen=True)
class Undo:
    """The rollback the objects allow: from the current revision to an older one."""

    from_revision: int
    to_revision: int
    from_images: tuple[str, ...] = ()
    to_images: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoUndo:
    """Why the objects allow no rollback (no history, only bad templates, ...)."""

    reason: str
    message: str


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
    undo: Undo | NoUndo | None = None  # what a rollback would do now, when planned
    owner: Owner | None = None  # the GitOps controller or Helm release that applies it


@dataclass(frozen=True)
class Decision:
    action: Choice
    reason: DecisionReason
    message: str
    target: Target
    dry_run: bool = False
    pause: Owner | None = None  # the owner whose re-apply the rollback pauses

    @property
    def acts(self) -> bool:
        return self.action is Choice.ROLLBACK


def is_managed(situation: Situation, kube: KubernetesSettings) -> bool:
    """Opted in: selected by the label selector, in a managed namespace."""
    in_namespace = not kube.namespaces or situation.target.namespace in kube.namespaces
    return in_namespace and selectors.matches(situation.labels, kube.selector)


def decide(
    situation: Situation,
    *,
    breach_since: datetime | None,
    action: str,
    kube: KubernetesSettings,
    rollback: RollbackSettings,
    budget_used: int,
    now: datetime,
    manual: bool = False,
    force: bool = False,
    breaching_together: int = 0,
) -> Decision:
    """Run the guards in order; the first that objects decides.

    ``budget_used`` counts automatic rollbacks in the period *and* those in flight;
    ``breaching_together`` counts distinct workloads breaching within the blast-radius
    window, this one included; ``force`` lets an operator's manual rollback pass the
    cooldown (the opt-out and the write's precondition still hold).
    """

    owner, owner_action = situation.owner, policy(situation.owner, rollback.owners)

    def outcome(kind: Choice, reason: DecisionReason, message: str) -> Decision:
        dry_run = rollback.dry_run and kind is Choice.ROLLBACK
        paused = owner if kind is Choice.ROLLBACK and owner_action is OwnerAction.PAUSE else None
        return Decision(kind, reason, message, situation.target, dry_run, paused)

    target, state = situation.target, situation.state
    if not is_managed(situation, kube):
        return outcome(Choice.SKIP, DecisionReason.NOT_OPTED_IN, f"{target} is not opted in")
    if situation.annotations.get(DISABLED, "").lower() == "true":
        return outcome(Choice.SKIP, DecisionReason.OPTED_OUT, f'{target} has {DISABLED}: "true"')
    if action == "notify" and not manual:
        return outcome(
            Choice.NOTIFY, DecisionReason.NOTIFY_ONLY_RULE, "the signal is set to notify only"
        )
    if situation.paused:
        return outcome(
            Choice.NOTIFY, DecisionReason.PAUSED, f"{target} is paused; not rolling back"
        )
    if not manual:
        objection = _memory_guard(situation) or _change_guard(
            situation, breach_since, rollback.change_window
        )
        if objection is not None:
            return outcome(Choice.NOTIFY, *objection)
    if not manual and owner is not None and owner_action is OwnerAction.NOTIFY:
        setting = "default" if not owner.certain else str(owner.tool)
        return outcome(
            Choice.NOTIFY,
            DecisionReason.OWNER_POLICY,
            f"{owner.label} applies {target}; rollback.owners.{setting} is notify: a live "
            "undo would not last, so it is left to a person",
        )
    radius = rollback.blast_radius
    if not manual and breaching_together > radius.max_targets:
        return outcome(
            Choice.NOTIFY,
            DecisionReason.WIDESPREAD_BREACH,
            f"{breaching_together} workloads breached within {duration(radius.window)} "
            f"(more than {radius.max_targets}): an outage, not a bad release",
        )
    if state.cooling_down(now) and not force:
        assert state.cooldown_until is not None
        return outcome(
            Choice.NOTIFY,
            DecisionReason.COOLDOWN,
            f"cooling down until {state.cooldown_until:%Y-%m-%d %H:%M:%S} UTC",
        )
    if not manual and budget_used >= rollback.budget.max:
        return outcome(
            Choice.NOTIFY,
            DecisionReason.BUDGET_EXHAUSTED,
            f"{budget_used} automatic rollbacks in the last {duration(rollback.budget.per)} "
            f"(budget {rollback.budget.max})",
        )
    if manual:
        return outcome(Choice.ROLLBACK, DecisionReason.MANUAL, "rollback requested by an operator")
    assert breach_since is not None
    assert situation.changed_at is not None
    return outcome(
        Choice.ROLLBACK,
        DecisionReason.BREACH_AFTER_CHANGE,
        f"the breach began {duration(breach_since - situation.changed_at)} after the change",
    )


def _memory_guard(situation: Situation) -> tuple[DecisionReason, str] | None:
    """Invariants 2 and 5: what rollbackd remembers must be readable, and its undo final."""
    state = situation.state
    if state.problems:
        return (
            DecisionReason.STATE_UNREADABLE,
            f"rollbackd's state on {situation.target} cannot be read "
            f"({'; '.join(state.problems)}); not acting on what it does not know",
        )
    last = state.last_rollback
    if last is not None and not last.dry_run and last.to_hash == situation.current_hash:
        return (
            DecisionReason.ALREADY_ROLLED_BACK,
            f"the current template is rollbackd's own rollback ({last.incident}); "
            "it will not undo its undo",
        )
    if situation.current_hash in state.bad_templates:
        return DecisionReason.OWNER_REAPPLIED, reapplied(situation.owner)
    return None


def _change_guard(
    situation: Situation, breach_since: datetime | None, window: timedelta
) -> tuple[DecisionReason, str] | None:
    """Invariant 1: only a change within ``window`` before the breach began, never after."""
    if breach_since is None:
        return (
            DecisionReason.UNKNOWN_BREACH_START,
            "when the breach began is unknown (no ALERTS_FOR_STATE and no pending_for); "
            "a change after it cannot be ruled out",
        )
    changed = situation.changed_at
    if changed is not None and changed > breach_since:
        return (
            DecisionReason.CHANGE_AFTER_BREACH,
            f"the template changed at {changed:%H:%M:%S}, after the breach began at "
            f"{breach_since:%H:%M:%S}: the change did not cause it",
        )
    if changed is None or breach_since - changed > window:
        return (
            DecisionReason.NO_RECENT_CHANGE,
            f"no change within {duration(window)} before the breach began",
        )
    return None


def budget_used(states: list[DeploymentState], *, now: datetime, per: timedelta) -> int:
    """Automatic rollbacks across the cluster within the budget period."""
    return sum(state.rollbacks_since(now - per) for state in states)


def duration(value: timedelta) -> str:
    """``1h05m``, ``1m30s``, ``45s``: a span as people read it in messages."""
    seconds = max(0, int(value.total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
