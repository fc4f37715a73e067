"""The fake cluster's state: objects, resourceVersions, watch history, and the deployment
controller's bookkeeping, as the captures in the fixtures show a real control plane doing it.

Everything happens under one lock. A client write is committed first (and answered as
written); then the simulated deployment controller syncs the Deployment with writes of its
own, each a separate resourceVersion and watch event, in the captured order: ReplicaSet
changes, the Deployment's revision annotation, then its status.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rollbackd.model import Obj

Key = tuple[str, str, str]  # (plural, namespace, name); namespace "" for cluster scope

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
POD_TEMPLATE_HASH = "pod-template-hash"
# Deployment annotations the controller never copies onto a ReplicaSet.
ANNOTATIONS_TO_SKIP = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}
MAX_REVISION_HISTORY_CHARS = 2000
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

Rollout = Literal["available", "never", "deadline_exceeded"]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def template_hash(template: Obj, collision_count: int = 0) -> str:
    """A pod-template-hash in the controller's format: FNV-32a, digits mapped to safe letters.

    The real controller hashes Go's printed struct, which Python cannot reproduce; the value
    differs, the shape and its role (naming ReplicaSets, telling templates apart) do not.
    """
    data = json.dumps(_without_hash(template), sort_keys=True, separators=(",", ":"))
    value = 0x811C9DC5
    for byte in (data + str(collision_count or "")).encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in str(value).encode())


def controlled_by(owned: Obj, owner: Obj) -> bool:
    """``owner`` is ``owned``'s controller (its ReplicaSets, its ControllerRevisions)."""
    uid = owner["metadata"]["uid"]
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in owned["metadata"].get("ownerReferences", [])
    )


def _without_hash(template: Obj) -> Obj:
    clean = copy.deepcopy(template)
    labels = clean.get("metadata", {}).get("labels")
    if labels:
        labels.pop(POD_TEMPLATE_HASH, None)
    metadata = clean.get("metadata", {})
    metadata.pop("creationTimestamp", None)
    return clean


def templates_equal(a: Obj, b: Obj) -> bool:
    """Semantic equality ignoring pod-template-hash, as the controller and kubectl compare."""
    return _without_hash(a) == _without_hash(b)


