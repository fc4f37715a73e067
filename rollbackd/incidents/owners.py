"""Who else writes a workload (Argo CD, Flux, Helm), and what a rollback does about it.

A GitOps controller or a Helm release re-applies its desired state: a live undo is
reverted (Argo CD's selfHeal within seconds, Flux at its next reconcile, Helm at the next
``helm upgrade``). rollbackd reads the owner from the markers those tools leave on the
workload, and the operator's policy per owner (``rollback.owners``) says what happens:

===========================  ==================================================================
marker                       owner
===========================  ==================================================================
``argocd.argoproj.io/        Argo CD Application (proof); ``<ns>_<app>`` names the namespace,
tracking-id``                otherwise ``owners.argocd_namespace``
manager ``argocd-controller`` Argo CD (proof; the name from the tracking id or the instance label)
labels ``kustomize.toolkit.  Flux Kustomization (proof)
fluxcd.io/name, /namespace``
manager                      Flux Kustomization (proof; the name from the labels)
``kustomize-controller``
labels ``helm.toolkit.       Flux HelmRelease (proof); it wins over Helm's own markers
fluxcd.io/name, /namespace``
annotations ``meta.helm.sh/  Helm release (proof)
release-name, -namespace``
label ``app.kubernetes.io/   Argo CD 2.x, a hint only: many Helm charts set it too
instance``
label ``app.kubernetes.io/   Helm, a hint only: Argo CD renders charts with ``helm template``
managed-by: Helm`` alone
===========================  ==================================================================

A hint, or proofs naming two different tools, is an *uncertain* owner: it follows
``owners.default`` (notify or rollback) and is never paused, because a guess must not act
on someone else's controller. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from rollbackd.settings import OwnerPolicies
from rollbackd.state.annotations import PausedOwner

TRACKING_ID = "argocd.argoproj.io/tracking-id"
INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "app.kubernetes.io/managed-by"
FLUX_NAME = "kustomize.toolkit.fluxcd.io/name"
FLUX_NAMESPACE = "kustomize.toolkit.fluxcd.io/namespace"
FLUX_RECONCILE = "kustomize.toolkit.fluxcd.io/reconcile"
HELMRELEASE_NAME = "helm.toolkit.fluxcd.io/name"
HELMRELEASE_NAMESPACE = "helm.toolkit.fluxcd.io/namespace"
HELM_RELEASE = "meta.helm.sh/release-name"
HELM_NAMESPACE = "meta.helm.sh/release-namespace"
ARGOCD_MANAGER = "argocd-controller"
FLUX_MANAGER = "kustomize-controller"

RECONCILE_LEVER = "reconcile-annotation"
"""Flux: ``kustomize.toolkit.fluxcd.io/reconcile: disabled`` on the workload itself."""
SYNC_LEVER = "automated-sync"
"""Argo CD: the Application's ``spec.syncPolicy.automated`` turned off, restored on resume."""

OWNER_RESOURCES = {
    "Application": ("argoproj.io", "v1alpha1", "applications"),
    "Kustomization": ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
    "HelmRelease": ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
}
"""Where each owner kind lives in the API: (group, version, plural)."""

OWNER_ANNOTATIONS = (TRACKING_ID, HELM_RELEASE, HELM_NAMESPACE, FLUX_RECONCILE)
"""Markers a rollback keeps from the Deployment: an undo never changes who owns it."""


class Tool(StrEnum):
    ARGOCD = "argocd"
    FLUX = "flux"
    HELM = "helm"


class Kind(StrEnum):
    APPLICATION = "Application"
    KUSTOMIZATION = "Kustomization"
    HELMRELEASE = "HelmRelease"
    HELM_RELEASE = "Helm release"


class OwnerAction(StrEnum):
    ROLLBACK = "rollback"  # no owner, or the policy lets the live undo happen
    NOTIFY = "notify"  # no rollback: it would be reverted, or the policy says so
    PAUSE = "pause"  # pause the owner's re-apply, in the same step as the rollback


