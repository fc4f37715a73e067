"""The Kubernetes API misbehaving: exactly one rollback or none, a clear error, no crash."""

from __future__ import annotations

import asyncio
import re

from rollbackd.rollbacks.execute import Outcome
from rollbackd.rollbacks.kubernetes import DeploymentCache, api_client
from rollbackd.settings import KubernetesSettings
from rollbackd.testing.kube import Fault, seed
from rollbackd.testing.sandbox import wait_until
from tests.conftest import Kube
from tests.integration.test_rollbacks import ENABLED, executor, image, request, three_revisions

PATCH = re.compile("/deployments/web$")


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
        watches = len([r for r in kube.server.requests if r.query.get("watch") == "true"])
        kube.server.faults.cut_watches = 1  # the open stream is cut mid-way
        kube.server.faults.injected.append(Fault("GET", re.compile("/deployments$"), 0, times=2))
        seed.set_image(kube.api, "demo", "web", "nginx:2.0")
        assert wait_until(lambda: _image(cache) == "nginx:2.0")
        assert kube.server.faults.cut_watches == 0
        assert len([r for r in kube.server.requests if r.query.get("watch") == "true"]) > watches
        assert cache.lists == 1  # resumed from its resourceVersion: no LIST
        kube.server.faults.expire_watches = True
        assert wait_until(lambda: cache.lists >= 2)
        kube.server.faults.expire_watches = False
        seed.set_image(kube.api, "demo", "web", "nginx:3.0")
        assert wait_until(lambda: _image(cache) == "nginx:3.0")
    finally:
        cache.stop()


def _image(cache: DeploymentCache) -> str:
    deployment = cache.get("demo", "web")
    if deployment is None:
        return ""
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])
