"""The composition root: every edge rollbackd talks through, built from ``Settings`` here.

``rollbackd run``, the CLI commands (``eval``, ``history``, ``rollback``, ``notify-test``)
and the tests take their ports from ``Edges``, so an edge is configured one way wherever it
is used: the same API client (timeouts, no SDK retries, a User-Agent naming the replica),
the same read retries, the same executor. An import-linter contract keeps the daemon and
the CLI from building edges by hand.

The Kubernetes client is made on first use: ``eval`` needs Prometheus only, and works on
a machine without a kubeconfig.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, cast

import httpx
from kubernetes import client, config

from rollbackd.errors import RollbackdError
from rollbackd.model import Obj
from rollbackd.notifications.dingtalk import sender_for
from rollbackd.notifications.render import Renderer
from rollbackd.rollbacks.execute import RollbackExecutor
from rollbackd.rollbacks.informer import DeploymentCache
from rollbackd.rollbacks.kubernetes import KubernetesWorkloads, api_client
from rollbackd.runtime.leader import RELEASE_SECONDS, LeaderElector, LeaderLabel
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import AppRobot, RollbackSettings, Settings, WebhookRobot
from rollbackd.signals.prometheus import PrometheusSource

__all__ = ["RELEASE_SECONDS", "Edges", "renderer_for"]

log = get_logger(__name__)


def renderer_for(settings: Settings) -> Renderer:
    """The messages' renderer: the language, the operator's templates, the cluster's name."""
    notifications = settings.notifications
    return Renderer(
        notifications.language,
        notifications.templates_dir,
        cluster=settings.kubernetes.cluster_name,
    )


class Edges:
    """The ports of one process, built from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def api(self) -> client.ApiClient:
        return api_client(self.settings.kubernetes)

    @cached_property
    def workloads(self) -> KubernetesWorkloads:
        """Reads, patches, watches and Events (``Workloads``, ``RolloutWatcher``,
        ``EventRecorder``)."""
        return KubernetesWorkloads(
            self.api, sleep=asyncio.sleep, cluster=self.settings.kubernetes.cluster_name
        )

    def deployments(
        self,
        *,
        on_change: Callable[[Obj | None, Obj | None], None] | None = None,
        on_sync: Callable[[bool], None] | None = None,
    ) -> DeploymentCache:
        """The informer of managed Deployments (not started)."""
        return DeploymentCache(
            self.api, self.settings.kubernetes, on_change=on_change, on_sync=on_sync
        )

    def leader(self, *, on_change: Callable[[bool], None]) -> LeaderElector:
        return LeaderElector(self.api, self.settings.leader_election, on_change=on_change)

    def leader_label(self) -> LeaderLabel:
        """This replica's pod, as the downward API names it (nothing to label outside)."""
        return LeaderLabel(
            self.api,
            namespace=os.environ.get("POD_NAMESPACE", ""),
            name=os.environ.get("POD_NAME", ""),
        )

    async def managed_deployments(self) -> list[Obj] | None:
        """The managed Deployments read once, or None when no cluster can be reached (a
        machine with Prometheus access only: ``eval`` still works there)."""
        try:
            return await self.workloads.list_deployments(self.settings.kubernetes)
        except (RollbackdError, config.ConfigException) as exc:
            log.info("cluster_unreachable", error=str(exc))
            return None

    def prometheus(self) -> PrometheusSource:
        return PrometheusSource(self.settings.prometheus)

    def executor(
        self,
        rollback: RollbackSettings | None = None,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        may_write: Callable[[], bool] = lambda: True,
        delivered: Callable[[str], tuple[str, ...]] = lambda incident: (),
    ) -> RollbackExecutor:
        """The rollback executor; ``rollback`` overrides the settings' (a reload's)."""
        return RollbackExecutor(
            workloads=self.workloads,
            watcher=self.workloads,
            events=self.workloads,
            settings=rollback or self.settings.rollback,
            wall_clock=wall_clock,
            may_write=may_write,
            delivered=delivered,
            owners=self.workloads,
        )

    @staticmethod
    def sender(robot: WebhookRobot | AppRobot, http: httpx.AsyncClient) -> Any:
        """The DingTalk sender for one robot."""
        return sender_for(robot, http)

    def close(self) -> None:
        if "api" in self.__dict__:  # made only if used
            cast(Any, self.api).close()

    def __enter__(self) -> Edges:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
