"""Edge: the Kubernetes API through the official ``kubernetes`` client.

Objects travel as the API's own JSON (``_preload_content=False``, watch events with
``deserialize=False``): the pure stages work on those dicts, and nothing pays for model
classes. Every call runs in a thread with a client-side timeout, and every
``ApiException`` or transport error becomes a ``KubeError`` with a stable code. The
informer that keeps the managed Deployments in memory is ``rollbacks.informer``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from rollbackd import __version__
from rollbackd.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeGone,
    KubeInvalid,
    KubeNotFound,
    KubeThrottled,
    KubeTimeout,
    KubeUnreachable,
    RollbackdError,
)
from rollbackd.incidents.owners import OWNER_RESOURCES
from rollbackd.model import Obj
from rollbackd.retry import KUBE_READ, Sleep, retrying
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import KubernetesSettings

log = get_logger(__name__)


REPORTING_CONTROLLER = "rollbackd.io/rollbackd"


def api_client(settings: KubernetesSettings) -> client.ApiClient:
    """An ApiClient for the configured cluster: kubeconfig, in-cluster, or the default file."""
    configuration = client.Configuration()
    if settings.kubeconfig:
        config.load_kube_config(config_file=settings.kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    configuration.retries = 0  # rollbackd decides what to retry
    api = client.ApiClient(configuration)
    # Audit logs name rollbackd and the replica: host and process.
    api.user_agent = f"rollbackd/{__version__} ({socket.gethostname()}; pid {os.getpid()})"
    return api


def kube_error(exc: Exception, *, what: str) -> KubeError:
    """Classify an SDK or transport failure."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        status, body = exc.status or 0, _status_body(exc)
        message = str(body.get("message") or exc.reason or "")
        if status == 409:
            return KubeConflict(f"{what}: {message}")
        if status == 404:
            return KubeNotFound(f"{what}: {message}")
        if status == 403:
            return KubeForbidden(
                f"{what}: {message} (grant this verb to rollbackd's ServiceAccount)"
            )
        if status == 422 and not body.get("details"):
            # A failed JSON-patch `test`: the object changed after rollbackd read it.
            return KubeConflict(f"{what}: the Deployment changed since it was read ({message})")
        if status == 422:
            return KubeInvalid(f"{what}: {message}")
        if status == 410:
            return KubeGone(f"{what}: {message}")
        retry_after = _retry_after(exc, body)
        if status == 429:
            return KubeThrottled(f"{what}: {message}", retry_after=retry_after or 1.0)
        return KubeError(f"{what}: HTTP {status} {message}".strip(), retry_after=retry_after)
    cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    if isinstance(cause, urllib3.exceptions.TimeoutError | socket.timeout | TimeoutError):
        return KubeTimeout(f"{what}: no answer in time")
    return KubeUnreachable(f"{what}: {type(exc).__name__}: {exc}")


def _retry_after(exc: ApiException, body: Obj) -> float | None:
    """The server's Retry-After header (seconds), else the Status's retryAfterSeconds."""
    headers = exc.headers or {}
    for hint in (headers.get("Retry-After"), (body.get("details") or {}).get("retryAfterSeconds")):
        if str(hint or "").strip().isdigit():
            return float(str(hint).strip())
    return None


def _status_body(exc: ApiException) -> Obj:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def json_body(response: Any) -> Any:
    return orjson.loads(response.data)  # a LIST page of 500 Deployments: most of its cost


def watch_events(
    func: Callable[..., Any],
    *args: Any,
    on_open: Callable[[], None] | None = None,
    **kwargs: Any,
) -> Iterator[Obj]:
    """Raw watch events from a list function; an ERROR event raises ``ApiException``.

    The client's own ``Watch(deserialize=False)`` fails with a KeyError on ERROR events,
    which would hide a 410 Gone; reading the lines here keeps the Status it carries.
    ``on_open`` runs once the server accepted the watch (its answer's headers arrived).
    """
    response = func(*args, watch=True, _preload_content=False, **kwargs)
    if on_open is not None:
        on_open()
    try:
        for line in iter_resp_lines(response):
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                raise ApiException(
                    status=int(status.get("code") or 500),
                    reason=f"{status.get('reason')}: {status.get('message')}",
                )
            yield event
    finally:
        response.close()
        response.release_conn()


