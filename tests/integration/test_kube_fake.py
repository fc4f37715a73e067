"""The fake API server against the captures of a real control plane, driven by real kubectl
and the official Python client."""

from __future__ import annotations

import json
import re
import shlex
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from rollbackd.testing.kube import Fault, seed
from tests.conftest import Kube
from tests.kube_fixtures import FIXTURES, load

pytestmark = pytest.mark.integration

Obj = dict[str, Any]


def shape(deployment: Obj, replicasets: list[Obj]) -> Obj:
    """What must match between the fake and the real controller after the same steps.

    Names, UIDs, hashes, resourceVersions and timestamps differ by nature; replica counts
    differ because the captured cluster had no kubelet. Everything else must be equal.
    """
    uid = deployment["metadata"]["uid"]

    def owner(rs: Obj) -> list[Obj]:
        return [
            {k: ref[k] for k in ("apiVersion", "kind", "name", "controller", "blockOwnerDeletion")}
            | {"same_uid": ref["uid"] == uid}
            for ref in rs["metadata"].get("ownerReferences", [])
        ]

    def template(rs: Obj) -> Obj:
        clean = json.loads(json.dumps(rs["spec"]["template"]))
        assert clean["metadata"]["labels"].pop("pod-template-hash")
        return clean

    sets = sorted(
        replicasets,
        key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]),
    )
    return {
        "deployment": {
            "annotations": deployment["metadata"].get("annotations"),
            "labels": deployment["metadata"].get("labels"),
            "generation": deployment["metadata"]["generation"],
            "observedGeneration": deployment["status"]["observedGeneration"],
            "spec": deployment["spec"],
            "conditions": [
                (c["type"], c["status"], c["reason"])
                for c in deployment["status"].get("conditions", [])
            ],
        },
        "replicasets": [
            {
                "annotations": rs["metadata"]["annotations"],
                "labels": sorted(rs["metadata"]["labels"]),
                "owner": owner(rs),
                "template": template(rs),
                "named_after_hash": rs["metadata"]["name"].endswith(
                    "-" + rs["metadata"]["labels"]["pod-template-hash"]
                ),
            }
            for rs in sets
        ],
    }


def fake_state(kube: Kube, namespace: str, name: str) -> Obj:
    deployment = json.loads(
        kube.kubectl("-n", namespace, "get", "deploy", name, "-o", "json").stdout
    )
    replicasets = json.loads(
        kube.kubectl("-n", namespace, "get", "rs", "-l", f"app={name}", "-o", "json").stdout
    )["items"]
    return shape(deployment, replicasets)


def captured(deployment: str, replicasets: str) -> Obj:
    return shape(load(deployment), load(replicasets)["items"])


def test_kubectl_steps_match_the_real_controller(kube: Kube, kubectl_binary: None) -> None:
    """create, set image x2, undo, undo, undo --to-revision=1: the same revisions, annotations,
    templates and ReplicaSet ownership as the real control plane produced."""
    kube.server.cluster.default_rollout = "never"  # the captured cluster had no kubelet
    kube.kubectl("create", "namespace", "demo")
    kube.kubectl("-n", "demo", "create", "deployment", "web", "--image=nginx:1.0", "--replicas=2")
    kube.kubectl("-n", "demo", "set", "image", "deployment/web", "nginx=nginx:2.0")
    kube.kubectl("-n", "demo", "set", "image", "deployment/web", "nginx=nginx:3.0")
    assert fake_state(kube, "demo", "web") == captured(
        "deployment-rev3.json", "replicasets-rev3.json"
    )
    history = kube.kubectl("-n", "demo", "rollout", "history", "deployment/web").stdout
    assert history == (load_text("rollout-history-before-undo.txt"))

    assert kube.kubectl("-n", "demo", "rollout", "undo", "deployment/web").stdout == (
        "deployment.apps/web rolled back\n"
    )
    assert fake_state(kube, "demo", "web") == captured(
        "deployment-after-undo1.json", "replicasets-after-undo1.json"
    )
    kube.kubectl("-n", "demo", "rollout", "undo", "deployment/web")
    assert fake_state(kube, "demo", "web") == captured(
        "deployment-after-undo2.json", "replicasets-after-undo2.json"
    )
    kube.kubectl("-n", "demo", "rollout", "undo", "deployment/web", "--to-revision=1")
    assert fake_state(kube, "demo", "web") == captured(
        "deployment-after-undo-to-rev1.json", "replicasets-after-undo-to-rev1.json"
    )
    again = kube.kubectl(
        "-n", "demo", "rollout", "undo", "deployment/web", "--to-revision=1", check=False
    )
    assert again.returncode == 1
    assert again.stderr == "error: unable to find specified revision 1 in history\n"

    kube.kubectl("-n", "demo", "rollout", "pause", "deployment/web")
    paused = kube.kubectl("-n", "demo", "rollout", "undo", "deployment/web", check=False)
    assert "you cannot rollback a paused deployment" in paused.stderr
    paused_state = json.loads(
        kube.kubectl("-n", "demo", "get", "deploy", "web", "-o", "json").stdout
    )
    real_paused = load("deployment-paused.json")
    assert paused_state["spec"] == real_paused["spec"]
    assert {(c["type"], c["reason"]) for c in paused_state["status"]["conditions"]} == {
        (c["type"], c["reason"]) for c in real_paused["status"]["conditions"]
    }
    kube.kubectl("-n", "demo", "rollout", "resume", "deployment/web")
    kube.kubectl("-n", "demo", "rollout", "undo", "deployment/web")
    assert fake_state(kube, "demo", "web") == captured(
        "deployment-after-undo3.json", "replicasets-after-undo3.json"
    )
    assert kube.kubectl("-n", "demo", "rollout", "history", "deployment/web").stdout == load_text(
        "rollout-history-final.txt"
    )


