"""The rollback executor and the rollbackd commands over real HTTP against the fake API server."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from rollbackd.incidents.decide import Choice, Decision, budget_used, decide
from rollbackd.model import DecisionReason, Target
from rollbackd.rollbacks.cache_shape import LAST_APPLIED
from rollbackd.rollbacks.execute import RollbackExecutor
from rollbackd.rollbacks.informer import DeploymentCache
from rollbackd.rollbacks.kubernetes import KubernetesWorkloads, api_client
from rollbackd.rollbacks.plan import selector_of, situation_of
from rollbackd.rollbacks.results import Outcome, ResultReason, RollbackRequest
from rollbackd.runtime.wiring import Edges
from rollbackd.settings import KubernetesSettings, RollbackSettings, Settings
from rollbackd.state.annotations import RECENT_ROLLBACKS, read_state
from rollbackd.testing.kube import Cluster, Fault, Hook, seed
from rollbackd.testing.sandbox import wait_until
from tests.conftest import Kube
from tests.kube_fixtures import FIXTURES

pytestmark = pytest.mark.integration

WEB = Target("demo", "web")
ENABLED = {"rollbackd.io/enabled": "true"}


def three_revisions(kube: Kube, name: str = "web", **kwargs: Any) -> None:
    """nginx:1.0, then 2.0, then 3.0: revisions 1, 2, 3, as in the captures."""
    if "demo" not in [ns.metadata.name for ns in _namespaces(kube)]:
        seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", name, image="nginx:1.0", labels=ENABLED, **kwargs)
    seed.set_image(kube.api, "demo", name, "nginx:2.0")
    seed.set_image(kube.api, "demo", name, "nginx:3.0")


def _namespaces(kube: Kube) -> list[Any]:
    return list(client.CoreV1Api(kube.api).list_namespace().items)


def executor(kube: Kube, **settings: Any) -> tuple[RollbackExecutor, KubernetesWorkloads]:
    """A fresh executor, as a freshly started process builds it (the composition root)."""
    edges = Edges(
        Settings.model_validate(
            {
                "kubernetes": {"kubeconfig": str(kube.kubeconfig)},
                "rollback": {"wait_for_rollout": "10s", **settings},
            }
        )
    )
    return edges.executor(), edges.workloads


def request(**fields: Any) -> RollbackRequest:
    base: dict[str, Any] = {
        "target": WEB,
        "incident": "rb-test-1",
        "rule": "errors",
        "value": 0.31,
        "threshold": 0.05,
    }
    return RollbackRequest(**{**base, **fields})


def image(kube: Kube, name: str = "web") -> str:
    deployment = seed.read(kube.api, "demo", name)
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def replicasets(kube: Kube, name: str = "web") -> dict[int, dict[str, Any]]:
    sets = kube.server.cluster.list_objects("replicasets", "demo")
    return {
        int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]): rs
        for rs in sets
        if rs["metadata"]["labels"].get("app") == name
    }


def patches_after(kube: Kube, start: int) -> int:
    return len([r for r in kube.server.requests[start:] if r.method == "PATCH"])


def events(kube: Kube) -> list[dict[str, Any]]:
    return kube.server.cluster.list_objects("events", "demo")


def test_rollback_returns_to_revision_2_as_revision_4(kube: Kube) -> None:
    """Revisions 1, 2, 3 then a rollback: revision 2's template as revision 4, history "2"."""
    three_revisions(kube)
    start = len(kube.server.requests)
    run, _ = executor(kube)
    result = asyncio.run(run.execute(request()))
    assert result.outcome is Outcome.SUCCEEDED, result.message
    assert (result.from_revision, result.to_revision) == (3, 2)
    assert image(kube) == "nginx:2.0"
    deployment = seed.read(kube.api, "demo", "web")
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
    rs = replicasets(kube)[4]
    assert rs["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2.0"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "2"
    last = json.loads(deployment["metadata"]["annotations"]["rollbackd.io/last-rollback"])
    assert last["incident"] == "rb-test-1"
    assert (last["from_revision"], last["to_revision"]) == (3, 2)
    assert (last["rule"], last["value"], last["threshold"], last["dry_run"]) == (
        "errors",
        0.31,
        0.05,
        False,
    )
    (event,) = [e for e in events(kube) if e["reason"] == "RollbackdRollback"]
    assert "incident rb-test-1" in event["message"]
    assert "revision 3 (nginx:3.0) to revision 2 (nginx:2.0)" in event["message"]
    assert "value 0.31 threshold 0.05" in event["message"]
    assert patches_after(kube, start) == 1  # the rollback and its record: one write


def test_second_rollback_never_returns_to_the_template_it_left(kube: Kube) -> None:
    """After rolling back from 3.0, another rollback goes to 1.0, never back to 3.0."""
    three_revisions(kube)
    run, _ = executor(kube)
    asyncio.run(run.execute(request()))
    second = asyncio.run(run.execute(request(incident="rb-test-2")))
    assert second.outcome is Outcome.SUCCEEDED
    assert second.to_images == ("nginx:1.0",)
    assert image(kube) == "nginx:1.0"
    bad = read_state(seed.read(kube.api, "demo", "web")["metadata"]["annotations"]).bad_templates
    assert len(bad) == 2


def test_status_written_while_patching_does_not_fail_the_rollback(kube: Kube) -> None:
    """kube-controller-manager writes a Deployment's status all through a rollout (the
    fake's status writer here, every 5 ms, racing every read and patch): the patch's
    precondition is the generation, which status writes leave alone, so the rollback lands
    with one patch instead of giving up with ERR_KUBE_CONFLICT."""
    three_revisions(kube)
    stop = kube.server.churn_status("demo", "web", every=0.005)
    try:
        start = len(kube.server.requests)
        run, _ = executor(kube)
        result = asyncio.run(run.execute(request()))
    finally:
        stop()
    assert (result.outcome, result.code) == (Outcome.SUCCEEDED, "ok")
    assert image(kube) == "nginx:2.0"
    assert patches_after(kube, start) == 1


def test_precondition_retries_when_annotations_moved(kube: Kube) -> None:
    """Another writer's annotation lands between read and patch: the generation moved, the
    patch's test fails, rollbackd reads again and succeeds, keeping nothing it did not see."""
    three_revisions(kube)

    def annotate(cluster: Cluster) -> None:
        deployment = cluster.get("deployments", "demo", "web")
        assert deployment is not None
        deployment["metadata"]["annotations"]["example.com/touched"] = "yes"
        deployment["metadata"]["generation"] += 1
        cluster.put("deployments", "demo", deployment)

    kube.server.faults.hooks.append(Hook("PATCH", re.compile("/deployments/web$"), annotate))
    start = len(kube.server.requests)
    run, _ = executor(kube)
    result = asyncio.run(run.execute(request()))
    assert result.outcome is Outcome.SUCCEEDED
    assert image(kube) == "nginx:2.0"
    assert patches_after(kube, start) == 2


def test_newer_deploy_between_decision_and_patch_is_not_overwritten(kube: Kube) -> None:
    """A deploy of nginx:4.0 lands just before the patch: it stays, and the rollback ends
    with reason newer_change; nothing decides again on a picture that may lag."""
    three_revisions(kube)

    def newer_deploy(cluster: Cluster) -> None:
        deployment = cluster.get("deployments", "demo", "web")
        assert deployment is not None
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:4.0"
        deployment["metadata"]["generation"] += 1
        stored = cluster.put("deployments", "demo", deployment)
        cluster.sync_deployment("demo", stored["metadata"]["name"])

    kube.server.faults.hooks.append(Hook("PATCH", re.compile("/deployments/web$"), newer_deploy))
    run, workloads = executor(kube)
    first = asyncio.run(workloads.get_deployment("demo", "web"))
    bad_hash = situation_of(first, kube.server.cluster.list_objects("replicasets", "demo"))
    result = asyncio.run(run.execute(request(expected_hash=bad_hash.current_hash)))
    assert image(kube) == "nginx:4.0"
    assert result.outcome is Outcome.SKIPPED
    assert result.code == ResultReason.NEWER_CHANGE
    assert not result.written
    assert any(e["reason"] == "RollbackdSkipped" for e in events(kube))


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("single", "no_history"),
        ("paused", "paused"),
    ],
)
def test_nothing_to_do_is_skipped_with_a_reason(kube: Kube, setup: str, reason: str) -> None:
    """One revision only, or a paused Deployment: skipped, said in an Event, nothing patched."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0", labels=ENABLED)
    if setup == "paused":
        seed.set_image(kube.api, "demo", "web", "nginx:2.0")
        seed.patch(kube.api, "demo", "web", {"spec": {"paused": True}})
    start = len(kube.server.requests)
    run, _ = executor(kube)
    result = asyncio.run(run.execute(request()))
    assert (result.outcome, result.code) == (Outcome.SKIPPED, reason)
    assert patches_after(kube, start) == 0
    (event,) = [e for e in events(kube) if e["reason"] == "RollbackdSkipped"]
    assert reason in event["message"]


def test_dry_run_reads_everything_and_writes_nothing(kube: Kube) -> None:
    """Dry-run plans the real rollback and says DRY-RUN; the cluster sees only reads."""
    three_revisions(kube)
    already = len(kube.server.requests)
    run, _ = executor(kube)
    result = asyncio.run(run.execute(request(dry_run=True)))
    assert result.outcome is Outcome.DRY_RUN
    assert result.message.startswith("DRY-RUN: would roll back demo/web from revision 3")
    assert result.patch  # the patch it would have sent
    methods = {r.method for r in kube.server.requests[already:]}
    assert methods == {"GET"}
    assert image(kube) == "nginx:3.0"


def test_rollout_that_never_finishes_is_a_failure(kube: Kube) -> None:
    """When the rolled-back Deployment exceeds its progress deadline, the result says so."""
    three_revisions(kube)
    kube.server.cluster.default_rollout = "deadline_exceeded"
    run, _ = executor(kube, wait_for_rollout="3s")
    result = asyncio.run(run.execute(request()))
    assert (result.outcome, result.code) == (Outcome.FAILED, "ERR_ROLLBACK_NOT_AVAILABLE")
    assert "exceeded its progress deadline" in result.message
    assert any(e["reason"] == "RollbackdRollbackFailed" for e in events(kube))


def test_cooldown_and_budget_hold_across_a_restart(kube: Kube) -> None:
    """What one process wrote, a new process reads back: cooldown, then the cluster budget."""
    three_revisions(kube, "web")
    three_revisions(kube, "api")
    run, _ = executor(kube)
    asyncio.run(run.execute(request()))
    del run  # the process ends

    _, workloads = executor(kube)  # a new process: nothing in memory
    settings = RollbackSettings.model_validate({"budget": {"max": 1, "per": "1h"}})
    now = datetime.now(UTC)

    async def decision_for(name: str) -> Decision:
        deployment = await workloads.get_deployment("demo", name)
        sets = await workloads.list_replicasets("demo", selector_of(deployment))
        every = [
            read_state(d["metadata"].get("annotations") or {})
            for d in (
                await workloads.get_deployment("demo", "web"),
                await workloads.get_deployment("demo", "api"),
            )
        ]
        return decide(
            situation_of(deployment, sets, observed_change=now - timedelta(minutes=1)),
            breach_since=now,
            action="rollback",
            kube=KubernetesSettings(),
            rollback=settings,
            budget_used=budget_used(every, now=now, per=settings.budget.per),
            now=now,
        )

    web = asyncio.run(decision_for("web"))
    assert (web.action, web.reason) == (Choice.NOTIFY, DecisionReason.ALREADY_ROLLED_BACK)
    api = asyncio.run(decision_for("api"))
    assert (api.action, api.reason) == (Choice.NOTIFY, DecisionReason.BUDGET_EXHAUSTED)
    deployment = seed.read(kube.api, "demo", "web")
    assert read_state(deployment["metadata"]["annotations"]).cooling_down(now)


def test_watch_cache_lists_once_and_follows_changes(kube: Kube) -> None:
    """The cache of managed Deployments lists once, then follows changes by watch alone,
    and lists again only after a 410 Gone."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0", labels=ENABLED)
    seed.create_deployment(kube.api, "demo", "other", image="nginx:1.0")
    settings = KubernetesSettings(kubeconfig=str(kube.kubeconfig))
    cache = DeploymentCache(api_client(settings), settings, watch_seconds=1)
    cache.start()
    try:
        assert wait_until(lambda: cache.synced)
        assert [d["metadata"]["name"] for d in cache.all()] == ["web"]
        seed.set_image(kube.api, "demo", "web", "nginx:2.0")
        assert wait_until(lambda: _image_of(cache.get("demo", "web")) == "nginx:2.0")
        seed.patch(kube.api, "demo", "other", {"metadata": {"labels": ENABLED}})
        assert wait_until(lambda: cache.get("demo", "other") is not None)
        assert wait_until(
            lambda: len([r for r in kube.server.requests if r.query.get("watch") == "true"]) >= 3
        )
        assert cache.lists == 1
        kube.server.faults.expire_watches = True
        assert wait_until(lambda: cache.lists >= 2)
        kube.server.faults.expire_watches = False
        seed.set_image(kube.api, "demo", "web", "nginx:3.0")
        assert wait_until(lambda: _image_of(cache.get("demo", "web")) == "nginx:3.0")
    finally:
        cache.stop()


