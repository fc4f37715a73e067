"""The fake kube-apiserver's HTTP surface: discovery, CRUD, PATCH, watch, errors, faults.

It speaks JSON only. ``/version`` answers minor "31", so the kubectl on these machines
(a dispatcher that runs the bundled kubectl matching the server's minor version) runs
kubectl 1.31, which sends JSON bodies and Accept headers only. Answers, error ``Status``
bodies and watch lines follow the captures in the fixtures.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import re
import socket
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any

from rollbackd import selectors
from rollbackd.model import Obj
from rollbackd.testing.kube.cluster import Cluster, now_rfc3339, schedule
from rollbackd.testing.kube.patch import (
    PatchError,
    PatchTestFailed,
    json_patch,
    merge_patch,
    strategic_merge,
)
from rollbackd.testing.serving import BackgroundServer

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

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>v[0-9a-z]+))"
    r"(?:/namespaces/(?P<ns>[^/]+)(?=/))?"
    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>scale|status))?$"
)
_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _fields_of(obj: Any) -> Obj:
    """The FieldsV1 set of an applied configuration: ``f:`` keys, lists as whole fields."""
    if not isinstance(obj, dict):
        return {}
    return {f"f:{key}": _fields_of(value) for key, value in obj.items()}


def verb_of(method: str, query: dict[str, str], *, named: bool) -> str:
    """The RBAC verb of a request: watch, get, list, create, update, patch, delete."""
    if method == "GET":
        if query.get("watch") in ("1", "true"):
            return "watch"
        return "get" if named else "list"
    return _WRITE_VERBS.get(method, method.lower())


def rbac_of(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str] | None:
    """(API group, resource, verb) of a request as RBAC rules name them; None off the API."""
    match = _PATH.match(path)
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


def _details(resource: Resource, name: str) -> Obj:
    return {"name": name, "group": resource.group, "kind": resource.plural} if name else {}


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{resource.qualified} "{name}" not found', _details(resource, name)
    )


def conflict(resource: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        _details(resource, name),
    )


def invalid(resource: Resource, name: str, field_path: str, message: str) -> ApiError:
    cause = {"reason": "FieldValueInvalid", "message": message, "field": field_path}
    details = {**_details(resource, name), "kind": resource.kind, "causes": [cause]}
    return ApiError(
        422,
        "Invalid",
        f'{resource.kind}.{resource.group or "core"} "{name}" is invalid: {field_path}: {message}',
        details,
    )


# --- label and field selectors ------------------------------------------------------------


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


# --- events: one object, two API shapes --------------------------------------------------

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


# --- time fields: clients send isoformat, the API answers RFC 3339 with Z -----------------

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


# --- defaults the real API server applies --------------------------------------------------


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


def validate_deployment(resource: Resource, obj: Obj) -> None:
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


# --- faults ----------------------------------------------------------------------------------


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int = 500  # 0: drop the connection without answering
    times: int = 1
    retry_after: int | None = None  # a 429 says when to come back, as API priority does

    def error(self) -> ApiError:
        if self.status == 429:
            return ApiError(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                retry_after=self.retry_after if self.retry_after is not None else 1,
            )
        return ApiError(
            self.status,
            "InternalError" if self.status >= 500 else "BadRequest",
            f"Internal error occurred: injected fault {self.status}",
        )


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    user_agent: str
    content_type: str = ""
    status: int = 0
    at: float = field(default_factory=time.monotonic)

    @property
    def rbac(self) -> tuple[str, str, str] | None:
        """(API group, resource, verb) of this request, for RBAC checks and counts."""
        return rbac_of(self.method, self.path, self.query)


@dataclass
class Hook:
    """Runs ``action(cluster)`` just before a matching request is handled, ``times`` times."""

    method: str
    path: re.Pattern[str]
    action: Callable[[Cluster], None]
    times: int = 1


@dataclass
class Faults:
    latency: float = 0.0
    # Seconds an answer takes to get back, after the request took effect, for clients whose
    # User-Agent contains the key: one replica on a congested node among several.
    slow: dict[str, float] = field(default_factory=dict)
    bookmark_every: float = 0.0  # a watch's BOOKMARK while quiet, as the real server sends
    expire_continues: bool = False  # LIST continue tokens are "too old" (410)
    injected: list[Fault] = field(default_factory=list)
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (verb, plural)
    expire_watches: bool = False
    cut_watches: int = 0  # open watch streams to cut mid-stream, without their last chunk
    hooks: list[Hook] = field(default_factory=list)

    def run_hooks(self, method: str, path: str, cluster: Cluster) -> None:
        for hook in self.hooks:
            if hook.method == method and hook.path.search(path) and hook.times:
                hook.times -= 1
                with cluster.lock:
                    hook.action(cluster)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self.injected:
            if fault.method in (method, "*") and fault.path.search(path) and fault.times:
                fault.times -= 1
                return fault
        return None


class KubeApiServer(BackgroundServer):
    """The fake API server, served from a background thread on 127.0.0.1."""

    def __init__(self, port: int = 0, *, cluster: Cluster | None = None) -> None:
        self.cluster = cluster or Cluster()
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        super().__init__(type("Handler", (_Handler,), {"api": self}), port=port)
        data = resources.files("rollbackd.testing.kube") / "data"
        self.discovery: dict[str, Obj] = json.loads((data / "discovery.json").read_text())
        self.openapi_root = (data / "openapi-v3-root.json").read_bytes()
        self._openapi_apps = data / "openapi-v3-apis-apps-v1.json.gz"
        self._lists: OrderedDict[str, tuple[int, list[Obj]]] = OrderedDict()

    def stop(self) -> None:
        self._stopping.set()  # open watches end
        with self.cluster.lock:
            self.cluster.changed.notify_all()
        super().stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def openapi_apps(self) -> bytes:
        return gzip.decompress(self._openapi_apps.read_bytes())

    def kubeconfig(self, *, token: str = "rollbackd-test-token") -> str:  # noqa: S107
        """A kubeconfig for this server, as YAML text."""
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "fake", "user": {"token": token}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            },
            indent=2,
        )

    # --- operations used by the handler and by tests --------------------------------------

    def write_deployment(self, namespace: str, obj: Obj) -> None:
        """After a client wrote a Deployment: let the controller catch up, maybe later."""
        name = obj["metadata"]["name"]
        cluster = self.cluster
        if cluster.rollout_delay <= 0:
            cluster.sync_deployment(namespace, name)
            return
        cluster.sync_deployment(namespace, name, settle=False)

        def settle() -> None:
            with cluster.lock:
                cluster.sync_deployment(namespace, name)

        schedule(cluster.rollout_delay, settle)

    def remember_list(self, rv: int, rest: list[Obj]) -> str:
        """A continue token for the rest of a paged LIST (the real token's shape)."""
        start = rest[0]["metadata"]["name"] + "\x00"
        token = base64.b64encode(
            json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()
        ).decode()
        self._lists[token] = (rv, rest)
        while len(self._lists) > 64:
            self._lists.popitem(last=False)
        return token

    def continued(self, token: str) -> tuple[int, list[Obj]]:
        found = None if self.faults.expire_continues else self._lists.pop(token, None)
        if found is None:
            raise ApiError(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list "
                "result. You can start a new list without the continue parameter.",
            )
        return found

    def churn_status(self, namespace: str, name: str, every: float = 0.02) -> Callable[[], None]:
        """Write the Deployment's status every ``every`` seconds, each write a new
        resourceVersion and watch event, as kube-controller-manager does during a rollout;
        returns the function that stops it."""
        stop = threading.Event()

        def writer() -> None:
            beat = 0
            while not stop.wait(every):
                with self.cluster.lock:
                    beat += 1
                    self.cluster.touch_status(namespace, name, beat)

        threading.Thread(target=writer, name="status-churn", daemon=True).start()
        return stop.set

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        """Block until ``predicate(cluster)`` is true (tests), bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.cluster.lock:
            while not predicate(self.cluster):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cluster.changed.wait(remaining)
        return True


class _Handler(BaseHTTPRequestHandler):
    api: KubeApiServer
    _answer: tuple[int, bytes, str, dict[str, str]] | None = None  # written once routed
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """The request log is kept in ``api.requests``."""

    # --- plumbing ------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: Obj | bytes,
        content_type: str = "application/json",
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._record.status = status
        self._answer = (status, data, content_type, headers or {})
        if not self._late():  # a late answer leaves after the cluster's lock is released
            self._write_answer()

    def _late(self) -> float:
        agent = self._record.user_agent
        return sum(s for key, s in self.api.faults.slow.items() if key in agent)

    def _write_answer(self) -> None:
        if self._answer is None:
            return
        status, data, content_type, headers = self._answer
        self._answer = None
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        raw = self._raw
        if not raw:
            return {}
        content_type = self.headers.get("Content-Type", "")
        if "protobuf" in content_type:
            raise ApiError(415, "UnsupportedMediaType", "415: Unsupported Media Type")
        try:
            return normalize_times(json.loads(raw))
        except ValueError as exc:
            raise ApiError(
                400, "BadRequest", f"the body of the request was invalid: {exc}"
            ) from None

    def _dispatch(self, method: str) -> None:
        # Read the body first: an error answered early must not leave it in a kept-alive
        # connection, where it would be read as the next request.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        if len(self._raw) < length:  # the client went away mid-body: no request happened
            self.close_connection = True
            return
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self._record = RecordedRequest(
            method,
            url.path,
            query,
            self.headers.get("User-Agent", ""),
            self.headers.get("Content-Type", ""),
        )
        self.api.requests.append(self._record)
        self._answer = None
        faults = self.api.faults
        if faults.latency:
            time.sleep(faults.latency)
        # Hooks before faults: a hook may stop a client process, and a fault drop its request.
        faults.run_hooks(method, url.path, self.api.cluster)
        fault = faults.take(method, url.path + ("?" + url.query if url.query else ""))
        if fault is not None and fault.status == 0:
            self._record.status = 0
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        try:
            if fault is not None:
                raise fault.error()
            self._route(method, url.path, query)
        except ApiError as exc:
            headers = {} if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
            self._send(exc.code, exc.status(), headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if self._answer is not None:
            time.sleep(self._late())
            self._write_answer()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- routing ---------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        key = path.strip("/")
        if method == "GET" and path == "/version":
            self._send(200, VERSION)
        elif method == "GET" and path == "/api":
            host = f"127.0.0.1:{self.api.port}"
            cidrs = [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]
            self._send(
                200,
                {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": cidrs},
            )
        elif method == "GET" and key in self.api.discovery:
            self._send(200, self.api.discovery[key])
        elif method == "GET" and path == "/openapi/v3":
            self._send(200, self.api.openapi_root, "text/plain; charset=utf-8")
        elif method == "GET" and path == "/openapi/v3/apis/apps/v1":
            self._send(200, self.api.openapi_apps())
        else:
            match = _PATH.match(path)
            resource = RESOURCES.get((match["group"] or "", match["plural"])) if match else None
            if resource is not None and match is not None and match["group"]:
                resource = resource if resource.version == match["version"] else None
            if match is None or resource is None:
                self._send(404, b"404 page not found", "text/plain; charset=utf-8")
                return
            Resources(
                self,
                resource,
                namespace=match["ns"],
                name=match["name"],
                sub=match["sub"],
                query=query,
            ).serve(method)


class Resources:
    """One request against one resource type."""

    def __init__(
        self,
        handler: _Handler,
        resource: Resource,
        *,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
    ) -> None:
        self.h, self.r, self.ns, self.name, self.sub, self.query = (
            handler,
            resource,
            namespace or "",
            name,
            sub,
            query,
        )
        self.api = handler.api
        self.cluster = handler.api.cluster
        # Both event APIs store core/v1 Events.
        self.store = resource.plural

    def serve(self, method: str) -> None:
        verb = verb_of(method, self.query, named=bool(self.name))
        self._authorize(verb)
        if verb == "watch":
            self.watch()
            return
        with self.cluster.lock:
            getattr(self, verb)()

    def _authorize(self, verb: str) -> None:
        if (verb, self.r.plural) not in self.api.faults.forbidden:
            return
        target = (
            f'{self.r.qualified} "{self.name}" is forbidden'
            if self.name
            else (f"{self.r.qualified} is forbidden")
        )
        where = f' in the namespace "{self.ns}"' if self.ns else " at the cluster scope"
        group = f'"{self.r.group}"' if self.r.group else '""'
        raise ApiError(
            403,
            "Forbidden",
            f'{target}: User "system:serviceaccount:rollbackd:rollbackd" cannot {verb} resource '
            f'"{self.r.plural}" in API group {group}{where}',
            _details(self.r, self.name or ""),
        )

    # --- shapes -------------------------------------------------------------------------

    def _out(self, obj: Obj) -> Obj:
        if self.r.group == "events.k8s.io":
            return event_to_v1(obj)
        return obj

    def _existing(self) -> Obj:
        assert self.name is not None
        obj = self.cluster.get(self.store, self.ns, self.name)
        if obj is None:
            raise not_found(self.r, self.name)
        return obj

    def _check_namespace(self) -> None:
        if self.r.namespaced and self.cluster.get("namespaces", "", self.ns) is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{self.ns}" not found',
                {"name": self.ns, "kind": "namespaces"},
            )

    # --- verbs -----------------------------------------------------------------------------

    def get(self) -> None:
        obj = self._existing()
        if self.sub == "scale":
            self.h._send(200, _scale_of(obj))
            return
        self.h._send(200, self._out(obj))

    def list(self) -> None:
        token = self.query.get("continue", "")
        if token:
            rv, items = self.api.continued(token)
        else:
            self._check_list_rv()
            rv, items = self.cluster.rv, self._matching()
        limit = int(self.query.get("limit") or 0)
        metadata: Obj = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            # The rest is served later from this same snapshot, as etcd serves a paged list
            # at the first page's revision.
            metadata["continue"] = self.api.remember_list(rv, items[limit:])
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        self.h._send(
            200,
            {
                "kind": f"{self.r.kind}List",
                "apiVersion": self.r.api_version,
                "metadata": metadata,
                "items": items,
            },
        )

    def _matching(self) -> Items:
        namespace = self.ns if self.r.namespaced and self.ns else None
        items = [
            self._out(obj)
            for obj in self.cluster.list_objects(self.store, namespace)
            if matches_selector(
                obj["metadata"].get("labels", {}), self.query.get("labelSelector", "")
            )
            and matches_fields(obj, self.query.get("fieldSelector", ""))
        ]
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return items

    def _check_list_rv(self) -> None:
        """``resourceVersion`` with ``resourceVersionMatch=NotOlderThan``: at least that new."""
        wanted = self.query.get("resourceVersion", "")
        if not wanted.isdigit() or int(wanted) <= self.cluster.rv:
            return
        raise ApiError(
            504,
            "Timeout",
            f"Too large resource version: {wanted}, current: {self.cluster.rv}",
            {
                "causes": [
                    {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
                ]
            },
            retry_after=1,
        )

    def create(self, body: Obj | None = None) -> None:
        body = self.h._body() if body is None else body
        if self.r.group == "events.k8s.io":
            if not body.get("eventTime"):
                raise invalid(
                    self.r, body.get("metadata", {}).get("name", ""), "eventTime", "Required value"
                )
            body = event_to_core(body)
        elif self.r.plural == "events":
            body = event_to_core(event_to_v1(body))
        name = body.get("metadata", {}).get("name") or ""
        if not name and body.get("metadata", {}).get("generateName"):
            name = (
                body["metadata"]["generateName"]
                + Cluster.new_object("x", "v1", "x", "", {})["metadata"]["uid"][:5]
            )
        self._check_namespace()
        if self.cluster.get(self.store, self.ns, name) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{self.r.qualified} "{name}" already exists',
                _details(self.r, name),
            )
        kind = "Event" if self.r.plural == "events" else self.r.kind
        api_version = "v1" if self.r.plural == "events" else self.r.api_version
        obj = Cluster.new_object(
            kind, api_version, name, self.ns, body, created=self.cluster.stamp()
        )
        obj["metadata"].pop("resourceVersion", None)
        if self.r.plural == "deployments":
            obj["metadata"]["generation"] = 1
            default_deployment(obj)
            validate_deployment(self.r, obj)
            obj["status"] = {}
        if self.query.get("dryRun") == "All":
            self.h._send(201, self._out(obj))
            return
        stored = self.cluster.put(self.store, self.ns, obj)
        self.h._send(201, self._out(stored))
        if self.r.plural == "deployments":
            self.api.write_deployment(self.ns, stored)

    def update(self) -> None:
        current = self._existing()
        body = self.h._body()
        if self.sub == "scale":
            body = _apply_scale(current, body)
        elif self.r.group == "events.k8s.io":
            body = event_to_core(body)
        sent_rv = body.get("metadata", {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise conflict(self.r, current["metadata"]["name"])
        self._replace(current, body)

    def patch(self) -> None:
        content_type = self.h.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == APPLY:
            self._apply()
            return
        current = self._existing()
        patch = self.h._body()
        base = _scale_of(current) if self.sub == "scale" else self._out(current)
        try:
            if content_type == "application/json-patch+json":
                patched = json_patch(base, patch)
            elif content_type == "application/merge-patch+json":
                patched = merge_patch(base, patch)
            elif content_type == "application/strategic-merge-patch+json":
                patched = strategic_merge(base, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", "415: Unsupported Media Type")
        except PatchTestFailed:
            raise ApiError(
                422, "Invalid", "the server rejected our request due to an error in our request"
            ) from None
        except PatchError as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from None
        if self.sub == "scale":
            patched = _apply_scale(current, patched)
        elif self.r.group == "events.k8s.io":
            patched = event_to_core(patched)
        if patched.get("metadata", {}).get("resourceVersion") != current["metadata"][
            "resourceVersion"
        ] and patched.get("metadata", {}).get("resourceVersion"):
            raise conflict(self.r, current["metadata"]["name"])
        self._replace(current, patched)

    def _apply(self) -> None:
        """Server-side apply, as a GitOps controller writes: the applied configuration's
        fields win (lists whole), an entry for its ``fieldManager`` goes into
        ``managedFields``, and a missing object is created. Ownership conflicts between
        managers are not modelled: every apply behaves as ``force=true``."""
        manager = self.query.get("fieldManager", "")
        if not manager:
            raise ApiError(400, "BadRequest", "fieldManager is required for apply requests")
        applied = self.h._body()
        entry = {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": self.r.api_version,
            "time": now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": _fields_of(
                {k: v for k, v in applied.items() if k not in ("apiVersion", "kind")}
            ),
        }
        assert self.name is not None
        current = self.cluster.get(self.store, self.ns, self.name)
        if current is None:
            applied.setdefault("metadata", {})["managedFields"] = [entry]
            self.create(applied)
            return
        patched = merge_patch(current, applied)
        others = [
            m
            for m in current["metadata"].get("managedFields") or []
            if (m.get("manager"), m.get("operation")) != (manager, "Apply")
        ]
        patched["metadata"]["managedFields"] = [*others, entry]
        self._replace(current, patched)

    def _replace(self, current: Obj, body: Obj) -> None:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        for immutable in ("name", "namespace", "uid", "creationTimestamp"):
            if immutable in current["metadata"]:
                meta[immutable] = current["metadata"][immutable]
        obj["kind"], obj["apiVersion"] = current["kind"], current["apiVersion"]
        if self.r.plural == "deployments":
            default_deployment(obj)
            validate_deployment(self.r, obj)
            obj["status"] = current.get("status", {})  # status changes only through /status
            # As the real Deployment strategy counts: annotations are copied to ReplicaSets,
            # so changing them bumps the generation like a spec change does; labels do not.
            before = current["metadata"].get("annotations") or {}
            bumped = obj["spec"] != current["spec"] or (meta.get("annotations") or {}) != before
            meta["generation"] = current["metadata"].get("generation", 1) + bumped
        if _unchanged(current, obj):  # a no-op write keeps its resourceVersion, as etcd does
            self.h._send(200, _scale_of(current) if self.sub == "scale" else self._out(current))
            return
        if self.query.get("dryRun") == "All":
            self.h._send(200, _scale_of(obj) if self.sub == "scale" else self._out(obj))
            return
        stored = self.cluster.put(self.store, self.ns, obj)
        self.h._send(200, _scale_of(stored) if self.sub == "scale" else self._out(stored))
        if self.r.plural == "deployments":
            self.api.write_deployment(self.ns, stored)

    def delete(self) -> None:
        current = self._existing()
        self.cluster.delete(self.store, self.ns, current["metadata"]["name"])
        self.h._send(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    **_details(self.r, current["metadata"]["name"]),
                    "uid": current["metadata"]["uid"],
                },
            },
        )

    # --- watch ---------------------------------------------------------------------------------

    def _selected(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.r.namespaced and self.ns and obj["metadata"].get("namespace") != self.ns:
            return False
        return matches_selector(
            obj["metadata"].get("labels", {}), self.query.get("labelSelector", "")
        ) and matches_fields(obj, self.query.get("fieldSelector", ""))

    def watch(self) -> None:
        h = self.h
        timeout = float(self.query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + min(timeout, 1800)
        bookmarks = self.query.get("allowWatchBookmarks") in ("1", "true")
        rv_text = self.query.get("resourceVersion", "")
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-cache, private")
        h.end_headers()
        h._record.status = 200
        every = self.api.faults.bookmark_every
        quiet_since = time.monotonic()
        try:
            with self.cluster.lock:
                last = self._start_rv(rv_text)
            while last is not None and not self.api.stopping:
                with self.cluster.lock:
                    if self.api.faults.expire_watches:
                        self._line(_gone(last))
                        break
                    if self.api.faults.cut_watches > 0:
                        self.api.faults.cut_watches -= 1
                        h.connection.shutdown(socket.SHUT_RDWR)  # mid-stream, no last chunk
                        h.close_connection = True
                        return
                    pending = list(self.cluster.events_after(last))
                    if not pending:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            if bookmarks:
                                self._line(self._bookmark())
                            break
                        if bookmarks and every and time.monotonic() - quiet_since >= every:
                            self._line(self._bookmark())
                            quiet_since = time.monotonic()
                        self.cluster.changed.wait(min(remaining, every or 0.5, 0.5))
                        continue
                    quiet_since = time.monotonic()
                for event in pending:
                    last = event.rv
                    line = self._event_line(event)
                    if line is not None:
                        self._line(line)
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        h.close_connection = True

    def _start_rv(self, rv_text: str) -> int | None:
        if rv_text in ("", "0"):
            for obj in self.cluster.list_objects(self.store, self.ns or None):
                if self._selected(obj):
                    self._line({"type": "ADDED", "object": self._out(obj)})
            return self.cluster.rv
        rv = int(rv_text) if rv_text.isdigit() else -1
        if rv < self.cluster.oldest_rv() or rv > self.cluster.rv:
            self._line(_gone(rv))
            return None
        return rv

    def _event_line(self, event: Any) -> Obj | None:
        if event.plural != self.store:
            return None
        was, now = self._selected(event.previous), self._selected(event.obj)
        if event.kind == "DELETED":
            kind = "DELETED" if was else None
        elif was and now:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif was:
            kind = "DELETED"  # no longer selected: gone from this watcher's point of view
        else:
            kind = None
        return None if kind is None else {"type": kind, "object": self._out(event.obj)}

    def _bookmark(self) -> Obj:
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": self.r.kind,
                "apiVersion": self.r.api_version,
                "metadata": {"resourceVersion": str(self.cluster.rv)},
            },
        }

    def _line(self, payload: Obj) -> None:
        data = json.dumps(payload).encode() + b"\n"
        self.h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.h.wfile.flush()


def _unchanged(current: Obj, updated: Obj) -> bool:
    def comparable(obj: Obj) -> Obj:
        meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
        return {**obj, "metadata": meta}

    return comparable(current) == comparable(updated)


def _gone(rv: int) -> Obj:
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


def _scale_of(deployment: Obj) -> Obj:
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


def _apply_scale(deployment: Obj, scale: Obj) -> Obj:
    updated = copy.deepcopy(deployment)
    updated["spec"]["replicas"] = int(scale.get("spec", {}).get("replicas", 1))
    sent_rv = scale.get("metadata", {}).get("resourceVersion")
    if sent_rv:
        updated["metadata"]["resourceVersion"] = sent_rv
    return updated