def test_annotations_follow_the_real_controller(kube: Kube, kubectl_binary: None) -> None:
    """change-cause and team annotations are copied to ReplicaSets and restored on undo."""
    kube.server.cluster.default_rollout = "never"
    kube.kubectl("create", "namespace", "demo")
    kube.kubectl("-n", "demo", "create", "deployment", "annot", "--image=nginx:1.0", "--replicas=1")
    kube.kubectl(
        "-n",
        "demo",
        "annotate",
        "deployment/annot",
        "kubernetes.io/change-cause=image nginx:1.0",
        "example.com/owner=team-a",
    )
    kube.kubectl("-n", "demo", "set", "image", "deployment/annot", "nginx=nginx:2.0")
    kube.kubectl(
        "-n",
        "demo",
        "annotate",
        "--overwrite",
        "deployment/annot",
        "kubernetes.io/change-cause=image nginx:2.0",
        "example.com/added-at-rev2=true",
    )
    summary = load("annotations-undo-summary.json")

    def annotations(namespace: str, name: str) -> tuple[Obj, list[Obj]]:
        deployment = json.loads(
            kube.kubectl("-n", namespace, "get", "deploy", name, "-o", "json").stdout
        )
        sets = json.loads(
            kube.kubectl("-n", namespace, "get", "rs", "-l", f"app={name}", "-o", "json").stdout
        )["items"]
        by_revision = sorted(
            (rs["metadata"]["annotations"] for rs in sets),
            key=lambda a: a["deployment.kubernetes.io/revision"],
        )
        return deployment["metadata"]["annotations"], by_revision

    def expected(key: str) -> list[Obj]:
        return sorted(summary[key].values(), key=lambda a: a["deployment.kubernetes.io/revision"])

    assert annotations("demo", "annot") == (
        summary["deployment_annotations_before_undo"],
        expected("replicaset_annotations_before_undo"),
    )
    kube.kubectl("-n", "demo", "rollout", "undo", "deployment/annot")
    assert annotations("demo", "annot") == (
        summary["deployment_annotations_after_undo"],
        expected("replicaset_annotations_after_undo"),
    )


def test_generation_counts_like_the_real_server(kube: Kube, kubectl_binary: None) -> None:
    """After every captured kubectl step on a Deployment, ``metadata.generation`` is what the
    real kube-apiserver made of it: annotations bump it, labels do not, a no-op keeps the
    resourceVersion (rollbackd's own records are annotations, so its rollout checks see this)."""
    kube.kubectl("create", "namespace", "demo-gen")
    kube.kubectl(
        "-n", "demo-gen", "create", "deployment", "gen", "--image=nginx:1.0", "--replicas=2"
    )

    def state() -> tuple[int, str]:
        meta = json.loads(
            kube.kubectl("-n", "demo-gen", "get", "deploy", "gen", "-o", "json").stdout
        )["metadata"]
        return meta["generation"], meta["resourceVersion"]

    rules = load("workloads/generation/generation-rules.json")
    steps = [row for row in rules if row["kind"] == "deployment"]
    assert len(steps) == 12
    seen = []
    for row in steps:
        before, rv_before = state()
        args = shlex.split(row["command"])[1:]
        result = kube.kubectl(*args)
        after, rv_after = state()
        assert result.stdout == row["stdout"], row["operation"]
        seen.append((row["operation"], after - before, rv_after != rv_before))
    assert seen == [
        (
            row["operation"],
            row["generation_right_after"] - row["generation_before"],
            row["resourceVersion_right_after"] != row["resourceVersion_before"],
        )
        for row in steps
    ]


