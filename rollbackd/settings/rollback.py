"""The ``rollback`` section: the guards and their limits, and the owners' policies."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from rollbackd.settings.values import Duration, Section


class Budget(Section):
    max: int = Field(5, ge=0, description="automatic rollbacks allowed per period, cluster-wide")
    per: Duration = Field(timedelta(hours=1), description="the budget's period")


class BlastRadius(Section):
    max_targets: int = Field(
        3, ge=1, description="more workloads breaching together than this is an outage: notify"
    )
    window: Duration = Field(
        timedelta(minutes=5), description="how close together breaches count as together"
    )


class OwnerPolicies(Section):
    """What a rollback does when a GitOps controller or Helm owns the workload."""

    argocd: Literal["notify", "pause"] = Field(
        "notify",
        description="notify: no rollback (Argo CD would revert it); pause: turn off the "
        "Application's automated sync, then roll back (needs deploy/overlays/argocd)",
    )
    flux: Literal["pause", "notify"] = Field(
        "pause",
        description="pause: the rollback also sets kustomize.toolkit.fluxcd.io/reconcile: "
        "disabled on the workload; notify: no rollback",
    )
    helm: Literal["notify", "rollback"] = Field(
        "notify",
        description="notify: no rollback; rollback: undo the live object and warn that the "
        "next helm upgrade re-applies it",
    )
    default: Literal["notify", "rollback"] = Field(
        "notify",
        description="an owner that is only hinted at or ambiguous (a guess never pauses)",
    )
    max_pause: Duration = Field(
        timedelta(hours=24), description="a pause rollbackd set is lifted after this at the latest"
    )
    check_every: Duration = Field(
        timedelta(seconds=30),
        description="how often the leader reads a paused owner's revision (lifts the pause "
        "when it moved on)",
    )
    argocd_namespace: str = Field(
        "argocd", description="where Argo CD's Applications live (tracking ids name no namespace)"
    )


class ApprovalSettings(Section):
    """How long a question asked on DingTalk (``action: approve``) waits for an answer."""

    timeout: Duration = Field(
        timedelta(minutes=10), description="an approval link expires after this"
    )
    on_timeout: Literal["rollback", "notify"] = Field(
        "notify",
        description="nobody answered: rollback (through every guard again) or notify only",
    )


class RollbackSettings(Section):
    dry_run: bool = Field(False, description="go through every step except the write")
    change_window: Duration = Field(
        timedelta(minutes=30),
        description="act only if the template changed this recently before the breach",
    )
    cooldown: Duration = Field(
        timedelta(minutes=15), description="no second automatic rollback of a Deployment before"
    )
    budget: Budget = Field(default_factory=Budget, description="cluster-wide rollback budget")
    blast_radius: BlastRadius = Field(
        default_factory=BlastRadius,
        description="many workloads breaching together is an outage, not a bad release",
    )
    wait_for_rollout: Duration = Field(
        timedelta(minutes=5), description="how long to wait for the rolled-back Deployment"
    )
    verify_window: Duration = Field(
        timedelta(minutes=10), description="after a rollback: recovered within this, or escalate"
    )
    approval: ApprovalSettings = Field(
        default_factory=ApprovalSettings,
        description="rules and triggers with action: approve ask a person first",
    )
    owners: OwnerPolicies = Field(
        default_factory=OwnerPolicies,
        description="per owner (Argo CD, Flux, Helm): pause it, notify only, or roll back",
    )
    on_progress_deadline: Literal["rollback", "notify", "ignore"] = Field(
        "notify",
        description="a rollout that stalls (ProgressDeadlineExceeded) within change_window: "
        "a breach of the built-in rule progress-deadline, rolled back or notified; "
        "ignore: no signal",
    )
