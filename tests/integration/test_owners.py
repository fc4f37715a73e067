"""GitOps and Helm owners: a simulated controller re-applies the bad template right after
the undo, over real HTTP against the fake API server (server-side apply, as Argo CD and
Flux write), while the incident shell runs the policy of ``rollback.owners``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from rollbackd.model import Event, Incident, Target
from rollbackd.notifications.render import Renderer
from rollbackd.rollbacks.pauses import PauseKeeper
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.incidents import IncidentRunner
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.runtime.wiring import Edges
from rollbackd.settings import Settings
from rollbackd.state.annotations import PAUSED_OWNER, parse_paused_owner
from rollbackd.state.changes import ChangeTimes
from rollbackd.testing.kube import seed
from rollbackd.testing.prometheus_stub import PrometheusStub, vector
from rollbackd.testing.sandbox import wait_until
from tests.conftest import Kube
from tests.faults.test_kube_faults import rollback_patches
from tests.faults.test_notification_faults import Cache, firing
from tests.integration.test_rollbacks import ENABLED, rollbackd
from tests.unit.test_deploy import OWNER_RULES

pytestmark = pytest.mark.integration

WEB = Target("shop", "web")
RECONCILE = "kustomize.toolkit.fluxcd.io/reconcile"
OWNER_API = {
    "Application": ("argoproj.io", "v1alpha1", "applications"),
    "Kustomization": ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
    "HelmRelease": ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
}
Obj = dict[str, Any]


class Told:
    """The incidents handed to the notifications, with their facts."""

    def __init__(self) -> None:
        self.incidents: list[Incident] = []

    def notify(self, incident: Incident) -> list[str]:
        self.incidents.append(incident)
        return []

    def events(self) -> list[Event]:
        return [i.event for i in self.incidents]


def apply(
    kube: Kube, manager: str, image: str, *, labels: dict[str, str], annotations: dict[str, str]
) -> None:
    """Server-side apply of shop/web, as a GitOps controller writes its desired state."""
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "labels": {"app": "web", **ENABLED, **labels},
            "annotations": annotations,
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image}]},
            },
        },
    }
    client.AppsV1Api(kube.api).patch_namespaced_deployment(
        "web",
        "shop",
        body,
        field_manager=manager,
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def owner_requests(kube: Kube) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of rollbackd's own requests to owner objects."""
    groups = {group for group, _, _ in OWNER_API.values()}
    return {
        r.rbac
        for r in kube.server.requests
        if r.user_agent.startswith("rollbackd/") and r.rbac and r.rbac[0] in groups
    }


def allowed(overlay: str) -> set[tuple[str, str, str]]:
    """What the optional overlay grants on owner objects."""
    return {(g, res, v) for (g, res), verbs in OWNER_RULES[overlay].items() for v in verbs}


