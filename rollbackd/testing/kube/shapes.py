"""Content as the real API server shapes it: two Event APIs over one object, RFC 3339
times, Deployment defaults and validation, scale subresources, unchanged writes."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from rollbackd.model import Obj
from rollbackd.testing.kube.api import ApiError, Resource, invalid

_EVENT_FIELDS = (
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)


def event_to_core(event: Obj) -> Obj:
    core = {k: v for k, v in event.items() if k not in {a for a, _ in _EVENT_FIELDS}}
    for new, old in _EVENT_FIELDS:
        if new in event:
            core[old] = event[new]
    core["apiVersion"] = "v1"
    core.setdefault("source", {})
    core.setdefault("firstTimestamp", None)
    core.setdefault("lastTimestamp", None)
    core.setdefault("eventTime", None)
    core.setdefault("reportingComponent", "")
    core.setdefault("reportingInstance", "")
    return core


def event_to_v1(core: Obj) -> Obj:
    event = {k: v for k, v in core.items() if k not in {b for _, b in _EVENT_FIELDS}}
    for new, old in _EVENT_FIELDS:
        if old in core and not (old == "reportingComponent" and core[old] == ""):
            event[new] = core[old]
    if event.get("reportingInstance") == "":
        del event["reportingInstance"]
    event["apiVersion"] = "events.k8s.io/v1"
    return event


_TIME_FIELDS = {
    "creationTimestamp",
    "firstTimestamp",
    "lastTimestamp",
    "deprecatedFirstTimestamp",
    "deprecatedLastTimestamp",
    "lastUpdateTime",
    "lastTransitionTime",
}
_MICRO_TIME_FIELDS = {"eventTime", "acquireTime", "renewTime"}


def normalize_times(node: Any) -> Any:
    """Rewrite Time and MicroTime values the way the API server stores them."""
    if isinstance(node, list):
        return [normalize_times(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {}
    for key, value in node.items():
        if isinstance(value, str) and key in _TIME_FIELDS | _MICRO_TIME_FIELDS:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid time {value!r} in {key}") from None
            fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if key in _MICRO_TIME_FIELDS else "%Y-%m-%dT%H:%M:%SZ"
            result[key] = parsed.strftime(fmt)
        else:
            result[key] = normalize_times(value)
    return result


def default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    default_pod_template(spec)


def default_statefulset(obj: Obj) -> None:
    """As the API server defaults a StatefulSet (``rollingUpdate.partition`` is not
    defaulted when ``rollingUpdate`` is absent, as captured)."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    default_pod_template(spec)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault(
        "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
    )


def default_daemonset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    default_pod_template(spec)
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)


WORKLOAD_DEFAULTS = {
    "deployments": default_deployment,
    "statefulsets": default_statefulset,
    "daemonsets": default_daemonset,
}
"""The workload kinds the fake defaults, validates and runs a controller for."""


def default_pod_template(spec: Obj) -> None:
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).pop("creationTimestamp", None)
    pod = template.setdefault("spec", {})
    for container in pod.get("containers") or []:
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        image = str(container.get("image", ""))
        tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
        container.setdefault("imagePullPolicy", "IfNotPresent" if tagged else "Always")
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("terminationGracePeriodSeconds", 30)
    pod.setdefault("dnsPolicy", "ClusterFirst")
    pod.setdefault("securityContext", {})
    pod.setdefault("schedulerName", "default-scheduler")


def validate_workload(resource: Resource, obj: Obj) -> None:
    name, spec = obj["metadata"]["name"], obj["spec"]
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = spec["template"].get("metadata", {}).get("labels") or {}
    if not selector:
        raise invalid(resource, name, "spec.selector", "Required value")
    if any(labels.get(k) != v for k, v in selector.items()):
        raise invalid(
            resource,
            name,
            "spec.template.metadata.labels",
            f"Invalid value: {json.dumps(labels, separators=(',', ':'))}: "
            "`selector` does not match template `labels`",
        )
    if int(spec.get("replicas", 0)) < 0:
        raise invalid(resource, name, "spec.replicas", "Invalid value: must be >= 0")
    containers = spec["template"].get("spec", {}).get("containers") or []
    if not containers:
        raise invalid(resource, name, "spec.template.spec.containers", "Required value")
    for index, container in enumerate(containers):
        if not container.get("image"):
            raise invalid(
                resource, name, f"spec.template.spec.containers[{index}].image", "Required value"
            )


def unchanged(current: Obj, updated: Obj) -> bool:
    def comparable(obj: Obj) -> Obj:
        meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
        return {**obj, "metadata": meta}

    return comparable(current) == comparable(updated)


def gone(rv: int) -> Obj:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {rv} (current)",
            "reason": "Expired",
            "code": 410,
        },
    }


def scale_of(deployment: Obj) -> Obj:
    meta = deployment["metadata"]
    labels = deployment["spec"].get("selector", {}).get("matchLabels", {})
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": deployment["spec"].get("replicas", 1)},
        "status": {
            "replicas": deployment.get("status", {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


def apply_scale(deployment: Obj, scale: Obj) -> Obj:
    updated = copy.deepcopy(deployment)
    updated["spec"]["replicas"] = int(scale.get("spec", {}).get("replicas", 1))
    sent_rv = scale.get("metadata", {}).get("resourceVersion")
    if sent_rv:
        updated["metadata"]["resourceVersion"] = sent_rv
    return updated
