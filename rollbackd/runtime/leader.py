"""Edge: leader election on a ``coordination.k8s.io/v1`` Lease, client-go's algorithm.

Every ``retry_period`` (while not leading, jittered up to 2.2x as client-go's
``JitterUntil`` does) the elector renews or reads the Lease:

0. leading: write the Lease as this replica last wrote it, on that write's
   resourceVersion, with a new ``renewTime`` (one request a round); only when that write
   fails (409: someone else wrote; or any error) does the round go on to read it;
1. missing: create it holding it, and lead;
2. held by another and observed unchanged for less than ``lease_duration`` (measured on the
   local clock from when this replica last saw the record change, stamped after the read
   returned, never from the record's ``renewTime``, so neither clock skew between nodes nor
   a slow answer shortens another's Lease): not leader;
3. otherwise write it with this identity and a new ``renewTime`` (keeping ``acquireTime`` and
   ``leaseTransitions`` when already leading); the write carries the resourceVersion read,
   so of two contenders one gets 409 and loses the round.

A leader that cannot renew within ``renew_deadline`` stops leading. There is no fencing in
the Lease itself, so ``is_leader`` also requires the last successful renewal to be younger
than ``renew_deadline``, counted from the *start* of the round that renewed (the write may
have landed at any moment of a slow round; others count from when they saw it): a leader
frozen past its lease, or whose answers come back late, finds itself not leading before
any write. On shutdown the Lease is released (empty holder, ``leaseDurationSeconds: 1``) so a
standby takes over at once.

``inherited`` tells whether the Lease this replica acquired was renewed within the last
``RECENT`` seconds by another holder (or released by one): that leader may still have spent
DingTalk's minute, so the new one speaks conservatively at first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rollbackd.errors import KubeError
from rollbackd.model import Obj
from rollbackd.rollbacks.kubernetes import kube_error, micro_time
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import LEASE_JITTER, LeaderElectionSettings

log = get_logger(__name__)


RELEASE_SECONDS = 5.0
"""The release's bound, in a shutdown."""
RECENT = 60.0
"""Seconds within which a previous holder's renewal counts as recent (DingTalk's window)."""


def _renewed_within(renew_time: object, now: datetime, seconds: float) -> bool:
    """Whether a Lease's ``renewTime`` is within ``seconds`` of ``now`` (unreadable: yes)."""
    if not renew_time:
        return False
    try:
        renewed = datetime.fromisoformat(str(renew_time).replace("Z", "+00:00"))
    except ValueError:
        return True  # cannot tell: assume the worst
    return abs((now - renewed).total_seconds()) < seconds