def load_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_error_bodies_have_the_real_shape(kube: Kube) -> None:
    """404, 409, 422 (failed test op) and 403 come back as the real Status bodies."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0")
    apps = client.AppsV1Api(kube.api)

    def status_of(call: Any) -> Obj:
        with pytest.raises(ApiException) as caught:
            call()
        return dict(json.loads(caught.value.body))

    assert status_of(lambda: apps.read_namespaced_deployment("does-not-exist", "demo")) == load(
        "status-404-notfound.json"
    )
    stale = seed.read(kube.api, "demo", "web")
    seed.set_image(kube.api, "demo", "web", "nginx:2.0")
    assert status_of(lambda: apps.replace_namespaced_deployment("web", "demo", stale)) == load(
        "status-409-conflict.json"
    )
    failing_test = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]
    assert status_of(lambda: apps.patch_namespaced_deployment("web", "demo", failing_test)) == load(
        "status-422-jsonpatch-test-failed.json"
    )
    assert status_of(
        lambda: apps.create_namespaced_deployment("demo", stale | {"metadata": {"name": "web"}})
    ) == load("status-409-alreadyexists.json")
    kube.server.faults.forbidden.add(("patch", "deployments"))
    forbidden = status_of(lambda: apps.patch_namespaced_deployment("web", "demo", []))
    real = load("status-403-forbidden-patch.json")
    assert forbidden.keys() == real.keys()
    assert (forbidden["reason"], forbidden["code"], forbidden["details"]) == (
        real["reason"],
        real["code"],
        real["details"],
    )
    assert re.fullmatch(
        r'deployments.apps "web" is forbidden: User ".+" cannot patch resource "deployments" '
        r'in API group "apps" in the namespace "demo"',
        forbidden["message"],
    )


def test_events_read_through_both_apis(kube: Kube) -> None:
    """A core/v1 Event reads back through events.k8s.io/v1 with the real field mapping."""
    seed.create_namespace(kube.api, "demo")
    request = load("event-core-v1-request.json")
    client.CoreV1Api(kube.api).create_namespaced_event("demo", request)
    response = client.EventsV1Api(kube.api).read_namespaced_event(
        "web.auto-rollback.2", "demo", _preload_content=False
    )
    seen = json.loads(response.data)
    real = load("event-core-v1-read-as-events.k8s.io-v1.json")
    for volatile in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        seen["metadata"].pop(volatile, None)
        real["metadata"].pop(volatile, None)
    assert seen == real
    bad = load("event-events.k8s.io-v1-request.json") | {"eventTime": None}
    request = urllib.request.Request(  # noqa: S310 - the Python client refuses to send it
        f"{kube.server.url}/apis/events.k8s.io/v1/namespaces/demo/events",
        data=json.dumps(bad).encode(),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310
    assert caught.value.code == 422
    assert json.loads(caught.value.read())["reason"] == "Invalid"
    caught.value.close()


def test_lease_conflicts_like_leader_election(kube: Kube) -> None:
    """A holder renewing a stale copy of the Lease gets 409, as in the capture."""
    coordination = client.CoordinationV1Api(kube.api)
    body = {
        "metadata": {"name": "rollbackd"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    seed.create_namespace(kube.api, "rollbackd")
    coordination.create_namespaced_lease("rollbackd", body)
    first = coordination.read_namespaced_lease("rollbackd", "rollbackd")
    second = coordination.read_namespaced_lease("rollbackd", "rollbackd")
    first.spec.holder_identity = "b"
    coordination.replace_namespaced_lease("rollbackd", "rollbackd", first)
    with pytest.raises(ApiException) as caught:
        coordination.replace_namespaced_lease("rollbackd", "rollbackd", second)
    assert caught.value.status == 409


def test_watch_resumes_and_expires_like_the_real_server(kube: Kube) -> None:
    """A watch from a list's resourceVersion sees the change; an expired one gets 410 Gone."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0")
    apps = client.AppsV1Api(kube.api)
    listed = json.loads(apps.list_namespaced_deployment("demo", _preload_content=False).data)
    rv = listed["metadata"]["resourceVersion"]
    threading.Timer(0.3, seed.set_image, (kube.api, "demo", "web", "nginx:2.0")).start()
    events = list(
        watch.Watch().stream(
            apps.list_namespaced_deployment,
            "demo",
            resource_version=rv,
            timeout_seconds=2,
            allow_watch_bookmarks=True,
            deserialize=False,
        )
    )
    kinds = [e["type"] for e in events]
    assert kinds[0] == "MODIFIED"
    assert kinds[-1] == "BOOKMARK"
    images = [
        e["object"]["spec"]["template"]["spec"]["containers"][0]["image"]
        for e in events
        if e["type"] == "MODIFIED"
    ]
    assert images[0] == "nginx:2.0"
    kube.server.faults.expire_watches = True
    with pytest.raises(ApiException) as caught:
        list(
            watch.Watch().stream(
                apps.list_namespaced_deployment,
                "demo",
                resource_version=rv,
                timeout_seconds=2,
            )
        )
    assert caught.value.status == 410


