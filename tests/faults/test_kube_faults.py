"""The Kubernetes API misbehaving: exactly one rollback or none, a clear error, no crash."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from rollbackd.errors import KubeNotFound, KubeThrottled
from rollbackd.model import Incident, Target
from rollbackd.rollbacks.informer import DeploymentCache
from rollbackd.rollbacks.kubernetes import KubernetesWorkloads, api_client
from rollbackd.rollbacks.results import Outcome
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.incidents import IncidentRunner
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.runtime.wiring import Edges
from rollbackd.settings import KubernetesSettings, Settings
from rollbackd.state.changes import ChangeTimes
from rollbackd.testing.kube import Fault, seed
from rollbackd.testing.sandbox import wait_until
from tests.conftest import Kube
from tests.faults.test_notification_faults import firing
from tests.integration.test_rollbacks import ENABLED, executor, image, request, three_revisions

PATCH = re.compile("/deployments/web$")
Obj = dict[str, Any]


def rollback_patches(kube: Kube) -> list[object]:
    return [
        r
        for r in kube.server.requests
        if r.method == "PATCH"
        and r.status == 200
        and r.content_type.startswith("application/json-patch+json")
    ]


def test_one_500_on_the_patch_is_retried_and_rolls_back_once(kube: Kube) -> None:
    """Case 7: a single 500 answering the patch no longer abandons the rollback: it is
    retried with backoff and the Deployment is rolled back exactly once."""
    three_revisions(kube)
    kube.server.faults.injected.append(Fault("PATCH", PATCH, 500))
    run, _ = executor(kube)
    result = asyncio.run(run.execute(request()))
    assert (result.outcome, result.code) == (Outcome.SUCCEEDED, "ok")
    assert image(kube) == "nginx:2.0"
    assert len(rollback_patches(kube)) == 1


def test_500_that_persists_fails_cleanly_without_rolling_back(kube: Kube) -> None:
    """A patch refused with 500 for longer than wait_for_rollout: the rollback fails with
    its code and says nothing was written; nothing changed."""
    three_revisions(kube)
    kube.server.faults.injected.append(Fault("PATCH", PATCH, 500, times=1000))
    run, _ = executor(kube, wait_for_rollout="1s")
    result = asyncio.run(run.execute(request()))
    assert (result.outcome, result.code) == (Outcome.FAILED, "ERR_KUBE_FAILED")
    assert not result.written
    assert "nothing was written" in result.message
    assert image(kube) == "nginx:3.0"
    assert rollback_patches(kube) == []


def test_timeout_and_dropped_connection_are_retried(kube: Kube) -> None:
    """Case 7: an API server slower than the timeout until the retry deadline fails with
    ERR_KUBE_TIMEOUT; a connection cut once before the answer is retried: exactly one
    rollback lands."""
    three_revisions(kube)
    run, workloads = executor(kube, wait_for_rollout="1s")
    workloads._timeout = 0.5
    kube.server.faults.latency = 1.5
    slow = asyncio.run(run.execute(request()))
    assert (slow.outcome, slow.code) == (Outcome.FAILED, "ERR_KUBE_TIMEOUT")
    kube.server.faults.latency = 0
    workloads._timeout = 10.0
    assert image(kube) == "nginx:3.0"
    kube.server.faults.injected.append(Fault("PATCH", PATCH, 0))  # dropped once
    done = asyncio.run(run.execute(request()))
    assert done.outcome is Outcome.SUCCEEDED
    assert len(rollback_patches(kube)) == 1
    assert image(kube) == "nginx:2.0"


def test_missing_rbac_names_the_permission(kube: Kube) -> None:
    """403 from missing RBAC: a clear message naming the verb and resource to grant."""
    three_revisions(kube)
    kube.server.faults.forbidden.add(("patch", "deployments"))
    run, _ = executor(kube)
    result = asyncio.run(run.execute(request()))
    assert (result.outcome, result.code) == (Outcome.FAILED, "ERR_KUBE_FORBIDDEN")
    assert 'cannot patch resource "deployments" in API group "apps"' in result.message
    assert "grant this verb" in result.message


def test_watch_survives_410_and_a_dropped_stream(kube: Kube) -> None:
    """The Deployment cache relists after 410 Gone and resumes after a cut stream, and keeps
    following changes: it never dies and never needs a restart."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0", labels=ENABLED)
    settings = KubernetesSettings(kubeconfig=str(kube.kubeconfig))
    cache = DeploymentCache(api_client(settings), settings, watch_seconds=1)
    cache.start()
    try:
        assert wait_until(lambda: cache.synced)
        opened = watches(kube)
        kube.server.faults.cut_watches = 1  # the open stream is cut mid-way
        kube.server.faults.injected.append(Fault("GET", re.compile("/deployments$"), 0, times=2))
        seed.set_image(kube.api, "demo", "web", "nginx:2.0")
        assert wait_until(lambda: _image(cache) == "nginx:2.0")
        assert kube.server.faults.cut_watches == 0
        assert watches(kube) > opened
        assert cache.lists == 1  # resumed from its resourceVersion: no LIST
        kube.server.faults.expire_watches = True
        assert wait_until(lambda: cache.lists >= 2)
        kube.server.faults.expire_watches = False
        seed.set_image(kube.api, "demo", "web", "nginx:3.0")
        assert wait_until(lambda: _image(cache) == "nginx:3.0")
    finally:
        cache.stop()


