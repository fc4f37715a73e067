"""Shortcuts for tests and the demo: make Deployments and change them like a person would.

Everything goes through the official client over HTTP, the way ``kubectl create
deployment`` and ``kubectl set image`` would write it.
"""

from __future__ import annotations

import json
from typing import Any, cast

from kubernetes import client

from rollbackd.model import Obj


def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


def create_namespace(api: client.ApiClient, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    client.CoreV1Api(api).create_namespace(cast(Any, body))


def create_deployment(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    image: str,
    replicas: int = 2,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> None:
    """A Deployment as ``kubectl create deployment NAME --image=IMAGE`` makes it."""
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": {"app": name, **(labels or {})},
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "nginx", "image": image}]},
            },
        },
    }
    apps(api).create_namespaced_deployment(namespace, cast(Any, body))


def set_image(
    api: client.ApiClient, namespace: str, name: str, image: str, *, change_cause: str = ""
) -> None:
    """``kubectl set image deployment/NAME nginx=IMAGE``: a strategic merge patch; with a
    ``change_cause``, ``kubernetes.io/change-cause`` in the same patch, as ``--record`` and
    deploy pipelines write it."""
    patch: Obj = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "nginx"}],
                    "containers": [{"name": "nginx", "image": image}],
                }
            }
        }
    }
    if change_cause:
        patch["metadata"] = {"annotations": {"kubernetes.io/change-cause": change_cause}}
    apps(api).patch_namespaced_deployment(name, namespace, patch)


def patch(api: client.ApiClient, namespace: str, name: str, body: Obj) -> None:
    """A strategic merge patch of the Deployment (labels, annotations, paused...)."""
    apps(api).patch_namespaced_deployment(name, namespace, body)


def read(api: client.ApiClient, namespace: str, name: str) -> Obj:
    response: Any = apps(api).read_namespaced_deployment(name, namespace, _preload_content=False)
    return dict(json.loads(response.data))
