"""``python -m rollbackd.testing.kube --port N --kubeconfig FILE``: serve the fake API server."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from rollbackd.testing.kube import Cluster, KubeApiServer


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
    args = parser.parse_args()
    cluster = Cluster(rollout=args.rollout)
    cluster.rollout_delay = args.rollout_delay
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