def default_identity() -> str:
    """``<hostname>_<uuid>``, as kube-controller-manager names itself."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class LeaderElector:
    """Holds, renews and releases one Lease."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: LeaderElectionSettings,
        *,
        identity: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] = lambda leading: None,
    ) -> None:
        self._api = client.CoordinationV1Api(api)
        self._settings = settings
        self.identity = identity or default_identity()
        self._monotonic = monotonic
        self._on_change = on_change
        self._leading = False
        self._last_renew = 0.0
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._acquire_time = ""
        self._transitions = 0
        self._written: Obj | None = None  # the Lease as this replica's last write left it
        self.inherited = False

    @property
    def is_leader(self) -> bool:
        """Leading, with a renewal younger than the renew deadline (checked before writes)."""
        fresh = self._monotonic() - self._last_renew < self._settings.renew_deadline.total_seconds()
        return self._leading and fresh

    def _set_leading(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            log.info(
                "leadership_changed",
                leader=leading,
                identity=self.identity,
                lease=f"{self._settings.namespace}/{self._settings.lease_name}",
            )
            self._on_change(leading)

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire and renew until ``stop`` is set."""
        retry = self._settings.retry_period.total_seconds()
        while not stop.is_set():
            started = self._monotonic()
            try:
                ok = await asyncio.wait_for(
                    asyncio.to_thread(self._try_acquire_or_renew),
                    self._settings.renew_deadline.total_seconds(),
                )
            except (TimeoutError, KubeError) as exc:
                ok = False
                log.warning("lease_round_failed", error=str(exc) or "timeout")
            now = self._monotonic()
            deadline = self._settings.renew_deadline.total_seconds()
            if ok:
                self._last_renew = started
                self._set_leading(True)
            elif self._leading and now - self._last_renew >= deadline:
                self._set_leading(False)  # could not renew in time: stop leading
            jitter = 1 + random.random() * LEASE_JITTER  # noqa: S311 - spreading, not security
            wait = retry if self._leading else retry * jitter
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    def _read(self) -> Obj | None:
        namespace, name = self._settings.namespace, self._settings.lease_name
        try:
            response: Any = self._api.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=(3, 5)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise kube_error(exc, what="read lease") from exc
        except Exception as exc:
            raise kube_error(exc, what="read lease") from exc
        return dict(json.loads(response.data))

    def _renew_optimistically(self, now_wall: datetime) -> bool:
        """Renew on the resourceVersion of this replica's last write, without reading."""
        written = self._written
        if not self._leading or written is None:
            return False
        lease = {**written, "spec": {**written["spec"], "renewTime": micro_time(now_wall)}}
        try:
            return self._write(lambda: self._replace(lease))
        except KubeError as exc:  # the round reads the Lease and tries again
            log.debug("lease_optimistic_renew_failed", code=exc.code)
            return False

    def _replace(self, lease: Obj) -> Any:
        return self._api.replace_namespaced_lease(
            self._settings.lease_name,
            self._settings.namespace,
            cast(Any, lease),
            _preload_content=False,
            _request_timeout=(3, 5),
        )

    def _try_acquire_or_renew(self) -> bool:
        settings = self._settings
        now_wall = datetime.now(UTC)
        if self._renew_optimistically(now_wall):
            return True
        self._written = None
        duration = int(settings.lease_duration.total_seconds())
        lease = self._read()
        now = self._monotonic()  # after the read: the record was current at least until now
        if lease is None:
            self.inherited = False
            held = {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": duration,
                "acquireTime": micro_time(now_wall),
                "renewTime": micro_time(now_wall),
                "leaseTransitions": 0,
            }
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": settings.lease_name, "namespace": settings.namespace},
                "spec": held,
            }
            return self._write(
                lambda: self._api.create_namespaced_lease(
                    settings.namespace,
                    cast(Any, body),
                    _preload_content=False,
                    _request_timeout=(3, 5),
                )
            )
        spec: Obj = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("acquireTime"),
            spec.get("leaseTransitions"),
            spec.get("leaseDurationSeconds"),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.get("holderIdentity") or ""
        held_for = int(spec.get("leaseDurationSeconds") or duration)
        if holder and holder != self.identity and self._observed_at + held_for > now:
            return False
        leading = holder == self.identity
        if not leading:
            self.inherited = _renewed_within(spec.get("renewTime"), now_wall, RECENT)
            self._acquire_time = micro_time(now_wall)
            self._transitions = int(spec.get("leaseTransitions") or 0) + 1
        else:
            self._acquire_time = spec.get("acquireTime") or micro_time(now_wall)
            self._transitions = int(spec.get("leaseTransitions") or 0)
        lease["spec"] = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": duration,
            "acquireTime": self._acquire_time,
            "renewTime": micro_time(now_wall),
            "leaseTransitions": self._transitions,
        }
        return self._write(lambda: self._replace(lease))

    def _write(self, call: Callable[[], Any]) -> bool:
        """Run one write of the Lease; keep what it wrote for the next optimistic renewal."""
        try:
            response = call()
        except ApiException as exc:
            if exc.status == 409:
                return False  # another replica wrote first: it wins this round
            raise kube_error(exc, what="write lease") from exc
        except Exception as exc:
            raise kube_error(exc, what="write lease") from exc
        try:
            written = json.loads(response.data)
        except (AttributeError, TypeError, ValueError):
            written = None  # the next round reads the Lease first
        self._written = written if isinstance(written, dict) and "spec" in written else None
        return True

    async def release(self) -> None:
        """Give the Lease up so a standby can take over immediately."""
        if not self._leading:
            return
        self._set_leading(False)

        def release() -> None:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
            self._write(lambda: self._replace(lease))
            self._written = None

        try:
            await asyncio.wait_for(asyncio.to_thread(release), RELEASE_SECONDS)
        except (TimeoutError, KubeError) as exc:
            log.warning("lease_release_failed", error=str(exc) or "timeout")
        else:
            log.info("lease_released", identity=self.identity)


LEADER_LABEL = "rollbackd.io/leader"
"""Set to "true" on the leader's own pod: the webhook Service selects it."""


class LeaderLabel:
    """Keeps ``rollbackd.io/leader`` on this replica's pod in line with leadership.

    Every replica is ready once its caches are synced (so a PodDisruptionBudget can let a
    drain evict the leader); Alertmanager's webhooks still reach only the leader, through
    a Service that selects this label. The pod is named by the downward API (``POD_NAME``,
    ``POD_NAMESPACE``); outside a pod there is nothing to label. A failed write is tried
    again at the next ``apply`` and logged once per run of failures (a missing RBAC rule
    for pods would otherwise log every second).
    """

    def __init__(self, api: client.ApiClient, *, namespace: str, name: str) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace, self._name = namespace, name
        self._applied: bool | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return bool(self._namespace and self._name)

    async def apply(self, leading: bool) -> None:
        if not self.enabled or self._applied is leading:
            return
        body = {"metadata": {"labels": {LEADER_LABEL: "true" if leading else None}}}
        try:
            await asyncio.wait_for(
                asyncio.to_thread(
                    self._core.patch_namespaced_pod,
                    self._name,
                    self._namespace,
                    body,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                    _request_timeout=(3, 5),
                ),
                8,
            )
        except Exception as exc:  # classified, logged, tried again
            if not self._failing:
                error = kube_error(exc, what=f"label pod {self._namespace}/{self._name}")
                log.warning("leader_label_failed", code=error.code, error=error.message)
            self._failing = True
            return
        self._applied, self._failing = leading, False
        log.info("leader_label_set", pod=f"{self._namespace}/{self._name}", leader=leading)
