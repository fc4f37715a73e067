"""The cluster as it was: each managed Deployment's objects at any moment of a replay.

Built from the objects as they are now. A ReplicaSet is created by the change that first
made its template current, so its ``creationTimestamp`` dates that change; a rollback
rollbackd wrote is dated by its record (``rollbackd.io/last-rollback``). At a moment of
the replay the Deployment holds the template of the latest change before it, and its
ReplicaSets carry the revisions the deployment controller would have given them then
(a template that becomes current again takes the next number). rollbackd's memory on the
objects (records, cooldown, known-bad templates) is today's, so it is left out: the replay
keeps its own, written by the rollbacks it would have made (``roll_back``), with the same
annotations the executor writes, and those count for every later guard.

The guards and the plan read these objects through ``situation_of`` and ``plan_rollback``,
as the daemon reads the live ones. What cannot be known from the objects (a person's
``kubectl rollout undo``, whose time no object keeps; labels and ``spec.paused`` as they
were) is taken as it is now.

Pure: no I/O; the caller passes the objects and the times.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from rollbackd.incidents.decide import Situation, Undo
from rollbackd.incidents.lifecycle import RolledBack, StartRollback
from rollbackd.model import Obj, Target
from rollbackd.rollbacks.plan import (
    POD_TEMPLATE_HASH,
    REVISION,
    REVISION_HISTORY,
    Skip,
    deployment_state,
    plan_rollback,
    rollout_history,
    situation_of,
    template_images,
)
from rollbackd.settings import RollbackSettings
from rollbackd.state.annotations import (
    DISABLED,
    PREFIX,
    RECENT_ROLLBACKS,
    after_rollback,
    format_time,
    parse_time,
    read_state,
)


@dataclass(frozen=True, order=True)
class Change:
    """A template becoming current: when, which (pod-template-hash), and by whom."""

    at: datetime
    template_hash: str
    by: str = "cluster"  # cluster (a ReplicaSet's creation, a record) | replay (its own undo)


@dataclass(frozen=True)
class Release:
    """A change as a report shows it: its time, revision and images."""

    at: datetime
    revision: int
    images: tuple[str, ...]
    by: str


@dataclass
class _Workload:
    deployment: Obj
    replicasets: dict[str, Obj]  # pod-template-hash -> the ReplicaSet as it is now
    changes: list[Change]  # oldest first
    memory: dict[str, str] = field(default_factory=dict)  # rollbackd.io/* written by replay


def _created(obj: Obj) -> datetime | None:
    return parse_time(obj["metadata"].get("creationTimestamp", ""))


def _without_memory(annotations: dict[str, str]) -> dict[str, str]:
    """Annotations without rollbackd's records: what it remembers now is not what it knew
    then. The opt-out stays: it is the operator's."""
    return {k: v for k, v in annotations.items() if not k.startswith(PREFIX) or k == DISABLED}