def revision_of(obj: Obj) -> int:
    try:
        return int(obj.get("metadata", {}).get("annotations", {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _scaled(value: Any, replicas: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value or "25%")
    if text.endswith("%"):
        share = replicas * int(text[:-1])
        return -(-share // 100) if round_up else share // 100
    return int(text)


@dataclass
class WatchEvent:
    rv: int
    plural: str
    namespace: str
    kind: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    previous: Obj | None


class Cluster:
    """Objects and history of the fake API server, plus the deployment controller."""

    HISTORY = 5000  # watch events kept; a watch from an older resourceVersion gets 410

    def __init__(self, *, rollout: Rollout = "available") -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[Key, Obj] = {}
        # (plural, namespace) -> {name: object}: lists stay fast with 10,000 Deployments
        self._index: dict[tuple[str, str], dict[str, Obj]] = {}
        self.history: deque[WatchEvent] = deque(maxlen=self.HISTORY)
        self.rv = 100
        self.default_rollout: Rollout = rollout
        self.rollouts: dict[tuple[str, str], Rollout] = {}
        self.rollout_delay = 0.0
        self.stalling_images: set[str] = set()
        """A rollout to a template running one of these never becomes available and exceeds
        its progress deadline, as a bad image or a crash loop does; the others roll out."""
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        """The control plane's time: creation and condition times (tests set the past)."""
        with self.lock:
            for name in ("default", "kube-system", "kube-public"):
                self.put("namespaces", "", self.new_object("Namespace", "v1", name, "", {}))

    # --- storage ------------------------------------------------------------------------

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def stamp(self) -> str:
        """Now, by the cluster's clock, as the API server writes times."""
        return self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def new_object(
        kind: str, api_version: str, name: str, namespace: str, body: Obj, *, created: str = ""
    ) -> Obj:
        obj = copy.deepcopy(body)
        obj["kind"], obj["apiVersion"] = kind, api_version
        metadata = obj.setdefault("metadata", {})
        metadata["name"] = name
        if namespace:
            metadata["namespace"] = namespace
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = created or now_rfc3339()
        if kind == "Namespace":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            metadata.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        return obj

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        found = self.objects.get((plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list_objects(self, plural: str, namespace: str | None) -> list[Obj]:
        buckets = [
            bucket
            for (p, ns), bucket in sorted(self._index.items())
            if p == plural and (namespace is None or ns == namespace)
        ]
        return [copy.deepcopy(b[name]) for b in buckets for name in sorted(b)]

    def put(self, plural: str, namespace: str, obj: Obj) -> Obj:
        """Store ``obj`` with a new resourceVersion and record the watch event."""
        key = (plural, namespace, obj["metadata"]["name"])
        previous = self.objects.get(key)
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = self.next_rv()
        self.objects[key] = stored
        self._index.setdefault((plural, namespace), {})[key[2]] = stored
        kind = "ADDED" if previous is None else "MODIFIED"
        self._record(WatchEvent(self.rv, plural, namespace, kind, stored, previous))
        return copy.deepcopy(stored)

    def delete(self, plural: str, namespace: str, name: str) -> Obj | None:
        previous = self.objects.pop((plural, namespace, name), None)
        if previous is None:
            return None
        self._index.get((plural, namespace), {}).pop(name, None)
        gone = copy.deepcopy(previous)
        gone["metadata"]["resourceVersion"] = self.next_rv()
        self._record(WatchEvent(self.rv, plural, namespace, "DELETED", gone, previous))
        if plural == "deployments":
            for rs in self._owned_replicasets(previous):
                self.delete("replicasets", namespace, rs["metadata"]["name"])
        if plural in ("statefulsets", "daemonsets"):  # the garbage collector
            for cr in self.list_objects("controllerrevisions", namespace):
                if controlled_by(cr, previous):
                    self.delete("controllerrevisions", namespace, cr["metadata"]["name"])
        if plural == "namespaces":
            for key in [k for k in self.objects if k[1] == name]:
                self.delete(*key)
        return gone

    def _record(self, event: WatchEvent) -> None:
        self.history.append(event)  # the oldest fall off: a watch from before them gets 410
        self.changed.notify_all()

    def events_after(self, rv: int) -> Iterator[WatchEvent]:
        for event in self.history:
            if event.rv > rv:
                yield event

    def oldest_rv(self) -> int:
        return self.history[0].rv - 1 if self.history else self.rv

    # --- the deployment controller --------------------------------------------------------

    def rollout_of(self, deployment: Obj) -> Rollout:
        meta = deployment["metadata"]
        containers = deployment["spec"]["template"].get("spec", {}).get("containers") or []
        if any(c.get("image") in self.stalling_images for c in containers):
            return "deadline_exceeded"
        return self.rollouts.get((meta["namespace"], meta["name"]), self.default_rollout)

    def _owned_replicasets(self, deployment: Obj) -> list[Obj]:
        bucket = self._index.get(("replicasets", deployment["metadata"]["namespace"]), {})
        return [obj for _, obj in sorted(bucket.items()) if controlled_by(obj, deployment)]

    def sync_deployment(self, namespace: str, name: str, *, settle: bool = True) -> None:
        """What kube-controller-manager does after the Deployment changed."""
        deployment = self.get("deployments", namespace, name)
        if deployment is None:
            return
        spec = deployment["spec"]
        owned = [copy.deepcopy(rs) for rs in self._owned_replicasets(deployment)]
        current = next(
            (
                rs
                for rs in sorted(owned, key=lambda r: r["metadata"]["creationTimestamp"])
                if templates_equal(rs["spec"]["template"], spec["template"])
            ),
            None,
        )
        olds = [rs for rs in owned if rs is not current]
        paused = bool(spec.get("paused"))
        created = current is None and not paused
        if not paused:
            current = self._new_replicaset(deployment, current, olds)
            annotations = deployment["metadata"].setdefault("annotations", {})
            if annotations.get(REVISION) != current["metadata"]["annotations"][REVISION]:
                annotations[REVISION] = current["metadata"]["annotations"][REVISION]
                deployment = self.put("deployments", namespace, deployment)
        self._scale(deployment, current, olds, settle=settle)
        self._prune(deployment, olds)
        self._write_status(deployment, current, settle=settle, created=created)

    def touch_status(self, namespace: str, name: str, beat: int) -> None:
        """A status-only write (``beat`` seconds into the rollout): spec and template stay."""
        deployment = self.get("deployments", namespace, name)
        if deployment is None:
            return
        stamp = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=beat)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        for condition in deployment.setdefault("status", {}).get("conditions", []):
            condition["lastUpdateTime"] = stamp
        self.put("deployments", namespace, deployment)

    def _new_replicaset(self, deployment: Obj, current: Obj | None, olds: list[Obj]) -> Obj:
        meta, spec = deployment["metadata"], deployment["spec"]
        new_revision = max((revision_of(rs) for rs in olds), default=0) + 1
        replicas = int(spec.get("replicas", 1))
        surge = _scaled(_rolling(spec, "maxSurge"), replicas, round_up=True)
        copied = {
            k: v for k, v in meta.get("annotations", {}).items() if k not in ANNOTATIONS_TO_SKIP
        }
        if current is None:
            pod_hash = template_hash(spec["template"])
            template = copy.deepcopy(spec["template"])
            template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = (
                pod_hash
            )
            labels = {**spec["selector"].get("matchLabels", {}), **template["metadata"]["labels"]}
            rs = self.new_object(
                "ReplicaSet",
                "apps/v1",
                f"{meta['name']}-{pod_hash}",
                meta["namespace"],
                {},
                created=self.stamp(),
            )
            rs["metadata"].update(
                labels=labels,
                annotations={
                    **copied,
                    DESIRED_REPLICAS: str(replicas),
                    MAX_REPLICAS: str(replicas + surge),
                    REVISION: str(new_revision),
                },
                ownerReferences=[
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                generation=1,
            )
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = pod_hash
            rs["spec"] = {"replicas": 0, "selector": selector, "template": template}
            rs["status"] = {"replicas": 0}
            return self.put("replicasets", meta["namespace"], rs)
        annotations = current["metadata"].setdefault("annotations", {})
        before = dict(annotations)
        annotations.update(copied)
        old_revision = revision_of(current)
        if old_revision < new_revision:
            annotations[REVISION] = str(new_revision)
            if old_revision > 0:
                history = annotations.get(REVISION_HISTORY)
                history = f"{history},{old_revision}" if history else str(old_revision)
                while len(history) > MAX_REVISION_HISTORY_CHARS and "," in history:
                    history = history.split(",", 1)[1]
                annotations[REVISION_HISTORY] = history
        if annotations != before:
            return self.put("replicasets", current["metadata"]["namespace"], current)
        return current

    def _scale(
        self, deployment: Obj, current: Obj | None, olds: list[Obj], *, settle: bool
    ) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        replicas = int(spec.get("replicas", 1))
        done = settle and self.rollout_of(deployment) == "available"
        plan: list[tuple[Obj, int]] = []
        if current is not None:
            rolling = any(rs["spec"].get("replicas", 0) for rs in olds) and not done
            surge = _scaled(_rolling(spec, "maxSurge"), replicas, round_up=True)
            plan.append((current, min(replicas, max(surge, 1)) if rolling else replicas))
        plan += [(rs, 0 if done else rs["spec"].get("replicas", 0)) for rs in olds]
        for rs, wanted in plan:
            ready = wanted if done else 0
            fresh = self.get("replicasets", meta["namespace"], rs["metadata"]["name"])
            if fresh is None:
                continue
            if fresh["spec"].get("replicas") != wanted:
                fresh["metadata"]["generation"] = fresh["metadata"].get("generation", 1) + 1
                fresh["spec"]["replicas"] = wanted
            status = _omit_zero(
                {
                    "replicas": wanted,
                    "fullyLabeledReplicas": wanted,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "terminatingReplicas": 0,
                    "observedGeneration": fresh["metadata"]["generation"],
                },
                keep=("replicas", "terminatingReplicas", "observedGeneration"),
            )
            if fresh != rs or fresh.get("status") != status:
                fresh["status"] = status
                self.put("replicasets", meta["namespace"], fresh)

    def _prune(self, deployment: Obj, olds: list[Obj]) -> None:
        limit = int(deployment["spec"].get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in olds
            if (self.get("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"]) or {})
            .get("spec", {})
            .get("replicas", 0)
            == 0
        ]
        idle.sort(key=revision_of)
        for rs in idle[: max(0, len(idle) - limit)]:
            self.delete("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])

    def _write_status(
        self, deployment: Obj, current: Obj | None, *, settle: bool, created: bool = False
    ) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        namespace, name = meta["namespace"], meta["name"]
        owned = self._owned_replicasets(deployment)
        replicas = sum(rs["spec"].get("replicas", 0) for rs in owned)
        if current is not None:
            current = self.get("replicasets", namespace, current["metadata"]["name"])
        updated = current["spec"]["replicas"] if current else 0
        available = sum(rs.get("status", {}).get("availableReplicas", 0) for rs in owned)
        mode = self.rollout_of(deployment)
        rs_name = current["metadata"]["name"] if current else ""
        old = deployment.get("status", {}).get("conditions", [])
        stamp = self.stamp()

        def condition(kind: str, status: str, reason: str, message: str) -> Obj:
            previous = next((c for c in old if c.get("type") == kind), None)
            transition = (
                previous["lastTransitionTime"]
                if previous and previous.get("status") == status
                else stamp
            )
            return {
                "type": kind,
                "status": status,
                "lastUpdateTime": stamp,
                "lastTransitionTime": transition,
                "reason": reason,
                "message": message,
            }

        desired = int(spec.get("replicas", 1))
        unavailable_allowed = _scaled(_rolling(spec, "maxUnavailable"), desired, round_up=False)
        if (available >= desired - unavailable_allowed and available > 0) or desired == 0:
            conditions = [
                condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                )
            ]
        else:
            conditions = [
                condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                )
            ]
        was = next((c.get("reason") for c in old if c.get("type") == "Progressing"), None)
        complete = updated == desired and available == desired and replicas == desired
        if spec.get("paused"):
            conditions.append(
                condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
            )
        elif was in ("DeploymentPaused", "DeploymentResumed") and not complete and not created:
            # As captured: resuming says so, and re-adopting an old ReplicaSet is no progress.
            conditions.append(
                condition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed")
            )
        elif mode == "deadline_exceeded" and settle:
            conditions.append(
                condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                )
            )
        elif complete:
            conditions.append(
                condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{rs_name}" has successfully progressed.',
                )
            )
        else:
            conditions.append(
                condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    f'ReplicaSet "{rs_name}" is progressing.',
                )
            )
        status: Obj = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": max(0, replicas - available),
            "terminatingReplicas": 0,
            "conditions": conditions,
        }
        status = _omit_zero(status, keep=("observedGeneration", "terminatingReplicas"))
        fresh = self.get("deployments", namespace, name)
        if fresh is None:
            return
        if _without_times(fresh.get("status", {})) != _without_times(status):
            fresh["status"] = status
            self.put("deployments", namespace, fresh)


def _rolling(spec: Obj, field: str) -> Any:
    strategy = spec.get("strategy", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    return strategy.get("rollingUpdate", {}).get(field, "25%")


def _omit_zero(status: Obj, *, keep: tuple[str, ...]) -> Obj:
    """Status integers are omitempty in the API, except the ones named in ``keep``."""
    return {k: v for k, v in status.items() if v or k in keep}


def _without_times(status: Obj) -> Obj:
    clean = copy.deepcopy(status)
    for c in clean.get("conditions", []):
        c.pop("lastUpdateTime", None)
        c.pop("lastTransitionTime", None)
    return clean


def schedule(delay: float, action: Callable[[], None]) -> None:
    """Run ``action`` after ``delay`` seconds on a daemon timer (rollout progress)."""
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()
