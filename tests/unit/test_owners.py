"""Owners: who re-applies a workload, read from its markers, and what the policy does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rollbackd.incidents.decide import Choice, decide
from rollbackd.incidents.owners import (
    Kind,
    Owner,
    OwnerAction,
    Tool,
    lift_reason,
    next_step,
    owner_of,
    owner_revision,
    policy,
)
from rollbackd.model import DecisionReason
from rollbackd.settings import KubernetesSettings, OwnerPolicies, RollbackSettings
from rollbackd.state.annotations import PausedOwner
from tests.unit.test_incident_cases import situation, target

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TRACKED = {"argocd.argoproj.io/tracking-id": "shop-web:apps/Deployment:shop/web"}
FLUX = {
    "kustomize.toolkit.fluxcd.io/name": "shop",
    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
}
HELM_LABELS = {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "web"}
HELM_ANNOTATIONS = {"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": "shop"}
HELMRELEASE = {
    "helm.toolkit.fluxcd.io/name": "web",
    "helm.toolkit.fluxcd.io/namespace": "flux-system",
    **HELM_LABELS,
}


@pytest.mark.parametrize(
    ("labels", "annotations", "managers", "expected"),
    [
        ({}, TRACKED, (), (Tool.ARGOCD, Kind.APPLICATION, "argocd/shop-web", True)),
        (
            {},
            {"argocd.argoproj.io/tracking-id": "team-a_web:apps/Deployment:shop/web"},
            (),
            (Tool.ARGOCD, Kind.APPLICATION, "team-a/web", True),
        ),
        (
            {"app.kubernetes.io/instance": "web"},
            {},
            ("argocd-controller",),
            (Tool.ARGOCD, Kind.APPLICATION, "argocd/web", True),
        ),
        (FLUX, {}, (), (Tool.FLUX, Kind.KUSTOMIZATION, "flux-system/shop", True)),
        ({}, {}, ("kustomize-controller",), (Tool.FLUX, Kind.KUSTOMIZATION, "", True)),
        (HELMRELEASE, HELM_ANNOTATIONS, (), (Tool.FLUX, Kind.HELMRELEASE, "flux-system/web", True)),
        (HELM_LABELS, HELM_ANNOTATIONS, (), (Tool.HELM, Kind.HELM_RELEASE, "shop/web", True)),
        # Argo CD renders charts with `helm template`: the tracking id is the proof.
        (HELM_LABELS, TRACKED, (), (Tool.ARGOCD, Kind.APPLICATION, "argocd/shop-web", True)),
        (
            {"app.kubernetes.io/instance": "web"},
            {},
            (),
            (Tool.ARGOCD, Kind.APPLICATION, "argocd/web", False),
        ),
        (
            {"app.kubernetes.io/managed-by": "Helm"},
            {},
            (),
            (Tool.HELM, Kind.HELM_RELEASE, "", False),
        ),
        (FLUX, TRACKED, (), (Tool.ARGOCD, Kind.APPLICATION, "argocd/shop-web", False)),
        ({"app": "web"}, {}, ("kubectl-client-side-apply",), None),
    ],
    ids=[
        "argocd-tracking-id",
        "argocd-app-in-any-namespace",
        "argocd-ssa-manager",
        "flux-labels",
        "flux-manager-only",
        "flux-helmrelease",
        "helm-release",
        "argocd-over-helm-template",
        "instance-label-hint",
        "managed-by-helm-hint",
        "conflicting-proofs",
        "none",
    ],
)
def test_the_owner_is_read_from_the_markers(
    labels: dict[str, str],
    annotations: dict[str, str],
    managers: tuple[str, ...],
    expected: tuple[Tool, Kind, str, bool] | None,
) -> None:
    """Each marker of the reference names its owner; a hint or a conflict is uncertain."""
    owner = owner_of(labels, annotations, managers)
    if expected is None:
        assert owner is None
        return
    assert owner is not None
    where = f"{owner.namespace}/{owner.name}" if owner.name else ""
    assert (owner.tool, owner.kind, where, owner.certain) == expected


APP = Owner(Tool.ARGOCD, Kind.APPLICATION, "shop-web", "argocd")
KUSTOMIZATION = Owner(Tool.FLUX, Kind.KUSTOMIZATION, "shop", "flux-system")
HR = Owner(Tool.FLUX, Kind.HELMRELEASE, "web", "flux-system")
RELEASE = Owner(Tool.HELM, Kind.HELM_RELEASE, "web", "shop")
HINT = Owner(Tool.ARGOCD, Kind.APPLICATION, "web", "argocd", certain=False, evidence="a label")


@pytest.mark.parametrize(
    ("owner", "policies", "expected"),
    [
        (None, {}, OwnerAction.ROLLBACK),
        (APP, {}, OwnerAction.NOTIFY),
        (APP, {"argocd": "pause"}, OwnerAction.PAUSE),
        (KUSTOMIZATION, {}, OwnerAction.PAUSE),
        (KUSTOMIZATION, {"flux": "notify"}, OwnerAction.NOTIFY),
        (Owner(Tool.FLUX, Kind.KUSTOMIZATION, "", ""), {}, OwnerAction.NOTIFY),
        (HR, {}, OwnerAction.ROLLBACK),
        (HR, {"flux": "notify"}, OwnerAction.NOTIFY),
        (RELEASE, {}, OwnerAction.NOTIFY),
        (RELEASE, {"helm": "rollback"}, OwnerAction.ROLLBACK),
        (HINT, {"argocd": "pause"}, OwnerAction.NOTIFY),
        (HINT, {"default": "rollback", "argocd": "pause"}, OwnerAction.ROLLBACK),
    ],
)
def test_the_policy_per_owner_defaults_to_safe(
    owner: Owner | None, policies: dict[str, str], expected: OwnerAction
) -> None:
    """Defaults: Argo CD and Helm notify, Flux pauses; a guess never pauses, and a
    Kustomization whose name is unknown cannot be paused, so it is only reported."""
    assert policy(owner, OwnerPolicies.model_validate(policies)) is expected


def test_an_owner_that_notifies_blocks_the_rollback_and_says_what_to_do() -> None:
    """A recent bad change of a workload Argo CD applies: no rollback, reason
    owner_policy naming the Application; under `pause` the rollback carries the pause."""
    t = target()
    breach = NOW
    common = {
        "breach_since": breach,
        "action": "rollback",
        "kube": KubernetesSettings(),
        "budget_used": 0,
        "now": NOW,
    }
    owned = situation(t, owner=APP, changed_at=breach - timedelta(minutes=1))
    notified = decide(owned, rollback=RollbackSettings(), **common)  # type: ignore[arg-type]
    assert (notified.action, notified.reason) == (Choice.NOTIFY, DecisionReason.OWNER_POLICY)
    assert "Argo CD Application argocd/shop-web" in notified.message
    paused = decide(
        owned,
        rollback=RollbackSettings.model_validate({"owners": {"argocd": "pause"}}),
        **common,  # type: ignore[arg-type]
    )
    assert paused.acts
    assert paused.pause == APP
    step = next_step(APP, OwnerAction.NOTIFY, "shop/web", images="web:2.0")
    assert "revert the change to web:2.0" in step
    assert "shop-web" in step


def test_a_pause_lifts_when_the_owner_moves_on_or_after_the_maximum() -> None:
    """The pause holds while the owner's revision is the one it had; a new revision, or
    max_pause, lifts it; an unreadable revision waits for max_pause."""
    paused = PausedOwner(
        "rb-1",
        "2026-12-02T09:00:00Z",
        "flux",
        "Kustomization",
        "shop",
        "flux-system",
        "reconcile-annotation",
        revision="main@sha1:aaa",
    )
    policies = OwnerPolicies()
    assert lift_reason(paused, "main@sha1:aaa", now=NOW + timedelta(hours=1), owners=policies) == ""
    assert lift_reason(paused, None, now=NOW + timedelta(hours=1), owners=policies) == ""
    assert "moved to revision main@sha1:bbb" in lift_reason(
        paused, "main@sha1:bbb", now=NOW, owners=policies
    )
    assert "longest allowed (24h)" in lift_reason(
        paused, None, now=NOW + timedelta(hours=24), owners=policies
    )
    assert owner_revision("Application", {"status": {"sync": {"revision": "4f2a"}}}) == "4f2a"
    assert owner_revision("Kustomization", {"status": {"lastAppliedRevision": "main@sha1:c"}}) == (
        "main@sha1:c"
    )