@dataclass(frozen=True)
class Owner:
    """The tool and object that applies a workload's desired state."""

    tool: Tool
    kind: Kind
    name: str  # "" when a marker proves the tool but names no object
    namespace: str  # where the owner object lives ("" for a Helm release's unknown one)
    certain: bool = True
    evidence: str = ""  # which marker said so, for the message
    revision: str = ""  # the owner's source revision, when it could be read

    @property
    def label(self) -> str:
        """``Argo CD Application argocd/shop`` as a message names it."""
        tool = {Tool.ARGOCD: "Argo CD", Tool.FLUX: "Flux", Tool.HELM: "Helm"}[self.tool]
        kind = "release" if self.kind is Kind.HELM_RELEASE else str(self.kind)
        where = f"{self.namespace}/{self.name}" if self.namespace and self.name else self.name
        text = f"{tool} {kind} {where or '(name unknown)'}"
        if self.revision:
            text += f" at revision {self.revision}"
        return text if self.certain else f"{text}? ({self.evidence})"

    @property
    def pausable(self) -> bool:
        """A lever exists and the object is known: Flux's Kustomization, Argo CD's app."""
        levers = (Kind.KUSTOMIZATION, Kind.APPLICATION)
        return self.certain and bool(self.name) and self.kind in levers


def owner_of(
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    managers: Iterable[str] = (),
    *,
    argocd_namespace: str = "argocd",
) -> Owner | None:
    """The owner the markers on a workload name, or None when none does."""
    managers = set(managers)
    proofs: list[Owner] = []
    tracking = annotations.get(TRACKING_ID, "")
    if tracking or ARGOCD_MANAGER in managers:
        app = tracking.partition(":")[0] or labels.get(INSTANCE, "")
        namespace, _, name = app.rpartition("_")  # apps in any namespace: <ns>_<app>
        evidence = TRACKING_ID if tracking else f"field manager {ARGOCD_MANAGER}"
        proofs.append(
            Owner(
                Tool.ARGOCD, Kind.APPLICATION, name, namespace or argocd_namespace, True, evidence
            )
        )
    if HELMRELEASE_NAME in labels:
        proofs.append(
            Owner(
                Tool.FLUX,
                Kind.HELMRELEASE,
                labels[HELMRELEASE_NAME],
                labels.get(HELMRELEASE_NAMESPACE, ""),
                True,
                HELMRELEASE_NAME,
            )
        )
    elif HELM_RELEASE in annotations:
        proofs.append(
            Owner(
                Tool.HELM,
                Kind.HELM_RELEASE,
                annotations[HELM_RELEASE],
                annotations.get(HELM_NAMESPACE, ""),
                True,
                HELM_RELEASE,
            )
        )
    if FLUX_NAME in labels or FLUX_MANAGER in managers:
        proofs.append(
            Owner(
                Tool.FLUX,
                Kind.KUSTOMIZATION,
                labels.get(FLUX_NAME, ""),
                labels.get(FLUX_NAMESPACE, ""),
                True,
                FLUX_NAME if FLUX_NAME in labels else f"field manager {FLUX_MANAGER}",
            )
        )
    # A HelmRelease's objects carry Helm's markers and may be listed by a Kustomization
    # that applies the HelmRelease itself: the HelmRelease is the one that re-applies.
    if any(p.kind is Kind.HELMRELEASE for p in proofs):
        proofs = [p for p in proofs if p.kind is not Kind.KUSTOMIZATION or p.name]
        proofs = [p for p in proofs if p.kind is Kind.HELMRELEASE or p.tool is not Tool.FLUX]
    tools = {p.tool for p in proofs}
    if len(tools) == 1:
        return proofs[0]
    if len(tools) > 1:
        names = ", ".join(p.evidence for p in proofs)
        return replace(proofs[0], certain=False, evidence=f"conflicting markers: {names}")
    if INSTANCE in labels:
        return Owner(
            Tool.ARGOCD,
            Kind.APPLICATION,
            labels[INSTANCE],
            argocd_namespace,
            False,
            f"only the label {INSTANCE}",
        )
    if labels.get(MANAGED_BY) == "Helm":
        return Owner(Tool.HELM, Kind.HELM_RELEASE, "", "", False, f"only the label {MANAGED_BY}")
    return None


