"""The delivery record: which of an incident's messages every robot is done with.

It is written on the workload (``rollbackd.io/messages``) once the incident has a rollback
record there, so that a new leader sends exactly the messages the last one had not.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from rollbackd.errors import KubeError
from rollbackd.model import Target
from rollbackd.ports import DeploymentView, Workloads
from rollbackd.runtime.logs import get_logger
from rollbackd.state.annotations import MESSAGES, format_messages, read_state

log = get_logger(__name__)

MAX_TRACKED = 1000
"""Incidents remembered; the oldest are forgotten first."""


class DeliveryRecord:
    """Delivered events per incident, and the workloads whose record carries them."""

    def __init__(
        self,
        *,
        deployments: DeploymentView,
        workloads: Workloads,
        is_leader: Callable[[], bool],
    ) -> None:
        self._deployments = deployments
        self._workloads = workloads
        self._is_leader = is_leader
        self._said: OrderedDict[str, list[str]] = OrderedDict()  # incident -> delivered events
        self._written: OrderedDict[str, Target] = OrderedDict()  # incidents with a rollback
        self._lock = asyncio.Lock()

    def said(self, incident: str) -> tuple[str, ...]:
        """The messages of ``incident`` delivered so far."""
        return tuple(self._said.get(incident, ()))

    def delivered(self, incident: str, event: str) -> bool:
        """Note that every robot is done with this message; whether the record on the
        workload should now be written."""
        said = self._said.setdefault(incident, [])
        if event not in said:
            said.append(event)
        while len(self._said) > MAX_TRACKED:
            self._said.popitem(last=False)
        return incident in self._written

    def track(self, incident: str, target: Target) -> None:
        """Deliveries for ``incident`` are recorded on ``target`` from now on."""
        self._written[incident] = target
        while len(self._written) > MAX_TRACKED:
            self._written.popitem(last=False)

    async def write(self, incident: str) -> None:
        """``rollbackd.io/messages``: what was delivered, for the next leader."""
        target = self._written.get(incident)
        if target is None or not self._is_leader():
            return
        async with self._lock:
            said = self.said(incident)
            deployment = self._deployments.get(*target)
            annotations = (deployment or {}).get("metadata", {}).get("annotations") or {}
            last = read_state(annotations).last_rollback
            if last is not None and last.incident != incident:
                return  # a later rollback's record is there now
            try:
                await self._workloads.annotate_deployment(
                    *target, {MESSAGES: format_messages(incident, said)}
                )
            except KubeError as exc:
                log.warning("delivery_record_failed", incident_id=incident, code=exc.code)