def test_quiet_watches_get_bookmarks_and_lists_come_in_pages(kube: Kube) -> None:
    """With allowWatchBookmarks a quiet watch gets BOOKMARKs carrying the current
    resourceVersion (the knob spaces them, as the real server does about every minute);
    a LIST with ``limit`` pages with a continue token, every page at the first page's
    resourceVersion even when an object is created in between."""
    seed.create_namespace(kube.api, "demo")
    for name in ("a", "b", "c"):
        seed.create_deployment(kube.api, "demo", name, image="nginx:1.0")
    apps = client.AppsV1Api(kube.api)
    kube.server.faults.bookmark_every = 0.3
    with kube.server.cluster.lock:  # the controller's writes after the last create are done
        quiet_since = kube.server.cluster.rv
    events = list(
        watch.Watch().stream(
            apps.list_namespaced_deployment,
            "demo",
            resource_version=str(quiet_since),
            timeout_seconds=1,
            allow_watch_bookmarks=True,
            deserialize=False,
        )
    )
    assert len(events) >= 3
    assert {e["type"] for e in events} == {"BOOKMARK"}
    assert {e["object"]["metadata"]["resourceVersion"] for e in events} == {
        str(kube.server.cluster.rv)
    }
    first = json.loads(
        apps.list_namespaced_deployment("demo", limit=2, _preload_content=False).data
    )
    assert [d["metadata"]["name"] for d in first["items"]] == ["a", "b"]
    assert first["metadata"]["remainingItemCount"] == 1
    seed.create_deployment(kube.api, "demo", "d", image="nginx:1.0")
    rest = json.loads(
        apps.list_namespaced_deployment(
            "demo", limit=2, _continue=first["metadata"]["continue"], _preload_content=False
        ).data
    )
    assert [d["metadata"]["name"] for d in rest["items"]] == ["c"]
    assert rest["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert "continue" not in rest["metadata"]


def test_revision_history_limit_prunes_old_replicasets(kube: Kube) -> None:
    """With revisionHistoryLimit 2, only the current and two old ReplicaSets remain."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0")
    seed.patch(kube.api, "demo", "web", {"spec": {"revisionHistoryLimit": 2}})
    for version in range(2, 7):
        seed.set_image(kube.api, "demo", "web", f"nginx:{version}.0")
    sets = client.AppsV1Api(kube.api).list_namespaced_replica_set("demo", label_selector="app=web")
    revisions = sorted(
        int(rs.metadata.annotations["deployment.kubernetes.io/revision"]) for rs in sets.items
    )
    assert revisions == [4, 5, 6]


def test_deadline_knob_fails_rollout_status(kube: Kube, kubectl_binary: None) -> None:
    """With the deadline knob kubectl rollout status fails with the captured words."""
    kube.server.cluster.default_rollout = "deadline_exceeded"
    kube.kubectl("create", "namespace", "demo")
    kube.kubectl("-n", "demo", "create", "deployment", "stuck", "--image=nginx:1.0")
    outcome = load("rollout-status-outcomes.json")[0]
    result = kube.kubectl(
        "-n", "demo", "rollout", "status", "deployment/stuck", "--timeout=5s", check=False
    )
    assert (result.returncode, result.stderr) == (outcome["exit_code"], outcome["stderr"])


def test_faults_answer_500_drop_and_delay(kube: Kube) -> None:
    """Injected 500s and dropped connections reach the client; latency slows every call."""
    seed.create_namespace(kube.api, "demo")
    apps = client.AppsV1Api(kube.api)
    kube.server.faults.injected.append(Fault("GET", re.compile("/deployments"), 500))
    with pytest.raises(ApiException) as caught:
        apps.list_namespaced_deployment("demo")
    assert caught.value.status == 500
    # the client retries a dropped connection three times: drop all four attempts
    kube.server.faults.injected.append(Fault("GET", re.compile("/deployments"), 0, times=4))
    with pytest.raises(Exception, match=r"(?i)connection|remote|aborted"):
        apps.list_namespaced_deployment("demo", _request_timeout=5)
    kube.server.faults.latency = 0.3
    started = time.monotonic()
    apps.list_namespaced_deployment("demo")
    assert time.monotonic() - started >= 0.3


def test_owner_resources_and_server_side_apply(kube: Kube) -> None:
    """Custom resources of the owners (Argo CD Applications, Flux Kustomizations and
    HelmReleases) are created, read, listed, watched and merge-patched; a server-side
    apply records its field manager in managedFields, as Argo CD and Flux appear on a
    real Deployment, and creates what does not exist yet."""
    custom = client.CustomObjectsApi(kube.api)
    seed.create_namespace(kube.api, "argocd")
    app = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "shop"},
        "spec": {"syncPolicy": {"automated": {"selfHeal": True}}},
    }
    created = custom.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", app
    )
    assert created["metadata"]["resourceVersion"]
    watched = custom.list_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        "argocd",
        "applications",
        watch=True,
        resource_version=created["metadata"]["resourceVersion"],
        timeout_seconds=1,
        _preload_content=False,
    )
    custom.patch_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        "argocd",
        "applications",
        "shop",
        {"spec": {"syncPolicy": {"automated": None}}},
        _content_type="application/merge-patch+json",
    )
    events = [json.loads(line) for line in watched.read().splitlines() if line]
    assert [e["type"] for e in events] == ["MODIFIED"]
    read = custom.get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", "shop"
    )
    assert read["spec"]["syncPolicy"] == {}
    listed = custom.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications"
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["shop"]
    with pytest.raises(client.ApiException) as wrong:  # a version the API does not serve
        custom.get_namespaced_custom_object("argoproj.io", "v1", "argocd", "applications", "shop")
    assert wrong.value.status == 404
    seed.create_namespace(kube.api, "shop")
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.0"}]},
            },
        },
    }
    apps = client.AppsV1Api(kube.api)
    apply = {"_content_type": "application/apply-patch+yaml", "force": True}
    apps.patch_namespaced_deployment(
        "web", "shop", body, field_manager="kustomize-controller", **apply
    )
    seed.set_image(kube.api, "shop", "web", "nginx:2.0")
    deployment = seed.read(kube.api, "shop", "web")
    managers = [(m["manager"], m["operation"]) for m in deployment["metadata"]["managedFields"]]
    assert managers == [("kustomize-controller", "Apply")]
    assert "f:spec" in deployment["metadata"]["managedFields"][0]["fieldsV1"]
    apps.patch_namespaced_deployment(
        "web", "shop", body, field_manager="kustomize-controller", **apply
    )
    again = seed.read(kube.api, "shop", "web")
    assert again["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.0"
    assert again["metadata"]["generation"] == 3
    with pytest.raises(client.ApiException) as unnamed:
        apps.patch_namespaced_deployment(
            "web", "shop", body, _content_type="application/apply-patch+yaml"
        )
    assert unnamed.value.status == 400


def test_a_request_whose_client_dies_mid_body_changes_nothing(kube: Kube) -> None:
    """A process killed while sending a PUT (headers out, no body yet) must not write:
    the real server never sees a whole request, so the fake must not store an empty Lease
    that the next leader would then fail to read."""
    seed.create_namespace(kube.api, "rollbackd")
    client.CoordinationV1Api(kube.api).create_namespaced_lease(
        "rollbackd",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "rollbackd", "namespace": "rollbackd"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        },
    )
    before = kube.server.cluster.get("leases", "rollbackd", "rollbackd")
    host, port = kube.server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(
            b"PUT /apis/coordination.k8s.io/v1/namespaces/rollbackd/leases/rollbackd HTTP/1.1\r\n"
            b"Host: fake\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        )
        conn.shutdown(socket.SHUT_WR)  # the sender is gone; the body never completes
        conn.recv(1024)  # returns once the server has closed its side
    assert kube.server.cluster.get("leases", "rollbackd", "rollbackd") == before