def policy(owner: Owner | None, owners: OwnerPolicies) -> OwnerAction:
    """What the operator's policy says a rollback of a workload with ``owner`` does."""
    if owner is None:
        return OwnerAction.ROLLBACK
    if not owner.certain:
        return OwnerAction(owners.default)
    if owner.kind is Kind.APPLICATION:
        pause = owners.argocd == "pause" and owner.pausable
        return OwnerAction.PAUSE if pause else OwnerAction.NOTIFY
    if owner.kind is Kind.KUSTOMIZATION:
        if owners.flux == "notify":
            return OwnerAction.NOTIFY
        return OwnerAction.PAUSE if owner.pausable else OwnerAction.NOTIFY
    if owner.kind is Kind.HELMRELEASE:
        # helm-controller corrects drift only when drift detection is on (off by default):
        # the undo holds until the chart or values change, so "pause" is a plain rollback.
        return OwnerAction.NOTIFY if owners.flux == "notify" else OwnerAction.ROLLBACK
    return OwnerAction(owners.helm)


def next_step(owner: Owner, action: OwnerAction, workload: str, *, images: str = "") -> str:
    """What a person must do so that the owner stops re-applying the bad template."""
    what = f"the change to {images}" if images else "the bad change"
    if not owner.certain:
        return (
            f"check who deploys {workload} ({owner.evidence}); if nothing re-applies it, "
            f"roll back by hand with `rollbackd rollback {workload}`"
        )
    revision = f"commit {owner.revision}" if owner.revision else what
    if owner.kind is Kind.APPLICATION:
        if action is OwnerAction.PAUSE:
            return (
                f"revert {revision} in the Git source of Application {owner.name}; automated "
                f"sync is off until its revision moves on or `rollbackd resume {workload}`"
            )
        return (
            f"revert {revision} in the Git source of Application {owner.name} "
            f"(or `argocd app rollback {owner.name}` with automated sync off)"
        )
    if owner.kind is Kind.KUSTOMIZATION:
        if action is OwnerAction.PAUSE:
            return (
                f"revert {revision} in the source of Kustomization {owner.name}; its "
                f"reconcile of {workload} is paused until the revision moves on or "
                f"`rollbackd resume {workload}`"
            )
        return f"revert {revision} in the source of Kustomization {owner.name}"
    if owner.kind is Kind.HELMRELEASE:
        return (
            f"fix the chart or values of HelmRelease {owner.name}: its next upgrade "
            "re-applies the bad template"
        )
    if action is OwnerAction.ROLLBACK:
        return (
            f"fix the values of Helm release {owner.name}: the next `helm upgrade` re-applies "
            "the bad template"
        )
    namespace = f" -n {owner.namespace}" if owner.namespace else ""
    return f"`helm rollback {owner.name}{namespace}`, then fix its values before the next upgrade"


def reapplied(owner: Owner | None) -> str:
    """Why a template rollbackd rolled back from, back again, is not undone again."""
    by = owner.label if owner else "its owner (GitOps, Helm or CI)"
    return (
        f"the current template is one rollbackd already rolled back from, applied again by "
        f"{by}; not a new change, so not undone again"
    )


def lift_reason(
    paused: PausedOwner, revision: str | None, *, now: datetime, owners: OwnerPolicies
) -> str:
    """Why a pause rollbackd set ends now ("" while it holds).

    ``revision`` is the owner's source revision read now (None when it cannot be read): a
    new one means a fix is on its way, and the owner must be free to apply it.
    """
    if revision and paused.revision and revision != paused.revision:
        return f"{paused.kind} {paused.name} moved to revision {revision}"
    at = paused.at_time
    if at is not None and now - at >= owners.max_pause:
        hours = owners.max_pause.total_seconds() / 3600
        return f"paused for the longest allowed ({hours:g}h)"
    return ""


def owner_revision(kind: str, obj: Mapping[str, object]) -> str:
    """The source revision an owner object last applied (its status), "" when it says none."""
    status = obj.get("status")
    if not isinstance(status, Mapping):
        return ""
    if kind == Kind.APPLICATION:
        sync = status.get("sync")
        return str(sync.get("revision") or "") if isinstance(sync, Mapping) else ""
    return str(status.get("lastAppliedRevision") or status.get("lastAttemptedRevision") or "")
