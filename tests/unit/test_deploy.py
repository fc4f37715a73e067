"""What ships: the Dockerfile's shape, the kustomize manifests, the generated docs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rollbackd.errors import error_table_markdown
from rollbackd.runtime.process import shutdown_seconds
from rollbackd.settings import load_settings
from tests.unit.test_settings import EXAMPLE_ENV

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33"
OVERLAYS = ("namespaced", "argocd", "flux")
EXPECTED_RULES = {
    ("apps", "deployments"): {"get", "list", "watch", "patch"},
    ("apps", "replicasets"): {"list"},
    ("events.k8s.io", "events"): {"create"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    ("", "pods"): {"patch"},
}
OWNER_RULES = {
    "deploy/overlays/argocd": {("argoproj.io", "applications"): {"get", "patch"}},
    "deploy/overlays/flux": {
        ("kustomize.toolkit.fluxcd.io", "kustomizations"): {"get"},
        ("helm.toolkit.fluxcd.io", "helmreleases"): {"get"},
    },
}
"""What the optional overlays add: the owner objects rollbackd reads and (Argo CD) pauses."""


def kustomize(folder: str, kubectl_binary: None) -> list[dict[str, Any]]:
    built = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(built) if doc]


def rbac_rules(objects: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """Verbs granted per (group, resource) by every Role and ClusterRole."""
    granted: dict[tuple[str, str], set[str]] = {}
    for obj in objects:
        if obj["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in obj["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


@pytest.mark.parametrize("folder", ["deploy/base", *(f"deploy/overlays/{o}" for o in OVERLAYS)])
def test_manifests_build_and_validate(folder: str, kubectl_binary: None) -> None:
    """`kubectl kustomize` builds, and every object passes the Kubernetes schema."""
    objects = kustomize(folder, kubectl_binary)
    kinds = {obj["kind"] for obj in objects}
    assert {
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_rbac_is_least_privilege(kubectl_binary: None) -> None:
    """Exactly the verbs the code uses: no wildcard, no Secrets, no create or delete of
    Deployments. (The e2e tests check these against the requests rollbackd really makes.)"""
    for folder in ("deploy/base", *(f"deploy/overlays/{o}" for o in OVERLAYS)):
        granted = rbac_rules(kustomize(folder, kubectl_binary))
        assert granted == EXPECTED_RULES | OWNER_RULES.get(folder, {}), folder
        flat = {verb for verbs in granted.values() for verb in verbs}
        assert "*" not in flat
        assert not any(resource in ("secrets", "*") for _, resource in granted)


def test_deployment_is_hardened(kubectl_binary: None) -> None:
    """Two replicas, probes, resources, non-root, read-only root, no capabilities, seccomp."""
    (deployment,) = [
        o for o in kustomize("deploy/base", kubectl_binary) if o["kind"] == "Deployment"
    ]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"]


def disruptions_allowed(pdb: dict[str, Any], *, replicas: int, healthy: int) -> int:
    """What the eviction API allows for ``pdb`` (the disruption controller's arithmetic):
    current healthy pods minus the desired healthy count, never below zero."""
    spec = pdb["spec"]
    if "minAvailable" in spec:
        desired = _count(spec["minAvailable"], replicas, round_up=True)
    else:
        desired = replicas - _count(spec["maxUnavailable"], replicas, round_up=True)
    return max(0, healthy - desired)


def _count(value: int | str, replicas: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    share = replicas * int(value.rstrip("%"))
    return -(-share // 100) if round_up else share // 100


def test_a_drain_can_evict_the_leader_but_never_both(kubectl_binary: None) -> None:
    """Finding 6: with readiness on every replica whose cache is synced (the end-to-end
    two-replica test checks both answer /readyz 200), the shipped PodDisruptionBudget
    allows exactly one eviction of the two replicas, the leader's included. With readiness
    only on the leader, as before, it allowed none and a node drain hung."""
    objects = kustomize("deploy/base", kubectl_binary)
    (pdb,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    replicas = deployment["spec"]["replicas"]
    assert disruptions_allowed(pdb, replicas=replicas, healthy=replicas) == 1
    assert disruptions_allowed(pdb, replicas=replicas, healthy=1) == 0  # leader-only readiness
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert services["rollbackd"]["spec"]["selector"]["rollbackd.io/leader"] == "true"
    assert "rollbackd.io/leader" not in services["rollbackd-metrics"]["spec"]["selector"]


def test_termination_grace_covers_an_orderly_shutdown(kubectl_binary: None) -> None:
    """Finding 4: the pod's terminationGracePeriodSeconds leaves time for the rollback in
    flight (the shipped wait_for_rollout), the outboxes and the Lease release, so the
    kubelet's SIGKILL never cuts a shutdown short."""
    (deployment,) = [
        o for o in kustomize("deploy/base", kubectl_binary) if o["kind"] == "Deployment"
    ]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    settings = load_settings(ROOT / "deploy/base/config.yaml", environ=EXAMPLE_ENV)
    assert grace >= shutdown_seconds(settings)


def test_configmap_is_the_example() -> None:
    """The shipped ConfigMap is config.example.yaml; the namespaced one differs only in
    kubernetes.namespaces, the Argo CD one only in rollback.owners.argocd."""
    example = (ROOT / "config.example.yaml").read_text()
    assert (ROOT / "deploy/base/config.yaml").read_text() == example
    namespaced = (ROOT / "deploy/overlays/namespaced/config.yaml").read_text().splitlines()
    changed = [new for old, new in zip(example.splitlines(), namespaced, strict=True) if old != new]
    assert changed == [
        "  namespaces: [shop]                # namespaces to manage; empty: all namespaces"
    ]
    argocd = (ROOT / "deploy/overlays/argocd/config.yaml").read_text().splitlines()
    changed = [new for old, new in zip(example.splitlines(), argocd, strict=True) if old != new]
    assert [line.split("#")[0].strip() for line in changed] == ["argocd: pause"]


def test_examples_validate() -> None:
    """Example objects that Kubernetes knows validate; CRDs at least parse with their kind."""
    for path in sorted((ROOT / "deploy/examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion", "").startswith("monitoring.coreos.com"):
                assert doc["kind"] in ("PrometheusRule", "ServiceMonitor")
            elif doc and "kind" in doc:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_dockerfile_shape() -> None:
    """Multi-stage, slim base, numeric non-root user, no build tools in the final stage,
    rollbackd run as the entrypoint, OCI labels."""
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) == 2
    assert all(stage.startswith("python:3.11-slim") for stage in stages)
    final = stages[-1]
    assert re.search(r"^USER \d+:\d+$", final, flags=re.MULTILINE)
    assert not re.search(r"apt-get|gcc|build-essential", final)
    assert "pip install --no-cache-dir --no-index --find-links /wheels rollbackd" in final
    assert 'ENTRYPOINT ["rollbackd"]' in final
    assert 'CMD ["run", "--config", "/etc/rollbackd/config.yaml"]' in final
    for label in ("title", "version", "source", "licenses"):
        assert f"org.opencontainers.image.{label}" in final
    assert "PYTHONDONTWRITEBYTECODE=1" in final  # nothing written to a read-only root


def test_error_code_table_is_in_sync() -> None:
    """docs/error-codes.md is what `make docs` generates from rollbackd/errors/."""
    assert (ROOT / "docs/error-codes.md").read_text() == error_table_markdown()
