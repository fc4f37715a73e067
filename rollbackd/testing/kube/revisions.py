"""The StatefulSet and DaemonSet controllers' revision bookkeeping, as the captures show it.

- Each distinct pod template gets one ControllerRevision, named ``<object>-<hash>``, whose
  ``data`` is ``{"spec": {"template": {"$patch": "replace", ...}}}``; its labels are the
  template's plus the hash label, its annotations the object's *when it was created*.
- A template seen before (an undo) reuses its ControllerRevision: only ``revision`` moves,
  to the highest number plus one, so the old number vanishes (as with ReplicaSets).
- Beyond ``revisionHistoryLimit`` (10) the oldest revisions that are not current go.
- The StatefulSet hash is the controller's own (FNV-1 of the data's JSON and the collision
  count), so names equal the captured ones; the DaemonSet's hashes Go's printed template,
  which the fake replaces by its pod-template-hash (same shape, another value).
- The pods are not modelled: a RollingUpdate completes at once, and the status says so in
  each kind's fields. An OnDelete StatefulSet moves ``updateRevision`` only, as the
  controller does until someone deletes the pods.
"""

from __future__ import annotations

import copy
import json

from rollbackd.model import Obj
from rollbackd.testing.kube.cluster import Cluster, controlled_by, template_hash

KINDS = {"statefulsets": "StatefulSet", "daemonsets": "DaemonSet"}
HASH_LABEL = {
    "statefulsets": "controller.kubernetes.io/hash",
    "daemonsets": "controller-revision-hash",
}
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
NODES = 2  # where a DaemonSet's pods run: the captures' node-a and node-b
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def revision_hash(data: Obj, collision_count: int = 0) -> str:
    """The StatefulSet controller's ControllerRevision hash: FNV-1 (32 bit) of the data's
    JSON (keys sorted, compact, as Go marshals a map) and the collision count, each digit
    of the sum mapped to a safe letter."""
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")) + str(collision_count)
    value = 0x811C9DC5
    for byte in raw.encode():
        value = ((value * 0x01000193) & 0xFFFFFFFF) ^ byte
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in str(value).encode())


def revision_data(workload: Obj) -> Obj:
    template = copy.deepcopy(workload["spec"].get("template") or {})
    template.get("metadata", {}).pop("creationTimestamp", None)
    return {"spec": {"template": {"$patch": "replace", **template}}}


def _owned(cluster: Cluster, workload: Obj) -> list[Obj]:
    namespace = workload["metadata"]["namespace"]
    return [
        cr
        for cr in cluster.list_objects("controllerrevisions", namespace)
        if controlled_by(cr, workload)
    ]


def sync_revisions(cluster: Cluster, plural: str, namespace: str, name: str) -> None:
    """What the controller does after the object changed: its revisions, then its status."""
    workload = cluster.get(plural, namespace, name)
    if workload is None:
        return
    data = revision_data(workload)
    owned = _owned(cluster, workload)
    top = max((int(cr.get("revision", 0)) for cr in owned), default=0)
    current = next((cr for cr in owned if cr["data"] == data), None)
    if current is None:
        meta = workload["metadata"]
        if plural == "statefulsets":
            digest = revision_hash(data)
        else:
            digest = template_hash(data["spec"]["template"])
        labels = dict((workload["spec"]["template"].get("metadata") or {}).get("labels") or {})
        current = Cluster.new_object(
            "ControllerRevision",
            "apps/v1",
            f"{name}-{digest}",
            namespace,
            {
                "metadata": {
                    "labels": {**labels, HASH_LABEL[plural]: digest},
                    **(
                        {"annotations": dict(meta["annotations"])}
                        if meta.get("annotations")
                        else {}
                    ),
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": KINDS[plural],
                            "name": name,
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "data": data,
                "revision": top + 1,
            },
            created=cluster.stamp(),
        )
        current = cluster.put("controllerrevisions", namespace, current)
        owned.append(current)
    elif int(current.get("revision", 0)) < top:
        current["revision"] = top + 1
        current = cluster.put("controllerrevisions", namespace, current)
        owned = [
            current if cr["metadata"]["name"] == current["metadata"]["name"] else cr for cr in owned
        ]
    _prune(cluster, workload, owned, current)
    _write_status(cluster, plural, workload, current)


def _prune(cluster: Cluster, workload: Obj, owned: list[Obj], current: Obj) -> None:
    limit = int(workload["spec"].get("revisionHistoryLimit", 10))
    others = sorted(
        (cr for cr in owned if cr["metadata"]["name"] != current["metadata"]["name"]),
        key=lambda cr: int(cr.get("revision", 0)),
    )
    for cr in others[: max(0, len(others) - limit)]:
        cluster.delete("controllerrevisions", cr["metadata"]["namespace"], cr["metadata"]["name"])


def _write_status(cluster: Cluster, plural: str, workload: Obj, current: Obj) -> None:
    meta, spec = workload["metadata"], workload["spec"]
    revision = current["metadata"]["name"]
    if plural == "statefulsets":
        replicas = int(spec.get("replicas", 1))
        before = workload.get("status") or {}
        on_delete = (spec.get("updateStrategy") or {}).get("type") == "OnDelete"
        running = before.get("currentRevision") or revision
        status: Obj = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": replicas,
            "readyReplicas": replicas,
            "currentReplicas": replicas,
            "updatedReplicas": replicas,
            "currentRevision": running if on_delete else revision,
            "updateRevision": revision,
            "collisionCount": 0,
            "availableReplicas": replicas,
        }
        if on_delete and running != revision:
            del status["updatedReplicas"]  # the pods stay on their revision until deleted
    else:
        status = {
            "currentNumberScheduled": NODES,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": NODES,
            "numberReady": NODES,
            "observedGeneration": meta.get("generation", 1),
            "updatedNumberScheduled": NODES,
            "numberAvailable": NODES,
        }
    fresh = cluster.get(plural, meta["namespace"], meta["name"])
    if fresh is not None and fresh.get("status") != status:
        fresh["status"] = status
        cluster.put(plural, meta["namespace"], fresh)
