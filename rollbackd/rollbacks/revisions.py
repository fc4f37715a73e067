"""The undo of a StatefulSet or DaemonSet as kubectl plans it, from its ControllerRevisions
(pure).

``kubectl rollout undo`` for these kinds reads the ControllerRevisions the object controls
(an ownerReference with ``controller: true``, listed with its selector), orders them by
``.revision``, takes the second-highest (or ``--to-revision``), and sends a strategic merge
patch whose body is that revision's ``data``, verbatim. rollbackd plans the same undo with
three differences:

- never back to a template it rolled back from (``rollbackd.io/bad-templates``, which for
  these kinds holds the ControllerRevision hashes): two undos in a row would otherwise flip
  back to the bad release, as they do with kubectl;
- ``metadata.resourceVersion`` rides in the patch, so the API server answers 409 when the
  object changed since it was read, and nothing is written over a newer release;
- its record (the ``rollbackd.io/*`` annotations) rides in the same request; kubectl leaves
  the object's annotations alone, and so do these patches beyond rollbackd's own.

An undo to the current template is skipped: kubectl sends it anyway, and the API server
treats it as a no-op.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

from rollbackd.model import Obj
from rollbackd.rollbacks.plan import (
    History,
    Planned,
    Revision,
    Skip,
    SkipReason,
    choose_revision,
    controlled_by,
    same_template,
)

HASH_LABELS = ("controller.kubernetes.io/hash", "controller-revision-hash")
"""The label naming a ControllerRevision's hash: the StatefulSet's, then the DaemonSet's."""


@dataclass(frozen=True, kw_only=True)
class RevisionPlan(Planned):
    """A StatefulSet's or DaemonSet's rollback: the revision's data, the precondition and
    the record, in one strategic merge patch."""

    kind: str  # StatefulSet | DaemonSet
    resource_version: str
    body: Obj

    def with_annotations(self, extra: dict[str, str]) -> RevisionPlan:
        """The same rollback, also writing ``extra`` annotations in the same request."""
        meta = self.body["metadata"]
        annotations = {**(meta.get("annotations") or {}), **extra}
        return replace(self, body={**self.body, "metadata": {**meta, "annotations": annotations}})


def _template(revision: Obj) -> Obj:
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return dict(template)


def revision_history(workload: Obj, revisions: list[Obj]) -> History:
    """The ControllerRevisions ``workload`` controls, oldest first, and the current one."""
    found: list[Revision] = []
    for item in revisions:
        if not controlled_by(item, workload):
            continue
        meta = item["metadata"]
        labels = meta.get("labels") or {}
        found.append(
            Revision(
                number=int(item.get("revision") or 0),
                replicaset=meta["name"],
                template_hash=next((labels[k] for k in HASH_LABELS if k in labels), meta["name"]),
                template=_template(item),
                annotations=dict(meta.get("annotations") or {}),
                created=str(meta.get("creationTimestamp") or ""),
                history=(),
            )
        )
    found.sort(key=lambda r: r.number)
    template = workload["spec"].get("template") or {}
    current = next((r for r in reversed(found) if same_template(r.template, template)), None)
    return History(tuple(found), current)


def plan_revision_rollback(
    workload: Obj,
    kind: str,
    revisions: list[Obj],
    *,
    known_bad: frozenset[str] = frozenset(),
    to_revision: int | None = None,
    extra_annotations: dict[str, str] | None = None,
) -> RevisionPlan | Skip:
    """Choose the ControllerRevision to return to and build the patch, or say why not."""
    meta = workload["metadata"]
    name, noun = meta["name"], kind.lower()
    history = revision_history(workload, revisions)
    current = history.current
    if current is None:
        return Skip(
            SkipReason.NOT_SYNCED, f'{noun} "{name}": no ControllerRevision holds its template yet'
        )
    target = choose_revision(
        history,
        current,
        known_bad=known_bad,
        to_revision=to_revision,
        workload=f'{noun} "{name}"',
        no_history="no last revision to roll back to",
    )
    if isinstance(target, Skip):
        return target
    if same_template(target.template, current.template):
        return Skip(
            SkipReason.ALREADY_CURRENT,
            f"skipped rollback (current template already matches revision {target.number})",
        )
    data = next(r for r in revisions if r["metadata"]["name"] == target.replicaset)["data"]
    precondition: Obj = {"resourceVersion": str(meta["resourceVersion"])}
    if extra_annotations:
        precondition["annotations"] = dict(extra_annotations)
    return RevisionPlan(
        namespace=meta["namespace"],
        name=name,
        kind=kind,
        from_revision=current,
        to_revision=target,
        resource_version=precondition["resourceVersion"],
        body={"metadata": precondition, **copy.deepcopy(data)},
    )