def _cache(
    kube: Kube, **kwargs: Any
) -> tuple[DeploymentCache, list[tuple[Obj | None, Obj | None]]]:
    """A started informer over demo/, recording every change it hands on."""
    changes: list[tuple[Obj | None, Obj | None]] = []
    settings = KubernetesSettings(kubeconfig=str(kube.kubeconfig))
    cache = DeploymentCache(
        api_client(settings), settings, on_change=lambda o, n: changes.append((o, n)), **kwargs
    )
    cache.start()
    return cache, changes


def _rv(obj: Obj | None) -> int:
    return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)


def watches(kube: Kube) -> int:
    return len([r for r in kube.server.requests if r.query.get("watch") == "true"])


def test_a_cut_stream_resumes_after_the_last_event_it_applied(kube: Kube) -> None:
    """Finding 1: the watch is cut after delivering three releases' events. It resumes from
    the last event it applied: nothing is handed on twice and the cache never steps back
    to an older state (the old informer resumed from where the stream began, replaying
    every event of the stream again)."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0", labels=ENABLED)
    cache, changes = _cache(kube, watch_seconds=30)
    try:
        assert wait_until(lambda: cache.synced)
        for version in (2, 3, 4):
            seed.set_image(kube.api, "demo", "web", f"nginx:{version}.0")
        assert wait_until(lambda: _image(cache) == "nginx:4.0")
        opened = watches(kube)
        kube.server.faults.cut_watches = 1
        seed.set_image(kube.api, "demo", "web", "nginx:5.0")  # wakes the stream: it is cut
        assert wait_until(lambda: watches(kube) > opened)
        seed.set_image(kube.api, "demo", "web", "nginx:6.0")
        assert wait_until(lambda: _image(cache) == "nginx:6.0")
    finally:
        cache.stop()
    seen = [_rv(new) for _, new in changes]
    assert len(seen) == len(set(seen)), "an event was handed on twice"
    assert seen == sorted(seen), "the cache stepped back to an older state"
    assert all(_rv(old) < _rv(new) for old, new in changes if old is not None)
    assert cache.lists == 1  # resumed: no LIST


def test_synced_turns_false_at_a_gap_and_true_when_the_watch_is_open_again(kube: Kube) -> None:
    """Finding 2: a cut stream whose reconnects fail for a while, then a 410 Gone, each make
    the cache unsynced until its watch is open again (after a relist, for the 410); the
    decisions that read it wait meanwhile. The old cache stayed "synced" throughout."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0", labels=ENABLED)
    states: list[bool] = []
    cache, _ = _cache(kube, watch_seconds=30, on_sync=states.append)
    try:
        assert wait_until(lambda: cache.synced)
        reconnect = re.compile(r"/deployments\?.*watch=true")
        kube.server.faults.injected.append(Fault("GET", reconnect, 503, times=3))
        kube.server.faults.cut_watches = 1
        seed.set_image(kube.api, "demo", "web", "nginx:2.0")
        assert wait_until(lambda: not cache.synced)
        assert wait_until(lambda: cache.synced, 15)  # three failed reconnects, then open
        assert _image(cache) == "nginx:2.0"
        assert cache.lists == 1
        kube.server.faults.expire_watches = True  # the open stream ends with 410 Gone
        seed.set_image(kube.api, "demo", "web", "nginx:3.0")
        assert wait_until(lambda: cache.lists >= 2)
        kube.server.faults.expire_watches = False
        assert wait_until(lambda: cache.synced, 15)
        assert _image(cache) == "nginx:3.0"
    finally:
        cache.stop()
    assert states[:3] == [True, False, True]  # the cut and its failed reconnects
    assert states[3] is False
    assert states[-1] is True
    relist = next(r for r in kube.server.requests if r.query.get("resourceVersionMatch"))
    assert relist.query["resourceVersionMatch"] == "NotOlderThan"  # never older than seen


def test_a_list_comes_in_pages_and_starts_again_when_its_token_expires(kube: Kube) -> None:
    """LIST with limit/continue as the real API pages it: seven Deployments in pages of
    three; a continue token that expired (410) starts the list again from the top."""
    seed.create_namespace(kube.api, "demo")
    for index in range(7):
        seed.create_deployment(kube.api, "demo", f"web-{index}", image="nginx:1.0", labels=ENABLED)
    kube.server.faults.expire_continues = True
    cache, _ = _cache(kube, page_size=3)
    try:
        assert wait_until(lambda: cache.lists >= 2)
        kube.server.faults.expire_continues = False
        assert wait_until(lambda: cache.synced, 15)
    finally:
        cache.stop()
    assert len(cache.all()) == 7
    pages = [r for r in kube.server.requests if r.query.get("limit") == "3"]
    assert [bool(r.query.get("continue")) for r in pages][-3:] == [False, True, True]
    assert [r.status for r in pages][:2] == [200, 410]