class PastCluster:
    """The managed Deployments and their ReplicaSets, as of any moment of the replay."""

    def __init__(
        self,
        deployments: Iterable[Obj],
        replicasets: Iterable[Obj],
        *,
        rollback: RollbackSettings,
        installation: str,
    ) -> None:
        self._rollback = rollback
        self._installation = installation
        by_owner: dict[str, list[Obj]] = {}
        for rs in replicasets:
            for ref in rs["metadata"].get("ownerReferences") or []:
                if ref.get("controller"):
                    by_owner.setdefault(str(ref.get("uid")), []).append(rs)
        self._workloads: dict[Target, _Workload] = {}
        for deployment in deployments:
            meta = deployment["metadata"]
            target = Target(meta["namespace"], meta["name"])
            owned = by_owner.get(str(meta.get("uid")), [])
            names = {rs["metadata"]["name"]: rs for rs in owned}
            found = {
                r.template_hash: names[r.replicaset]
                for r in rollout_history(deployment, owned).revisions
                if r.template_hash
            }
            changes = [Change(at, h) for h, rs in found.items() if (at := _created(rs)) is not None]
            last = read_state(meta.get("annotations") or {}).last_rollback
            if last is not None and not last.dry_run and (at := parse_time(last.at)):
                changes.append(Change(at, last.to_hash))
            self._workloads[target] = _Workload(deployment, found, sorted(changes))

    def managed(self, target: Target) -> bool:
        """Whether ``target`` is one of the managed Deployments."""
        return target in self._workloads

    def releases(self, target: Target, start: datetime, end: datetime) -> list[Release]:
        """The changes of ``target`` within ``[start, end]``, with their revisions."""
        workload = self._workloads.get(target)
        if workload is None:
            return []
        found = []
        revisions: dict[str, int] = {}
        number, current = 0, ""
        for change in workload.changes:
            if change.at > end:
                break
            if change.template_hash != current:
                number += 1
                revisions[change.template_hash], current = number, change.template_hash
                if change.at >= start:
                    rs = workload.replicasets.get(change.template_hash)
                    images = template_images(rs["spec"]["template"]) if rs is not None else ()
                    found.append(Release(change.at, number, images, change.by))
        return found

    def objects(self, target: Target, at: datetime) -> tuple[Obj, list[Obj], datetime] | None:
        """The Deployment and its ReplicaSets as they were at ``at``, and when the
        template then current became current; None before its first ReplicaSet."""
        workload = self._workloads.get(target)
        if workload is None:
            return None
        revisions: dict[str, list[int]] = {}
        number, current, since = 0, "", None
        for change in workload.changes:
            if change.at > at:
                break
            if change.template_hash != current and change.template_hash in workload.replicasets:
                number += 1
                revisions.setdefault(change.template_hash, []).append(number)
                current, since = change.template_hash, change.at
        if since is None:
            return None
        replicasets = []
        for template_hash, numbers in revisions.items():
            rs = copy.deepcopy(workload.replicasets[template_hash])
            annotations = _without_memory(rs["metadata"].get("annotations") or {})
            annotations[REVISION] = str(numbers[-1])
            annotations.pop(REVISION_HISTORY, None)
            if len(numbers) > 1:
                annotations[REVISION_HISTORY] = ",".join(map(str, numbers[:-1]))
            rs["metadata"]["annotations"] = annotations
            replicasets.append(rs)
        deployment = copy.deepcopy(workload.deployment)
        template = copy.deepcopy(workload.replicasets[current]["spec"]["template"])
        (template.get("metadata") or {}).get("labels", {}).pop(POD_TEMPLATE_HASH, None)
        deployment["spec"]["template"] = template
        meta = deployment["metadata"]
        annotations = _without_memory(meta.get("annotations") or {})
        annotations.update(workload.memory)
        annotations[REVISION] = str(number)
        meta["annotations"] = annotations
        return deployment, replicasets, since

    def situation(self, target: Target, at: datetime) -> Situation | None:
        """What the guards would have read at ``at`` (None: not managed then)."""
        found = self.objects(target, at)
        if found is None:
            return None
        deployment, replicasets, since = found
        return situation_of(
            deployment,
            replicasets,
            observed_change=since,
            argocd_namespace=self._rollback.owners.argocd_namespace,
        )

    def recent(self) -> frozenset[tuple[Target, str]]:
        """The automatic rollbacks the replay recorded, for the budget."""
        return frozenset(
            (target, at)
            for target, workload in self._workloads.items()
            for at in workload.memory.get(RECENT_ROLLBACKS, "").split(",")
            if at
        )

    def roll_back(self, start: StartRollback, at: datetime) -> RolledBack:
        """The rollback the executor would have made at ``at``, made in the replay's past:
        the template of the revision returned to becomes current, and the record, the
        known-bad template and the cooldown are remembered as the executor writes them."""
        found = self.objects(start.target, at)
        if found is None:
            return RolledBack(start.target, start.incident, "failed", "not_found", "no workload")
        deployment, replicasets, _ = found
        state = deployment_state(deployment, replicasets)
        plan = plan_rollback(deployment, replicasets, known_bad=frozenset(state.bad_templates))
        if isinstance(plan, Skip):
            return RolledBack(
                start.target, start.incident, "skipped", str(plan.reason), plan.message
            )
        undo = Undo(
            plan.from_revision.number,
            plan.to_revision.number,
            plan.from_revision.images,
            plan.to_revision.images,
        )
        summary = f"{start.target} from revision {undo.from_revision} to {undo.to_revision}"
        if start.dry_run:
            return RolledBack(start.target, start.incident, "dry_run", "ok", summary, undo=undo)
        record = plan.record(
            incident=start.incident,
            at=format_time(at),
            rule=start.rule,
            value=start.value,
            threshold=start.threshold,
            op=start.op,
            by=self._installation,
        )
        workload = self._workloads[start.target]
        workload.memory.update(
            after_rollback(state, record, now=at, cooldown=self._rollback.cooldown)
        )
        workload.changes.append(Change(at, record.to_hash, by="replay"))
        workload.changes.sort()
        return RolledBack(
            start.target,
            start.incident,
            "succeeded",
            "ok",
            summary,
            written=True,
            at=record.at,
            undo=undo,
        )
