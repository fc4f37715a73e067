"""Owner pauses: reading the one a rollback set, lifting it, and saying so.

A rollback of a workload that Flux (or, by choice, Argo CD) re-applies also pauses that
re-apply, and records the pause on the Deployment (``rollbackd.io/paused-owner``). The
pause ends when a person runs ``rollbackd resume NS/NAME``, when the owner's source
revision moves on (a fix is on its way, and must be free to land), or after
``rollback.owners.max_pause``. ``PauseKeeper`` checks the last two on the leader, every
``rollback.owners.check_every``; each lift is a message in the incident's thread.

Lifting is idempotent: the record goes last, so a lift cut off halfway is finished by the
next check or the next ``resume``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rollbackd.errors import KubeError
from rollbackd.incidents.owners import (
    FLUX_RECONCILE,
    OWNER_RESOURCES,
    SYNC_LEVER,
    Kind,
    lift_reason,
    owner_revision,
)
from rollbackd.model import Event, Incident, Obj, Target
from rollbackd.ports import Notify, OwnerObjects, Workloads
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import OwnerPolicies
from rollbackd.state.annotations import PAUSED_OWNER, PausedOwner, parse_paused_owner

log = get_logger(__name__)


@dataclass(frozen=True)
class Pause:
    """A pause found on a Deployment."""

    target: Target
    record: PausedOwner

    @property
    def owner(self) -> str:
        where = f"{self.record.namespace}/{self.record.name}"
        return f"{self.record.kind} {where}"


def pause_of(deployment: Obj) -> Pause | None:
    """The pause rollbackd set on ``deployment``, read from the Deployment itself."""
    meta = deployment["metadata"]
    text = (meta.get("annotations") or {}).get(PAUSED_OWNER)
    if not text:
        return None
    record = parse_paused_owner(text) or PausedOwner(
        incident="", at="", tool="", kind="", name="", namespace="", lever=""
    )
    return Pause(Target(meta["namespace"], meta["name"]), record)


async def lift(pause: Pause, *, workloads: Workloads, owners: OwnerObjects) -> None:
    """Undo the pause: Argo CD's automated sync back as it was, then the annotations."""
    record = pause.record
    if record.lever == SYNC_LEVER:
        patch = {"spec": {"syncPolicy": record.restore}}
        await owners.patch_owner(record.kind, record.namespace, record.name, patch)
    removed: dict[str, str | None] = {PAUSED_OWNER: None}
    if record.lever != SYNC_LEVER:
        removed[FLUX_RECONCILE] = None
    await workloads.annotate_deployment(*pause.target, removed)
    log.info("owner_resumed", target=str(pause.target), owner=pause.owner, incident=record.incident)


def resumed_message(pause: Pause, why: str) -> Incident:
    """The incident-thread message saying the owner applies the workload again."""
    return Incident(
        id=pause.record.incident or "-",
        event=Event.OWNER_RESUMED,
        target=pause.target,
        reason=why,
        reason_code="owner_resumed",
        owner=pause.owner,
        next_step="the owner applies this workload again: its next revision lands as usual",
    )


class PauseKeeper:
    """On the leader: lifts the pauses whose owner moved on or that lasted too long."""

    def __init__(
        self,
        *,
        deployments: Callable[[], list[Obj]],
        workloads: Workloads,
        owners: OwnerObjects,
        notifications: Callable[[], Notify],
        policies: Callable[[], OwnerPolicies],
        now: Callable[[], datetime],
    ) -> None:
        self._deployments = deployments
        self._workloads = workloads
        self._owners = owners
        self._notifications = notifications
        self._policies = policies
        self._now = now
        self._unreadable: set[str] = set()  # owners whose revision could not be read

    async def check(self) -> int:
        """One round over the paused Deployments; the number of pauses lifted."""
        lifted = 0
        for deployment in self._deployments():
            pause = pause_of(deployment)
            if pause is None:
                continue
            revision = await self._revision(pause.record)
            why = lift_reason(pause.record, revision, now=self._now(), owners=self._policies())
            if not why:
                continue
            try:
                await lift(pause, workloads=self._workloads, owners=self._owners)
            except KubeError as exc:
                log.warning("owner_resume_failed", target=str(pause.target), code=exc.code)
                continue
            self._notifications().notify(resumed_message(pause, why))
            lifted += 1
        return lifted

    async def _revision(self, record: PausedOwner) -> str | None:
        if record.kind not in OWNER_RESOURCES or not record.name:
            return None
        key = f"{record.kind}/{record.namespace}/{record.name}"
        try:
            found = await self._owners.get_owner(record.kind, record.namespace, record.name)
        except KubeError as exc:
            if key not in self._unreadable:  # said once: the pause then ends by max_pause
                log.warning("owner_unreadable", owner=key, code=exc.code)
                self._unreadable.add(key)
            return None
        self._unreadable.discard(key)
        return owner_revision(Kind(record.kind), found) or None