def image(kube: Kube) -> str:
    deployment = kube.server.cluster.get("deployments", "shop", "web") or {}
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def create_owner(kube: Kube, kind: str, namespace: str, name: str, body: Obj) -> None:
    group, version, plural = OWNER_API[kind]
    if kube.server.cluster.get("namespaces", "", namespace) is None:
        seed.create_namespace(kube.api, namespace)
    obj = {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": name}, **body}
    client.CustomObjectsApi(kube.api).create_namespaced_custom_object(
        group, version, namespace, plural, obj
    )


def patch_owner(kube: Kube, kind: str, namespace: str, name: str, patch: Obj) -> None:
    group, version, plural = OWNER_API[kind]
    client.CustomObjectsApi(kube.api).patch_namespaced_custom_object(
        group,
        version,
        namespace,
        plural,
        name,
        patch,
        _content_type="application/merge-patch+json",
    )


def owner_object(kube: Kube, kind: str, namespace: str, name: str) -> Obj:
    found = kube.server.cluster.get(OWNER_API[kind][2], namespace, name)
    assert found is not None
    return found


@dataclass
class Controller:
    """An owner's controller: whenever the live template differs from its desired one,
    and it is not paused, it applies the desired one again (Argo CD's selfHeal, Flux's
    drift correction, helm-controller's drift detection)."""

    kube: Kube
    manager: str
    desired: str
    labels: dict[str, str]
    annotations: dict[str, str]
    paused: Callable[[Obj], bool] = lambda live: False
    applies: int = 0
    looked: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(0.05):
            live = self.kube.server.cluster.get("deployments", "shop", "web")
            self.looked += 1
            if live is None or self.paused(live):
                continue
            if image(self.kube) != self.desired:
                apply(
                    self.kube,
                    self.manager,
                    self.desired,
                    labels=self.labels,
                    annotations=self.annotations,
                )
                self.applies += 1

    def idle_for(self, rounds: int) -> bool:
        """Wait until it looked at the workload ``rounds`` more times."""
        start = self.looked
        return wait_until(lambda: self.looked >= start + rounds, 10)


@dataclass
class World:
    kube: Kube
    runner: IncidentRunner
    told: Told
    edges: Edges
    settings: Settings

    async def breach(self) -> None:
        """The rule fires for shop/web; everything it starts runs to its end."""
        await self.runner.handle([firing(WEB)])
        assert await self.runner.idle(15)

    def keeper(self) -> PauseKeeper:
        return PauseKeeper(
            deployments=lambda: self.kube.server.cluster.list_objects("deployments", None),
            workloads=self.edges.workloads,
            owners=self.edges.workloads,
            notifications=lambda: self.told,
            policies=lambda: self.settings.rollback.owners,
            now=lambda: datetime.now(UTC),
        )


@pytest.fixture
def world(kube: Kube) -> Iterator[Callable[..., World]]:
    made: list[Edges] = []

    def make(**owners: str) -> World:
        settings = Settings.model_validate(
            {
                "kubernetes": {"kubeconfig": str(kube.kubeconfig)},
                "rollback": {"wait_for_rollout": "5s", "owners": owners},
            }
        )
        edges = Edges(settings)
        made.append(edges)
        told = Told()
        runner = IncidentRunner(
            settings,
            deployments=Cache(kube),  # type: ignore[arg-type]
            workloads=edges.workloads,
            events=edges.workloads,
            executor=edges.executor(),
            notifications=told,
            telemetry=Telemetry(),
            clock=SystemClock(),
            changes=ChangeTimes(),
            owners=edges.workloads,
        )
        return World(kube, runner, told, edges, settings)

    yield make
    for edges in made:
        edges.close()


def released(
    kube: Kube,
    manager: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Controller:
    """shop/web applied by ``manager`` at nginx:1.0, then its bad release nginx:2.0."""
    labels, annotations = labels or {}, annotations or {}
    seed.create_namespace(kube.api, "shop")
    apply(kube, manager, "nginx:1.0", labels=labels, annotations=annotations)
    apply(kube, manager, "nginx:2.0", labels=labels, annotations=annotations)
    return Controller(kube, manager, "nginx:2.0", labels, annotations)


@contextlib.contextmanager
def running(controller: Controller) -> Iterator[Controller]:
    """The controller at work in its own thread for the ``with`` block."""
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        yield controller
    finally:
        controller._stop.set()
        thread.join()


def test_argo_cd_tracked_application_is_left_to_git_and_named(
    kube: Kube, world: Callable[..., World]
) -> None:
    """Argo CD with annotation tracking and the default `argocd: notify`: no rollback
    (selfHeal would revert it), one message naming the Application and what to revert."""
    tracking = {"argocd.argoproj.io/tracking-id": "shop-web:apps/Deployment:shop/web"}
    argo = released(kube, "argocd-controller", annotations=tracking)
    w = world()

    async def scenario() -> None:
        await w.runner.lead(True)
        await w.breach()
        await w.breach()  # the next ticks add nothing

    with running(argo):
        asyncio.run(scenario())
    assert rollback_patches(kube) == []
    assert w.told.events() == [Event.BREACH, Event.SKIPPED]
    skipped = w.told.incidents[-1]
    assert skipped.reason_code == "owner_policy"
    assert skipped.owner == "Argo CD Application argocd/shop-web"
    assert (
        "revert the change to nginx:2.0 in the Git source of Application shop-web"
        in skipped.next_step
    )


def test_argo_cd_label_only_is_a_hint_that_never_acts(
    kube: Kube, world: Callable[..., World]
) -> None:
    """Only `app.kubernetes.io/instance` (Argo CD 2.x, or any Helm chart): even with
    `argocd: pause` the guess is not paused; the default policy (notify) holds, and the
    message says the owner is a guess and how to act by hand."""
    argo = released(kube, "kubectl", labels={"app.kubernetes.io/instance": "web"})
    w = world(argocd="pause")

    async def scenario() -> None:
        await w.runner.lead(True)
        await w.breach()

    with running(argo):
        asyncio.run(scenario())
    assert rollback_patches(kube) == []
    skipped = w.told.incidents[-1]
    assert (skipped.event, skipped.reason_code) == (Event.SKIPPED, "owner_policy")
    assert "only the label app.kubernetes.io/instance" in skipped.owner
    assert "rollbackd rollback shop/web" in skipped.next_step
    assert "rollback.owners.default is notify" in skipped.reason


def test_argo_cd_pause_turns_off_automated_sync_and_resume_turns_it_back_on(
    kube: Kube, world: Callable[..., World], tmp_path: Path
) -> None:
    """`argocd: pause`: automated sync is turned off before the undo, so selfHeal cannot
    revert it; `rollbackd resume` restores the automated policy, Argo CD re-applies the bad
    template, and that re-apply is one owner_reapplied message, not a second rollback."""
    tracking = {"argocd.argoproj.io/tracking-id": "shop-web:apps/Deployment:shop/web"}
    automated = {"prune": True, "selfHeal": True}
    create_owner(
        kube,
        "Application",
        "argocd",
        "shop-web",
        {
            "spec": {"syncPolicy": {"automated": automated}},
            "status": {"sync": {"revision": "4f2a9c1"}},
        },
    )
    argo = released(kube, "argocd-controller", annotations=tracking)

    def sync_off(live: Obj) -> bool:
        app = owner_object(kube, "Application", "argocd", "shop-web")
        return app["spec"]["syncPolicy"].get("automated") is None

    argo.paused = sync_off
    w = world(argocd="pause")
    with running(argo):
        asyncio.run(_lead_and_breach(w))
        assert argo.idle_for(10)
        assert image(kube) == "nginx:1.0"  # selfHeal is off: the undo holds
        assert (
            owner_object(kube, "Application", "argocd", "shop-web")["spec"]["syncPolicy"].get(
                "automated"
            )
            is None
        )
        deployment = kube.server.cluster.get("deployments", "shop", "web") or {}
        record = parse_paused_owner(deployment["metadata"]["annotations"][PAUSED_OWNER])
        assert record is not None
        assert (record.kind, record.name, record.revision) == ("Application", "shop-web", "4f2a9c1")
        assert w.told.events()[-2:] == [Event.ROLLBACK_SUCCEEDED, Event.OWNER_PAUSED]
        assert "commit 4f2a9c1" in w.told.incidents[-1].next_step
        resumed = rollbackd(kube, tmp_path, "resume", "shop/web")
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed Application argocd/shop-web" in resumed.stdout
        assert (
            owner_object(kube, "Application", "argocd", "shop-web")["spec"]["syncPolicy"][
                "automated"
            ]
            == automated
        )
        assert wait_until(lambda: image(kube) == "nginx:2.0", 10)  # Argo CD syncs Git again
        asyncio.run(_breach_twice(w))
    assert len(rollback_patches(kube)) == 1
    assert w.told.events()[-1] == Event.SKIPPED
    assert w.told.incidents[-1].reason_code == "owner_reapplied"
    assert "Argo CD Application argocd/shop-web" in w.told.incidents[-1].reason
    deployment = kube.server.cluster.get("deployments", "shop", "web") or {}
    assert PAUSED_OWNER not in deployment["metadata"]["annotations"]
    assert owner_requests(kube) == allowed("deploy/overlays/argocd")  # the overlay suffices


async def _lead_and_breach(w: World) -> None:
    await w.runner.lead(True)
    await w.breach()


async def _breach_twice(w: World) -> None:
    await w.breach()
    await w.breach()


def test_flux_kustomization_is_paused_with_the_undo_and_resumes_on_a_new_revision(
    kube: Kube, world: Callable[..., World], tmp_path: Path
) -> None:
    """Flux (default `flux: pause`): the rollback's own patch sets reconcile: disabled, so
    kustomize-controller leaves the undo alone; when the Kustomization moves to a new
    revision (the fix), the pause lifts by itself with a message, and Flux applies it."""
    labels = {
        "kustomize.toolkit.fluxcd.io/name": "shop",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    }
    create_owner(
        kube,
        "Kustomization",
        "flux-system",
        "shop",
        {"status": {"lastAppliedRevision": "main@sha1:bad"}},
    )
    flux = released(kube, "kustomize-controller", labels=labels)
    flux.paused = lambda live: (
        (live["metadata"].get("annotations") or {}).get(RECONCILE) == "disabled"
    )
    w = world()
    with running(flux):
        asyncio.run(_lead_and_breach(w))
        assert flux.idle_for(10)
        assert image(kube) == "nginx:1.0"
        deployment = kube.server.cluster.get("deployments", "shop", "web") or {}
        assert deployment["metadata"]["annotations"][RECONCILE] == "disabled"
        assert asyncio.run(w.keeper().check()) == 0  # same revision: the pause holds
        shown = rollbackd(kube, tmp_path, "history", "shop/web", "--output", "json")
        assert shown.returncode == 0, shown.stderr
        (owner,) = {row["owner"] for row in json.loads(shown.stdout)}
        incident = w.told.incidents[-1].id
        assert owner == (f"Flux Kustomization flux-system/shop (re-apply paused by {incident})")
        patch_owner(
            kube,
            "Kustomization",
            "flux-system",
            "shop",
            {"status": {"lastAppliedRevision": "main@sha1:fix"}},
        )
        flux.desired = "nginx:3.0"  # the fix commit
        assert asyncio.run(w.keeper().check()) == 1
        assert wait_until(lambda: image(kube) == "nginx:3.0", 10)
    assert len(rollback_patches(kube)) == 1
    events = w.told.events()
    assert events == [
        Event.BREACH,
        Event.ROLLBACK_STARTED,
        Event.ROLLBACK_SUCCEEDED,
        Event.OWNER_PAUSED,
        Event.OWNER_RESUMED,
    ]
    paused, resumed = w.told.incidents[-2], w.told.incidents[-1]
    assert paused.owner == "Flux Kustomization flux-system/shop at revision main@sha1:bad"
    assert "revert commit main@sha1:bad in the source of Kustomization shop" in paused.next_step
    assert resumed.id == paused.id
    english, chinese = Renderer("en").render(paused).text, Renderer("zh").render(paused).text
    assert (
        "- **Owner**: Flux Kustomization flux-system/shop at revision main@\u200bsha1:bad"
        in english
    )
    assert "- **Next step**: revert commit main@\u200bsha1:bad" in english  # @ mentions no one
    assert "- **属主**：Flux Kustomization" in chinese
    assert "### Owner resumed: shop/web" in Renderer("en").render(resumed).text
    assert "moved to revision main@sha1:fix" in resumed.reason
    deployment = kube.server.cluster.get("deployments", "shop", "web") or {}
    annotations = deployment["metadata"]["annotations"]
    assert RECONCILE not in annotations
    assert PAUSED_OWNER not in annotations
    assert owner_requests(kube) == {("kustomize.toolkit.fluxcd.io", "kustomizations", "get")}
    assert owner_requests(kube) <= allowed("deploy/overlays/flux")


def test_flux_helmrelease_re_apply_is_one_message_not_a_second_rollback(
    kube: Kube, world: Callable[..., World]
) -> None:
    """A Flux HelmRelease: the live undo is made (drift detection is off by default); when
    helm-controller re-applies the bad template anyway, the breach that follows is one
    owner_reapplied message naming the HelmRelease, however many ticks follow."""
    labels = {
        "helm.toolkit.fluxcd.io/name": "web",
        "helm.toolkit.fluxcd.io/namespace": "flux-system",
        "app.kubernetes.io/managed-by": "Helm",
    }
    annotations = {
        "meta.helm.sh/release-name": "shop-web",
        "meta.helm.sh/release-namespace": "shop",
    }
    helm = released(kube, "helm-controller", labels=labels, annotations=annotations)
    w = world()
    asyncio.run(_lead_and_breach(w))
    assert image(kube) == "nginx:1.0"
    with running(helm):  # drift detection on: the bad template comes back
        assert wait_until(lambda: image(kube) == "nginx:2.0", 10)
        asyncio.run(_breach_twice(w))
        asyncio.run(_breach_twice(w))
    assert len(rollback_patches(kube)) == 1
    assert w.told.events() == [
        Event.BREACH,
        Event.ROLLBACK_STARTED,
        Event.ROLLBACK_SUCCEEDED,
        Event.SKIPPED,
    ]
    reapplied = w.told.incidents[-1]
    assert reapplied.reason_code == "owner_reapplied"
    assert "Flux HelmRelease flux-system/web" in reapplied.reason
    assert "fix the chart or values of HelmRelease web" in reapplied.next_step


@pytest.mark.parametrize("policy", ["notify", "rollback"])
def test_plain_helm_release_follows_its_policy(
    kube: Kube, world: Callable[..., World], policy: str
) -> None:
    """Helm without GitOps: `helm: notify` (default) rolls nothing back and names the
    `helm rollback` to run; `helm: rollback` undoes the live object and warns that the next
    `helm upgrade` re-applies it."""
    labels = {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "web"}
    annotations = {"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": "shop"}
    released(kube, "helm", labels=labels, annotations=annotations)
    w = world(helm=policy)
    asyncio.run(_lead_and_breach(w))
    last = w.told.incidents[-1]
    assert last.owner == "Helm release shop/web"
    if policy == "notify":
        assert rollback_patches(kube) == []
        assert (last.event, last.reason_code) == (Event.SKIPPED, "owner_policy")
        assert "`helm rollback web -n shop`" in last.next_step
    else:
        assert len(rollback_patches(kube)) == 1
        assert last.event == Event.ROLLBACK_SUCCEEDED
        assert "the next `helm upgrade` re-applies the bad template" in last.next_step
        deployment = kube.server.cluster.get("deployments", "shop", "web") or {}
        assert deployment["metadata"]["annotations"]["meta.helm.sh/release-name"] == "web"


def test_resume_with_nothing_paused_says_so(kube: Kube, tmp_path: Path) -> None:
    """`rollbackd resume` on a workload rollbackd did not pause changes nothing and says
    there is nothing to resume (exit 0); an unknown workload fails with its error code."""
    released(kube, "kubectl")
    before = seed.read(kube.api, "shop", "web")
    nothing = rollbackd(kube, tmp_path, "resume", "shop/web")
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing to resume" in nothing.stdout
    assert (
        seed.read(kube.api, "shop", "web")["metadata"]["resourceVersion"]
        == (before["metadata"]["resourceVersion"])
    )
    missing = rollbackd(kube, tmp_path, "resume", "shop/nope")
    assert missing.returncode == 1
    assert "ERR_KUBE_NOT_FOUND" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_eval_names_each_target_s_owner(kube: Kube, tmp_path: Path) -> None:
    """`rollbackd eval` shows who re-applies each Deployment it judges, read once from
    the cluster, so an operator sees before any incident that a rule watches a workload
    Flux or Argo CD would put back."""
    labels = {
        "kustomize.toolkit.fluxcd.io/name": "shop",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    }
    released(kube, "kustomize-controller", labels=labels)
    with PrometheusStub() as stub:
        stub.answer(vector(({"namespace": "shop", "deployment": "web"}, "0.3")))
        config = tmp_path / "eval.yaml"
        config.write_text(
            f"kubernetes: {{kubeconfig: '{kube.kubeconfig}'}}\n"
            f"prometheus: {{url: '{stub.url}', timeout: 2s}}\n"
            "rules: [{name: errors, expr: 'x', threshold: 0.05, for: 0s}]\n"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "rollbackd",
                "eval",
                "--config",
                str(config),
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["deployment"], row["owner"]) == ("web", "Flux Kustomization flux-system/shop")


def test_argo_cd_pause_refused_means_no_rollback(kube: Kube, world: Callable[..., World]) -> None:
    """`argocd: pause` without the overlay's RBAC: the Application cannot be paused, so no
    rollback is made (selfHeal would revert it at once); the message and a RollbackdSkipped
    Event say owner_pause_failed and why."""
    tracking = {"argocd.argoproj.io/tracking-id": "shop-web:apps/Deployment:shop/web"}
    create_owner(
        kube,
        "Application",
        "argocd",
        "shop-web",
        {"spec": {"syncPolicy": {"automated": {"selfHeal": True}}}},
    )
    released(kube, "argocd-controller", annotations=tracking)
    kube.server.faults.forbidden.add(("patch", "applications"))
    w = world(argocd="pause")
    asyncio.run(_lead_and_breach(w))
    assert rollback_patches(kube) == []
    assert image(kube) == "nginx:2.0"
    last = w.told.incidents[-1]
    assert (last.event, last.reason_code) == (Event.SKIPPED, "owner_pause_failed")
    assert "ERR_KUBE_FORBIDDEN" in last.reason
    notes = [e["message"] for e in kube.server.cluster.list_objects("events", "shop")]
    assert any("skipped (owner_pause_failed)" in note for note in notes)