def test_the_cache_keeps_what_rollbackd_reads_and_indexes_recent_rollbacks(kube: Kube) -> None:
    """Memory at scale: cached Deployments lose managedFields (but keep the field managers'
    names, which tell the owner) and the last-applied copy of their spec; the budget finds
    the workloads with recent rollbacks through an index that follows every change."""
    captured = json.loads((FIXTURES / "deployment-rev3.json").read_text())
    seed.create_namespace(kube.api, "demo")
    for name in ("web", "api"):
        seed.create_deployment(
            kube.api,
            "demo",
            name,
            image="nginx:1.0",
            labels=ENABLED,
            annotations={
                LAST_APPLIED: json.dumps(captured["spec"]) * 3,
                **({RECENT_ROLLBACKS: "2026-12-01T03:00:00Z"} if name == "web" else {}),
            },
        )
    cluster = kube.server.cluster
    with cluster.lock:  # as a real API server returns it: one entry per manager and operation
        stored = cluster.get("deployments", "demo", "web")
        assert stored is not None
        stored["metadata"]["managedFields"] = [
            *captured["metadata"]["managedFields"],
            {**captured["metadata"]["managedFields"][0], "manager": "argocd-controller"},
        ]
        cluster.put("deployments", "demo", stored)
    settings = KubernetesSettings(kubeconfig=str(kube.kubeconfig))
    cache = DeploymentCache(api_client(settings), settings, watch_seconds=1)
    cache.start()
    try:
        assert wait_until(lambda: cache.synced)
        web = cache.get("demo", "web")
        assert web is not None
        managers = [m["manager"] for m in captured["metadata"]["managedFields"]]
        assert web["metadata"]["managedFields"] == [
            {"manager": m} for m in dict.fromkeys([*managers, "argocd-controller"])
        ]
        assert LAST_APPLIED not in web["metadata"]["annotations"]
        assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.0"
        assert [d["metadata"]["name"] for d in cache.annotated(RECENT_ROLLBACKS)] == ["web"]
        seed.patch(kube.api, "demo", "web", {"metadata": {"annotations": {RECENT_ROLLBACKS: None}}})
        seed.patch(kube.api, "demo", "api", {"metadata": {"annotations": {RECENT_ROLLBACKS: "x"}}})
        assert wait_until(
            lambda: [d["metadata"]["name"] for d in cache.annotated(RECENT_ROLLBACKS)] == ["api"]
        )
    finally:
        cache.stop()


