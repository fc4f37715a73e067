"""The fake API server's StatefulSet and DaemonSet controllers against the captures of a real
control plane, step by step under real kubectl: the objects, their ControllerRevisions (one
per template, reused and renumbered by an undo), the exact undo kubectl sends, and the
resourceVersion precondition rollbackd adds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rollbackd.rollbacks.revisions import RevisionPlan, plan_revision_rollback
from tests.conftest import Kube
from tests.kube_fixtures import FIXTURES, load

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
MANIFESTS = {"StatefulSet": "sts-web.yaml", "DaemonSet": "ds-web.yaml"}
KINDS = [("statefulset", "StatefulSet", "demo-sts"), ("daemonset", "DaemonSet", "demo-ds")]


def shape(folder: str, obj: Obj, revisions: list[Obj]) -> Obj:
    """What must match between the fake and the real controllers after the same steps.

    uids, resourceVersions and times differ by nature; a DaemonSet's hash is Go's printed
    template, which the fake does not reproduce, so there only its place in the name counts.
    """
    uid = obj["metadata"]["uid"]
    exact = folder == "statefulset"

    def named(cr: Obj) -> Any:
        name = cr["metadata"]["name"]
        labels = cr["metadata"]["labels"]
        digest = labels.get("controller.kubernetes.io/hash") or labels["controller-revision-hash"]
        return name if exact else name == f"web-{digest}"

    own = sorted(
        (
            cr
            for cr in revisions
            if any(r["uid"] == uid for r in cr["metadata"].get("ownerReferences", []))
        ),
        key=lambda cr: cr["revision"],
    )
    status = dict(obj.get("status") or {})
    return {
        "object": {
            "annotations": obj["metadata"].get("annotations"),
            "labels": obj["metadata"].get("labels"),
            "generation": obj["metadata"]["generation"],
            "spec": obj["spec"],
            "status": status,
        },
        "revisions": [
            {
                "named": named(cr),
                "revision": cr["revision"],
                "labels": sorted(cr["metadata"]["labels"]),
                "annotations": cr["metadata"].get("annotations"),
                "owner": [
                    {k: v for k, v in ref.items() if k != "uid"}
                    for ref in cr["metadata"]["ownerReferences"]
                ],
                "data": cr["data"],
            }
            for cr in own
        ],
    }


def fake(kube: Kube, folder: str, namespace: str) -> Obj:
    obj = json.loads(kube.kubectl("-n", namespace, "get", folder, "web", "-o", "json").stdout)
    listed = kube.kubectl(
        "-n", namespace, "get", "controllerrevisions", "-l", "app=web", "-o", "json"
    ).stdout
    return shape(folder, obj, json.loads(listed)["items"])


def captured(folder: str, step: str) -> Obj:
    obj = load(f"workloads/{folder}/{folder}-{step}.json")
    revisions = load(f"workloads/{folder}/controllerrevisions-{step}.json")["items"]
    return shape(folder, obj, revisions)


def text(folder: str, name: str) -> str:
    return (FIXTURES / "workloads" / folder / name).read_text()


@pytest.mark.parametrize(("folder", "kind", "namespace"), KINDS)
def test_kubectl_steps_match_the_real_controllers(
    kube: Kube, kubectl_binary: None, folder: str, kind: str, namespace: str
) -> None:
    """create, annotate twice, set image twice, undo, undo, undo --to-revision=1: after each
    step the object, its status and its ControllerRevisions are the captured ones (for the
    StatefulSet the revision names too), and kubectl prints the captured history."""
    manifest = FIXTURES / "workloads" / "manifests" / MANIFESTS[kind]
    kube.kubectl("create", "namespace", namespace)
    kube.kubectl("create", "-f", str(manifest))
    ref = f"{folder}/web"
    assert fake(kube, folder, namespace) == captured(folder, "rev1")
    kube.kubectl("-n", namespace, "annotate", ref, "kubernetes.io/change-cause=v1")
    assert fake(kube, folder, namespace) == captured(folder, "annotated-v1")
    kube.kubectl("-n", namespace, "annotate", "--overwrite", ref, "kubernetes.io/change-cause=v2")
    kube.kubectl("-n", namespace, "set", "image", ref, "nginx=nginx:2.0")
    assert fake(kube, folder, namespace) == captured(folder, "rev2")
    kube.kubectl("-n", namespace, "set", "image", ref, "nginx=nginx:3.0")
    assert fake(kube, folder, namespace) == captured(folder, "rev3")
    history = kube.kubectl("-n", namespace, "rollout", "history", ref).stdout
    assert history == text(folder, "rollout-history-before-undo.txt")

    undone = kube.kubectl("-n", namespace, "rollout", "undo", ref).stdout
    assert undone == f"{folder}.apps/web rolled back\n"
    assert fake(kube, folder, namespace) == captured(folder, "after-undo1")
    kube.kubectl("-n", namespace, "rollout", "undo", ref)
    assert fake(kube, folder, namespace) == captured(folder, "after-undo2")
    kube.kubectl("-n", namespace, "rollout", "undo", ref, "--to-revision=1")
    assert fake(kube, folder, namespace) == captured(folder, "after-undo-to-rev1")
    assert kube.kubectl("-n", namespace, "rollout", "history", ref).stdout == text(
        folder, "rollout-history-final.txt"
    )
    again = kube.kubectl("-n", namespace, "rollout", "undo", ref, "--to-revision=1", check=False)
    assert again.returncode == 1
    assert again.stderr == "error: unable to find specified revision 1 in history\n"


@pytest.mark.parametrize(("folder", "kind", "namespace"), KINDS)
def test_the_planned_undo_lands_once_and_a_stale_one_is_refused(
    kube: Kube, kubectl_binary: None, folder: str, kind: str, namespace: str
) -> None:
    """rollbackd's planned undo (the revision's data with the resourceVersion it read)
    lands as kubectl's would; sent again with that now stale resourceVersion, it is 409
    Conflict in the real Status shape and changes nothing."""
    manifest = FIXTURES / "workloads" / "manifests" / MANIFESTS[kind]
    kube.kubectl("create", "namespace", namespace)
    kube.kubectl("create", "-f", str(manifest))
    for image in ("nginx:2.0", "nginx:3.0"):
        kube.kubectl("-n", namespace, "set", "image", f"{folder}/web", f"nginx={image}")
    apps = client.AppsV1Api(kube.api)
    read = getattr(apps, f"read_namespaced_{folder.replace('set', '_set')}")
    patch = getattr(apps, f"patch_namespaced_{folder.replace('set', '_set')}")
    obj = kube.api.sanitize_for_serialization(read("web", namespace))
    revisions = kube.api.sanitize_for_serialization(
        apps.list_namespaced_controller_revision(namespace, label_selector="app=web")
    )["items"]
    plan = plan_revision_rollback(obj, kind, revisions)
    assert isinstance(plan, RevisionPlan)
    assert plan.to_revision.images == ("nginx:2.0",)
    patch("web", namespace, plan.body)
    after = kube.api.sanitize_for_serialization(read("web", namespace))
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2.0"
    with pytest.raises(ApiException) as refused:
        patch("web", namespace, plan.body)
    assert refused.value.status == 409
    status = json.loads(refused.value.body)
    assert status["reason"] == "Conflict"
    assert status["details"] == {"name": "web", "group": "apps", "kind": f"{folder}s"}
    assert status["message"] == (
        f'Operation cannot be fulfilled on {folder}s.apps "web": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    unchanged = kube.api.sanitize_for_serialization(read("web", namespace))
    assert unchanged["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
