"""The fake kube-apiserver's HTTP surface: the listener, discovery, routing to the verbs.

It speaks JSON only. ``/version`` answers minor "31", so the kubectl on these machines
(a dispatcher that runs the bundled kubectl matching the server's minor version) runs
kubectl 1.31, which sends JSON bodies and Accept headers only. Answers, error ``Status``
bodies and watch lines follow the captures in the fixtures.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any

from rollbackd.model import Obj
from rollbackd.testing.kube.api import PATH, RESOURCES, VERSION, ApiError
from rollbackd.testing.kube.cluster import Cluster, schedule
from rollbackd.testing.kube.faults import Faults, RecordedRequest
from rollbackd.testing.kube.resources import Resources
from rollbackd.testing.kube.shapes import normalize_times
from rollbackd.testing.serving import BackgroundServer


class KubeApiServer(BackgroundServer):
    """The fake API server, served from a background thread on 127.0.0.1."""

    def __init__(self, port: int = 0, *, cluster: Cluster | None = None) -> None:
        self.cluster = cluster or Cluster()
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        super().__init__(type("Handler", (Handler,), {"api": self}), port=port)
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


class Handler(BaseHTTPRequestHandler):
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
            match = PATH.match(path)
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
