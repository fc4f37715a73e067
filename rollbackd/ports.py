"""The small interfaces between rollbackd's pure stages and the outside world.

Each port is shaped by what rollbackd needs, not by an SDK. Edge modules implement them;
``rollbackd.testing`` and the tests provide fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from rollbackd.model import Incident, Instant, Message, Obj, QueryResult
from rollbackd.settings import TargetLabels


class Clock(Protocol):
    """Where time comes from: the system in production, a fake in tests."""

    def now(self) -> Instant: ...


class MetricsSource(Protocol):
    """Answers PromQL instant queries as values per target."""

    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        """One instant query; raises ``PrometheusError`` subclasses on failure."""
        ...

    async def query_range(
        self, expr: str, *, target_labels: TargetLabels, start: float, end: float, step: float
    ) -> list[tuple[float, QueryResult]]:
        """A range query (unix seconds) as one ``QueryResult`` per evaluation time."""
        ...

    async def check_syntax(self, expr: str) -> bool:
        """Raises ``PrometheusBadQuery`` naming the problem when ``expr`` does not parse;
        False when the backend has no syntax check (VictoriaMetrics, Prometheus < 2.38)."""
        ...


class Workloads(Protocol):
    """Reads and changes Deployments (their API JSON) and their ReplicaSets."""

    async def get_deployment(self, namespace: str, name: str) -> Obj: ...

    async def list_replicasets(self, namespace: str, selector: str) -> list[Obj]: ...

    async def patch_deployment(self, namespace: str, name: str, patch: list[Obj]) -> Obj:
        """A JSON patch; raises ``KubeConflict`` when one of its ``test`` ops fails."""
        ...

    async def annotate_deployment(
        self, namespace: str, name: str, annotations: dict[str, str | None]
    ) -> None:
        """Set annotations only (None removes one); never the template."""
        ...


class OwnerObjects(Protocol):
    """Reads and merge-patches the objects that own workloads (Argo CD, Flux)."""

    async def get_owner(self, kind: str, namespace: str, name: str) -> Obj: ...

    async def patch_owner(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj: ...


class RolloutWatcher(Protocol):
    """Follows one Deployment until a condition holds or time runs out."""

    async def wait_deployment(
        self, namespace: str, name: str, done: Callable[[Obj], bool], wait_seconds: float
    ) -> Obj: ...


class EventRecorder(Protocol):
    """Writes Kubernetes Events on a Deployment."""

    async def record_event(
        self, deployment: Obj, *, reason: str, note: str, warning: bool = False
    ) -> None: ...


class Notifier(Protocol):
    """Delivers one rendered message to one robot; raises ``DingTalkError`` on failure."""

    async def send(self, message: Message, *, at_all: bool) -> None: ...


class DeploymentView(Protocol):
    """The watch cache, as incidents read it."""

    @property
    def synced(self) -> bool: ...

    def get(self, namespace: str, name: str) -> Obj | None: ...

    def all(self) -> list[Obj]: ...

    def annotated(self, annotation: str) -> list[Obj]:
        """The workloads that carry ``annotation`` (kept indexed: no scan of every one)."""
        ...


class Notify(Protocol):
    """The outboxes, as the incident core's runner and the pause keeper hand them messages."""

    def notify(self, incident: Incident) -> list[str]: ...
