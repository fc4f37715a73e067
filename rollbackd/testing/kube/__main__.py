"""``python -m rollbackd.testing.kube --port N --kubeconfig FILE``: serve the fake API server."""

from __future__ import annotations

import argparse
import copy
import json
import signal
import threading
from pathlib import Path

from rollbackd.testing.kube import Cluster, KubeApiServer
from rollbackd.testing.kube.shapes import default_deployment

MANAGED_FIELDS = Path(__file__).parent / "data" / "managed-fields-deployment.json"
"""The ``managedFields`` of a captured Deployment (created, status written, image set)."""


def seed_deployments(cluster: Cluster, count: int, *, real_shaped: bool = False) -> None:
    """Opted-in Deployments written straight into the store, as the API would default them.

    ``real_shaped`` gives each the ``managedFields`` a real API server keeps (about half of
    a Deployment's size), so that benchmarks measure memory on objects as they arrive.
    """
    managed = json.loads(MANAGED_FIELDS.read_text()) if real_shaped else None
    with cluster.lock:
        for namespace in sorted({f"ns-{i % 100}" for i in range(count)}):
            cluster.put("namespaces", "", Cluster.new_object("Namespace", "v1", namespace, "", {}))
        for index in range(count):
            namespace, name = f"ns-{index % 100}", f"app-{index}"
            body = {
                "metadata": {
                    "labels": {"app": name, "rollbackd.io/enabled": "true"},
                    "generation": 1,
                },
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "app:1.0"}]},
                    },
                },
            }
            obj = Cluster.new_object("Deployment", "apps/v1", name, namespace, body)
            default_deployment(obj)
            if managed is not None:
                obj["metadata"]["managedFields"] = copy.deepcopy(managed)
            cluster.put("deployments", namespace, obj)
            cluster.sync_deployment(namespace, name)


def main() -> None:
    parser = argparse.ArgumentParser(description="rollbackd's fake Kubernetes API server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for it here")
    parser.add_argument(
        "--rollout",
        choices=["available", "never", "deadline_exceeded"],
        default="available",
        help="how Deployments behave after a change",
    )
    parser.add_argument("--rollout-delay", type=float, default=0.0, help="seconds to available")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="start with this many opted-in Deployments (ns-<i%%100>/app-<i>), for benchmarks",
    )
    parser.add_argument(
        "--real-shaped",
        action="store_true",
        help="seeded Deployments carry managedFields as a real API server's do",
    )
    args = parser.parse_args()
    cluster = Cluster(rollout=args.rollout)
    cluster.rollout_delay = args.rollout_delay
    seed_deployments(cluster, args.seed, real_shaped=args.real_shaped)
    server = KubeApiServer(args.port, cluster=cluster).start()
    if args.kubeconfig:
        args.kubeconfig.write_text(server.kubeconfig())
    print(f"fake kube-apiserver on {server.url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
