"""Whether a rollout finished, by ``kubectl rollout status``'s rules, for each kind (pure).

Deployments, StatefulSets and DaemonSets each have kubectl's own viewer, rule for rule and
word for word. A workload whose update strategy is not RollingUpdate (``OnDelete``) has no
rollout to wait for: kubectl refuses, and here it is ``waits_for_deletion``: the template
is in place, and the pods change only as someone deletes them, so nobody may claim success.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RolloutStatus:
    done: bool
    failed: bool
    message: str
    waits_for_deletion: bool = False  # OnDelete: pods change only when deleted


ON_DELETE = "rollout status is only available for RollingUpdate strategy type"
"""kubectl's refusal for a StatefulSet or DaemonSet that is not RollingUpdate."""


def workload_status(workload: dict[str, Any], kind: str = "Deployment") -> RolloutStatus:
    """The status of ``workload``, a ``kind`` (objects from a LIST or a watch carry none)."""
    if kind == "StatefulSet":
        return statefulset_status(workload)
    if kind == "DaemonSet":
        return daemonset_status(workload)
    return rollout_status(workload)


def _on_delete(workload: dict[str, Any]) -> RolloutStatus | None:
    strategy = (workload.get("spec", {}).get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy == "RollingUpdate":
        return None
    return RolloutStatus(False, False, ON_DELETE, waits_for_deletion=True)


def statefulset_status(statefulset: dict[str, Any]) -> RolloutStatus:
    """kubectl's StatefulSetStatusViewer, rule for rule."""
    refused = _on_delete(statefulset)
    if refused is not None:
        return refused
    meta, spec = statefulset["metadata"], statefulset.get("spec", {})
    status = statefulset.get("status", {})
    observed = status.get("observedGeneration", 0)
    if observed == 0 or meta.get("generation", 0) > observed:
        return RolloutStatus(False, False, "Waiting for statefulset spec update to be observed...")
    replicas = spec.get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    if ready < replicas:
        return RolloutStatus(False, False, f"Waiting for {replicas - ready} pods to be ready...")
    updated = status.get("updatedReplicas", 0)
    rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate")
    if rolling is not None:
        partition = rolling.get("partition")
        if partition is not None and updated < replicas - partition:
            return RolloutStatus(
                False,
                False,
                "Waiting for partitioned roll out to finish: "
                f"{updated} out of {replicas - partition} new pods have been updated...",
            )
        return RolloutStatus(
            True, False, f"partitioned roll out complete: {updated} new pods have been updated..."
        )
    revision = status.get("updateRevision", "")
    if revision != status.get("currentRevision", ""):
        return RolloutStatus(
            False,
            False,
            f"waiting for statefulset rolling update to complete {updated} pods at revision "
            f"{revision}...",
        )
    return RolloutStatus(
        True,
        False,
        f"statefulset rolling update complete {status.get('currentReplicas', 0)} pods at "
        f"revision {status.get('currentRevision', '')}...",
    )


def daemonset_status(daemonset: dict[str, Any]) -> RolloutStatus:
    """kubectl's DaemonSetStatusViewer, rule for rule."""
    refused = _on_delete(daemonset)
    if refused is not None:
        return refused
    meta, status = daemonset["metadata"], daemonset.get("status", {})
    name = meta["name"]
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return RolloutStatus(False, False, "Waiting for daemon set spec update to be observed...")
    desired = status.get("desiredNumberScheduled", 0)
    updated = status.get("updatedNumberScheduled", 0)
    waiting = f'Waiting for daemon set "{name}" rollout to finish: '
    if updated < desired:
        return RolloutStatus(
            False, False, f"{waiting}{updated} out of {desired} new pods have been updated..."
        )
    available = status.get("numberAvailable", 0)
    if available < desired:
        return RolloutStatus(
            False, False, f"{waiting}{available} of {desired} updated pods are available..."
        )
    return RolloutStatus(True, False, f'daemon set "{name}" successfully rolled out')


def progressing(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Deployment's Progressing condition ({} when it has none)."""
    conditions = (deployment.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Progressing"), {})


def rollout_status(deployment: dict[str, Any]) -> RolloutStatus:
    """kubectl's DeploymentStatusViewer, rule for rule."""
    meta, spec = deployment["metadata"], deployment.get("spec", {})
    status = deployment.get("status", {})
    name = meta["name"]
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return RolloutStatus(False, False, "Waiting for deployment spec update to be observed...")
    if progressing(deployment).get("reason") == "ProgressDeadlineExceeded":
        return RolloutStatus(True, True, f'deployment "{name}" exceeded its progress deadline')
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < replicas:
        return RolloutStatus(
            False, False, f"{waiting}{updated} out of {replicas} new replicas have been updated..."
        )
    if total > updated:
        return RolloutStatus(
            False, False, f"{waiting}{total - updated} old replicas are pending termination..."
        )
    if available < updated:
        return RolloutStatus(
            False, False, f"{waiting}{available} of {updated} updated replicas are available..."
        )
    return RolloutStatus(True, False, f'deployment "{name}" successfully rolled out')
