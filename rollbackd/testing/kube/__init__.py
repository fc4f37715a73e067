"""A fake Kubernetes API server that speaks the real HTTP API.

The official ``kubernetes`` client and ``kubectl`` talk to it unchanged. It keeps
namespaces, Deployments, ReplicaSets, StatefulSets, DaemonSets, ControllerRevisions, Events
(both APIs) and Leases, answers errors in the real ``Status`` shape, streams watches, and
simulates the deployment, StatefulSet and DaemonSet controllers' revision bookkeeping as the
captures in the project's fixtures show. Fault knobs: ``faults.latency``, ``faults.injected``
(HTTP errors or dropped connections), ``faults.forbidden`` (403 for a verb and resource),
``faults.expire_watches`` (410 Gone); rollout knobs on ``cluster``: ``default_rollout``/
``rollouts`` (available, never, deadline_exceeded), ``stalling_images`` and
``rollout_delay``.
"""

from rollbackd.testing.kube.cluster import Cluster
from rollbackd.testing.kube.faults import Fault, Hook
from rollbackd.testing.kube.server import KubeApiServer

__all__ = ["Cluster", "Fault", "Hook", "KubeApiServer"]