def micro_time(now: datetime | None = None) -> str:
    """The API's MicroTime: RFC 3339 with exactly six fractional digits."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesWorkloads:
    """Reads, patches and watches Deployments; writes Events. Implements ``Workloads``.

    Reads are idempotent and retried here on transient failures (timeouts, lost
    connections, 5xx, 429 after its Retry-After) with ``rollbackd.retry.KUBE_READ``; writes
    are retried by their caller, which knows whether a lost answer may have landed.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        timeout: float = 10.0,
        instance: str = "",
        sleep: Sleep = asyncio.sleep,
        cluster: str = "",
    ) -> None:
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._events = client.EventsV1Api(api)
        self._timeout = timeout
        self._instance = instance or socket.gethostname()
        self._sleep = sleep
        self._cluster = cluster  # named in every Event: event exporters merge clusters

    async def _read(self, what: str, call: Callable[[], Any]) -> Any:
        def logged(exc: RollbackdError, wait: float) -> None:
            log.warning("kube_read_retry", what=what, code=exc.code, retry_in=round(wait, 2))

        return await retrying(
            lambda: self._call(what, call),
            policy=KUBE_READ,
            sleep=self._sleep,
            on_retry=logged,
            retry_on=lambda exc: exc.transient and not isinstance(exc, KubeTimeout),
        )

    async def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(call), self._timeout + 2)
        except TimeoutError:
            raise KubeTimeout(f"{what}: no answer in {self._timeout:g}s") from None
        except Exception as exc:  # every SDK or transport failure is classified
            raise kube_error(exc, what=what) from exc

    def _opts(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": (3, self._timeout)}

    async def get_deployment(self, namespace: str, name: str) -> Obj:
        response = await self._read(
            f"get deployment {namespace}/{name}",
            lambda: self._apps.read_namespaced_deployment(name, namespace, **self._opts()),
        )
        return dict(json_body(response))

    async def list_replicasets(self, namespace: str, selector: str) -> list[Obj]:
        response = await self._read(
            f"list replicasets in {namespace}",
            lambda: self._apps.list_namespaced_replica_set(
                namespace, label_selector=selector, **self._opts()
            ),
        )
        return list(json_body(response).get("items", []))

    async def list_deployments(self, settings: KubernetesSettings) -> list[Obj]:
        """The managed Deployments, read once (no watch): ``eval``'s owner column."""
        namespaces = settings.namespaces or [""]
        found: list[Obj] = []
        for namespace in namespaces:
            call: Callable[..., Any] = (
                partial(self._apps.list_namespaced_deployment, namespace)
                if namespace
                else self._apps.list_deployment_for_all_namespaces
            )
            response = await self._read(
                f"list deployments in {namespace or 'all namespaces'}",
                partial(call, label_selector=settings.selector, **self._opts()),
            )
            found.extend(json_body(response).get("items", []))
        return found

    async def patch_deployment(self, namespace: str, name: str, patch: list[Obj]) -> Obj:
        response = await self._call(
            f"patch deployment {namespace}/{name}",
            lambda: self._apps.patch_namespaced_deployment(name, namespace, patch, **self._opts()),
        )
        return dict(json_body(response))

    async def annotate_deployment(
        self, namespace: str, name: str, annotations: dict[str, str | None]
    ) -> None:
        """Set annotations with a merge patch: no precondition, the template is untouched."""
        body = {"metadata": {"annotations": annotations}}
        await self._call(
            f"annotate deployment {namespace}/{name}",
            lambda: self._apps.patch_namespaced_deployment(
                name,
                namespace,
                body,
                _content_type="application/merge-patch+json",
                **self._opts(),
            ),
        )

    async def get_owner(self, kind: str, namespace: str, name: str) -> Obj:
        """An Argo CD Application or a Flux Kustomization / HelmRelease (``OwnerObjects``)."""
        group, version, plural = OWNER_RESOURCES[kind]
        response = await self._read(
            f"get {plural}.{group} {namespace}/{name}",
            lambda: self._custom.get_namespaced_custom_object(
                group, version, namespace, plural, name, **self._opts()
            ),
        )
        return dict(json_body(response))

    async def patch_owner(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        """A merge patch of an owner object (its automated sync, say); not retried here."""
        group, version, plural = OWNER_RESOURCES[kind]
        response = await self._call(
            f"patch {plural}.{group} {namespace}/{name}",
            lambda: self._custom.patch_namespaced_custom_object(
                group,
                version,
                namespace,
                plural,
                name,
                patch,
                _content_type="application/merge-patch+json",
                **self._opts(),
            ),
        )
        return dict(json_body(response))

    async def wait_deployment(
        self, namespace: str, name: str, done: Callable[[Obj], bool], wait_seconds: float
    ) -> Obj:
        """Watch one Deployment (as kubectl rollout status does) until ``done`` or time is up."""
        deadline = time.monotonic() + wait_seconds
        latest = await self.get_deployment(namespace, name)
        while not done(latest):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            rv = str(latest["metadata"]["resourceVersion"])
            seen: Obj | None = await self._call(
                f"watch deployment {namespace}/{name}",
                partial(self._watch_one, namespace, name, rv, remaining, done),
            )
            latest = seen or await self.get_deployment(namespace, name)
        return latest

    def _watch_one(
        self, namespace: str, name: str, rv: str, left: float, done: Callable[[Obj], bool]
    ) -> Obj | None:
        seconds = max(1, min(int(left), int(self._timeout)))
        last = None
        for event in watch_events(
            self._apps.list_namespaced_deployment,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=rv,
            timeout_seconds=seconds,
            _request_timeout=(3, seconds + 5),
        ):
            if event["type"] in ("ADDED", "MODIFIED"):
                last = event["object"]
                if done(last):
                    break
        return last

    async def record_event(
        self, deployment: Obj, *, reason: str, note: str, warning: bool = False
    ) -> None:
        meta = deployment["metadata"]
        now = datetime.now(UTC)
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.rollbackd.{now.strftime('%Y%m%d%H%M%S%f')}",
                "namespace": meta["namespace"],
            },
            "eventTime": micro_time(now),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self._instance,
            "action": "Rollback",
            "reason": reason,
            "regarding": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "note": (f"cluster {self._cluster}: {note}" if self._cluster else note)[:1024],
            "type": "Warning" if warning else "Normal",
        }
        await self._call(
            f"create event for {meta['namespace']}/{meta['name']}",
            lambda: self._events.create_namespaced_event(
                meta["namespace"], cast(Any, body), **self._opts()
            ),
        )
