"""The fake API server's vocabulary: its resources and paths, RBAC verbs, ``Status``
errors, and label and field selectors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rollbackd import selectors
from rollbackd.model import Obj

VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "rollbackd-fake",
    "gitTreeState": "clean",
    "buildDate": "2026-11-27T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


Items = list[Obj]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps``, as error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES = {
    ("", "namespaces"): Resource("", "v1", "namespaces", "Namespace", namespaced=False),
    ("", "events"): Resource("", "v1", "events", "Event"),
    ("", "pods"): Resource("", "v1", "pods", "Pod"),
    ("apps", "deployments"): Resource("apps", "v1", "deployments", "Deployment"),
    ("apps", "replicasets"): Resource("apps", "v1", "replicasets", "ReplicaSet"),
    ("apps", "statefulsets"): Resource("apps", "v1", "statefulsets", "StatefulSet"),
    ("apps", "daemonsets"): Resource("apps", "v1", "daemonsets", "DaemonSet"),
    ("apps", "controllerrevisions"): Resource(
        "apps", "v1", "controllerrevisions", "ControllerRevision"
    ),
    ("coordination.k8s.io", "leases"): Resource("coordination.k8s.io", "v1", "leases", "Lease"),
    ("events.k8s.io", "events"): Resource("events.k8s.io", "v1", "events", "Event"),
    # Custom resources of the owners rollbackd knows, stored as sent (no schema).
    ("argoproj.io", "applications"): Resource(
        "argoproj.io", "v1alpha1", "applications", "Application"
    ),
    ("kustomize.toolkit.fluxcd.io", "kustomizations"): Resource(
        "kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization"
    ),
    ("helm.toolkit.fluxcd.io", "helmreleases"): Resource(
        "helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease"
    ),
}
APPLY = "application/apply-patch+yaml"

PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>v[0-9a-z]+))"
    r"(?:/namespaces/(?P<ns>[^/]+)(?=/))?"
    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>scale|status))?$"
)
_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def fields_of(obj: Any) -> Obj:
    """The FieldsV1 set of an applied configuration: ``f:`` keys, lists as whole fields."""
    if not isinstance(obj, dict):
        return {}
    return {f"f:{key}": fields_of(value) for key, value in obj.items()}


def verb_of(method: str, query: dict[str, str], *, named: bool) -> str:
    """The RBAC verb of a request: watch, get, list, create, update, patch, delete."""
    if method == "GET":
        if query.get("watch") in ("1", "true"):
            return "watch"
        return "get" if named else "list"
    return _WRITE_VERBS.get(method, method.lower())


def rbac_of(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str] | None:
    """(API group, resource, verb) of a request as RBAC rules name them; None off the API."""
    match = PATH.match(path)
    if match is None:
        return None
    resource = match["plural"] + (f"/{match['sub']}" if match["sub"] else "")
    return match["group"] or "", resource, verb_of(method, query, named=bool(match["name"]))


class ApiError(Exception):
    """Answered as a ``v1 Status`` with the real server's wording."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Obj | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details if details is not None else {}
        self.retry_after = retry_after
        if retry_after is not None:
            self.details = {**self.details, "retryAfterSeconds": retry_after}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def status_details(resource: Resource, name: str) -> Obj:
    return {"name": name, "group": resource.group, "kind": resource.plural} if name else {}


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{resource.qualified} "{name}" not found', status_details(resource, name)
    )


def conflict(resource: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        status_details(resource, name),
    )


def invalid(resource: Resource, name: str, field_path: str, message: str) -> ApiError:
    cause = {"reason": "FieldValueInvalid", "message": message, "field": field_path}
    details = {**status_details(resource, name), "kind": resource.kind, "causes": [cause]}
    return ApiError(
        422,
        "Invalid",
        f'{resource.kind}.{resource.group or "core"} "{name}" is invalid: {field_path}: {message}',
        details,
    )


def matches_selector(labels: dict[str, str], selector: str) -> bool:
    try:
        return selectors.matches(labels, selector)
    except selectors.SelectorError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from None


def matches_fields(obj: Obj, selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        key = key.rstrip("=!")
        actual = {
            "metadata.name": obj["metadata"].get("name"),
            "metadata.namespace": obj["metadata"].get("namespace"),
        }.get(key)
        if (actual == value.lstrip("=")) == ("!=" in term):
            return False
    return True
