"""``rollbackd replay``'s use case: read the cluster's change history through the edges of
``runtime.wiring`` and replay the span (``run.py``)."""

from __future__ import annotations

from datetime import datetime

from rollbackd.errors import KubeUnreachable
from rollbackd.replay.past import PastCluster
from rollbackd.replay.report import Report
from rollbackd.replay.run import Progress, replay
from rollbackd.runtime.wiring import Edges
from rollbackd.settings import RuleSettings, Settings


async def replay_history(
    settings: Settings,
    *,
    start: datetime,
    end: datetime,
    rules: list[RuleSettings],
    cluster: bool,
    progress: Progress | None,
) -> Report:
    """Read the change history (unless ``cluster`` is False) and replay the span."""
    with Edges(settings) as edges:
        past = None
        if cluster:
            deployments = await edges.managed_deployments()
            if deployments is None:
                raise KubeUnreachable(
                    "the cluster cannot be read for its change history "
                    "(use --no-cluster for breaches only)"
                )
            replicasets = []
            for namespace in sorted({d["metadata"]["namespace"] for d in deployments}):
                replicasets.extend(await edges.workloads.list_replicasets(namespace, ""))
            past = PastCluster(
                deployments,
                replicasets,
                rollback=settings.rollback,
                installation=f"{settings.leader_election.namespace}/"
                f"{settings.leader_election.lease_name}",
            )
        source = edges.prometheus()
        try:
            return await replay(
                settings,
                source=source,
                past=past,
                start=start,
                end=end,
                rules=rules,
                progress=progress,
            )
        finally:
            source.close()