def _image_of(deployment: dict[str, Any] | None) -> str:
    if deployment is None:
        return ""
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def rollbackd(kube: Kube, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"kubernetes: {{kubeconfig: '{kube.kubeconfig}'}}\nrollback: {{wait_for_rollout: 10s}}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rollback_and_history_commands(kube: Kube, tmp_path: Path) -> None:
    """`rollbackd rollback` rolls back and `rollbackd history` shows what happened."""
    three_revisions(kube)
    result = rollbackd(kube, tmp_path, "rollback", "demo/web", "--reason", "bad release")
    assert result.returncode == 0, result.stderr
    assert "succeeded: rolled back demo/web from revision 3 (nginx:3.0) to revision 2" in (
        result.stdout
    )
    incident = re.search(r"incident (rb-\S+)", result.stdout)
    assert incident is not None
    listed = rollbackd(kube, tmp_path, "history", "demo/web", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["revision"]: row for row in json.loads(listed.stdout)}
    assert sorted(rows) == [1, 3, 4]
    assert rows[4]["current"] is True
    assert rows[4]["images"] == "nginx:2.0"
    assert rows[3]["known_bad"] is True
    assert rows[3]["incidents"] == f"{incident.group(1)} (from)"


def test_rollback_command_skips_opted_out_and_fails_cleanly(kube: Kube, tmp_path: Path) -> None:
    """An opted-out Deployment is skipped with its reason (exit 0); a missing one exits 1."""
    three_revisions(kube)
    seed.patch(
        kube.api, "demo", "web", {"metadata": {"annotations": {"rollbackd.io/disabled": "true"}}}
    )
    skipped = rollbackd(kube, tmp_path, "rollback", "demo/web")
    assert skipped.returncode == 0
    assert "skipped" in skipped.stdout
    assert "[opted_out]" in skipped.stdout
    assert image(kube) == "nginx:3.0"
    missing = rollbackd(kube, tmp_path, "rollback", "demo/nosuch")
    assert missing.returncode == 1
    assert "ERR_KUBE_NOT_FOUND" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_case_13_a_verification_failure_after_the_patch_says_it_was_written(
    kube: Kube,
) -> None:
    """Case 13: the patch landed, then following the rollout failed (the API went away):
    the result says rolled back and written, never "nothing was written"."""
    three_revisions(kube)

    def api_goes_away(_: Cluster) -> None:
        kube.server.faults.injected.append(
            Fault("GET", re.compile("/deployments/web$"), 500, times=1000)
        )

    kube.server.faults.hooks.append(Hook("PATCH", re.compile("/deployments/web$"), api_goes_away))
    run, _ = executor(kube)
    result = asyncio.run(run.execute(request()))
    kube.server.faults.injected.clear()
    assert result.outcome is Outcome.FAILED
    assert result.written
    assert result.message.startswith("rolled back demo/web from revision 3")
    assert "nothing was written" not in result.message
    assert image(kube) == "nginx:2.0"


def test_case_18_the_reason_of_a_manual_rollback_is_recorded(kube: Kube) -> None:
    """Case 18: `rollback --reason TEXT` reaches the Event and the rollback record on the
    Deployment (from which the leader announces it)."""
    three_revisions(kube)
    run, _ = executor(kube)
    result = asyncio.run(run.execute(request(manual=True, rule="manual", note="bad config")))
    assert result.outcome is Outcome.SUCCEEDED
    (event,) = [e for e in events(kube) if e["reason"] == "RollbackdRollback"]
    assert "reason: bad config" in event["message"]
    deployment = seed.read(kube.api, "demo", "web")
    last = read_state(deployment["metadata"]["annotations"]).last_rollback
    assert last is not None
    assert (last.note, last.manual) == ("bad config", True)