def test_reads_are_retried_after_429_and_5xx_with_retry_after(kube: Kube) -> None:
    """Finding 3: an idempotent read answered 429 (Retry-After: 2) and then 503 is retried
    with the one policy: it waits at least what the server asked, then succeeds; a 404 is
    not retried. The old reads failed at the first 5xx or 429."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0", labels=ENABLED)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    settings = KubernetesSettings(kubeconfig=str(kube.kubeconfig))
    workloads = KubernetesWorkloads(api_client(settings), sleep=sleep)
    path = re.compile("/deployments/web$")
    kube.server.faults.injected += [
        Fault("GET", path, 429, retry_after=2),
        Fault("GET", path, 503),
    ]
    deployment = asyncio.run(workloads.get_deployment("demo", "web"))
    assert deployment["metadata"]["name"] == "web"
    assert len(waits) == 2
    assert waits[0] >= 2.0
    with pytest.raises(KubeNotFound):
        asyncio.run(workloads.get_deployment("demo", "nosuch"))
    assert len(waits) == 2
    kube.server.faults.injected.append(Fault("GET", path, 429, retry_after=3, times=10))
    with pytest.raises(KubeThrottled) as throttled:
        asyncio.run(workloads.get_deployment("demo", "web"))
    assert throttled.value.retry_after == 3.0  # past the read deadline: handed to the caller


def _image(cache: DeploymentCache) -> str:
    deployment = cache.get("demo", "web")
    if deployment is None:
        return ""
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


class Told:
    """Notifications, as the incident core hands them over (nothing is sent here)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def notify(self, incident: Incident) -> list[str]:
        self.events.append(str(incident.event))
        return []


def test_an_incident_waits_out_a_cache_gap_and_a_relist_does_not_re_date_its_change(
    kube: Kube,
) -> None:
    """During an incident the informer's stream is cut and cannot reconnect for a while:
    the decision is deferred (decision_deferred, cache_not_synced), nothing is patched.
    Then a 410 forces a relist: the release's change keeps the time it was first seen, and
    once synced the decision is made on it and the rollback lands once."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0", labels=ENABLED)
    settings = Settings.model_validate({"kubernetes": {"kubeconfig": str(kube.kubeconfig)}})
    edges = Edges(settings)
    changes = ChangeTimes()
    cache = edges.deployments(on_change=lambda o, n: changes.observe(o, n, now=datetime.now(UTC)))
    telemetry = Telemetry()
    incidents = IncidentRunner(
        settings,
        deployments=cache,
        workloads=edges.workloads,
        events=edges.workloads,
        executor=edges.executor(),
        notifications=Told(),
        telemetry=telemetry,
        clock=SystemClock(),
        changes=changes,
    )
    target = Target("demo", "web")

    def changed_at() -> datetime | None:
        deployment = cache.get("demo", "web")
        return changes.changed_at(deployment) if deployment else None

    async def scenario() -> None:
        cache.start()
        assert wait_until(lambda: cache.synced)
        seed.set_image(kube.api, "demo", "web", "nginx:2.0")
        assert wait_until(lambda: changed_at() is not None)
        first_seen = changed_at()
        reconnect = re.compile(r"/deployments\?.*watch=true")
        kube.server.faults.injected.append(Fault("GET", reconnect, 503, times=1000))
        kube.server.faults.cut_watches = 1
        seed.patch(kube.api, "demo", "web", {"metadata": {"annotations": {"x": "1"}}})
        assert wait_until(lambda: not cache.synced)
        await incidents.lead(True)
        await incidents.handle([firing(target)])
        assert await incidents.idle(10)
        deferred = {"decision": "deferred", "reason": "cache_not_synced"}
        assert telemetry.registry.get_sample_value("rollbackd_decisions_total", deferred) == 1
        assert rollback_patches(kube) == []
        kube.server.faults.injected.clear()
        kube.server.faults.expire_watches = True  # the resumed watch is too old: relist
        assert wait_until(lambda: cache.lists >= 2, 15)
        kube.server.faults.expire_watches = False
        assert wait_until(lambda: cache.synced, 15)
        assert changed_at() == first_seen  # the relist did not re-date the release
        for _ in range(50):  # the core tries the assessment again, on the next signals
            await incidents.handle([firing(target)])
            if rollback_patches(kube):
                break
            await asyncio.sleep(0.1)
        assert await incidents.idle(15)

    try:
        asyncio.run(scenario())
    finally:
        cache.stop()
        edges.close()
    assert len(rollback_patches(kube)) == 1
    assert image(kube) == "nginx:1.0"
