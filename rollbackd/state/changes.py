"""When each workload's current template became current, as the watch saw it.

A fresh template dates itself: its ReplicaSet is created by the change. A template that
comes back (an undo, an old release deployed again) re-adopts an old ReplicaSet, and only an
observation of the change dates it. Observations are keyed by a digest of the template and
ordered by ``metadata.generation``, which the API server only ever raises (on a change of
a Deployment's spec or annotations, never on a status write): an old event seen again, or
a relist, can neither re-date a change nor move the record backwards. A workload first
seen in a LIST has no observed change (its time is unknown, and unknown never causes a
rollback).

Pure bookkeeping: the caller passes ``now``. Called from the watch thread; each update is
one dict assignment.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from rollbackd.model import Obj, Target


def template_digest(template: Obj) -> str:
    """A stable digest of a pod template, pod-template-hash label excluded."""
    meta = dict(template.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != "pod-template-hash"}
    meta.pop("creationTimestamp", None)
    clean = {**template, "metadata": {**meta, "labels": labels}}
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:16]


def workload_digest(workload: Obj) -> str:
    """The ``template_digest`` of a workload's pod template (``spec.template``)."""
    return template_digest(workload["spec"].get("template") or {})


@dataclass(frozen=True, slots=True)
class _Seen:
    generation: int
    digest: str
    changed_at: datetime | None


class ChangeTimes:
    """The latest observed template change of every workload."""

    def __init__(self) -> None:
        self._seen: dict[Target, _Seen] = {}

    def observe(self, old: Obj | None, new: Obj | None, *, now: datetime) -> None:
        """Take one watch or list event (``old`` is None when first seen)."""
        obj = new or old
        if obj is None:
            return
        meta = obj["metadata"]
        target = Target(meta["namespace"], meta["name"])
        if new is None:
            self._seen.pop(target, None)
            return
        generation = int(meta.get("generation") or 0)
        digest = workload_digest(new)
        known = self._seen.get(target)
        if known is None:
            changed = old is not None and workload_digest(old) != digest
            self._seen[target] = _Seen(generation, digest, now if changed else None)
        elif generation > known.generation:
            at = now if digest != known.digest else known.changed_at
            self._seen[target] = _Seen(generation, digest, at)

    def changed_at(self, deployment: Obj) -> datetime | None:
        """When ``deployment``'s current template was observed to become current."""
        meta = deployment["metadata"]
        known = self._seen.get(Target(meta["namespace"], meta["name"]))
        digest = workload_digest(deployment)
        if known is None or known.digest != digest:
            return None
        return known.changed_at
