"""Planning a rollback: ``kubectl rollout undo`` semantics, decided purely from objects.

Input: the Deployment and its ReplicaSets as the API returns them (plain JSON), and the
template hashes rollbackd already rolled back from. Output: a ``Plan`` carrying the exact
JSON patch ``kubectl rollout undo`` sends, plus a ``test`` of ``metadata.generation``, or a
``Skip`` with a reason code. The API server raises a Deployment's generation on every
change of its spec or annotations, never on a status write: a deploy, a scale or another
record landing between reading and patching is never overwritten, and the controller's
status writes during a rollout do not make the patch fail.

Differences from kubectl, on purpose: the default target is the newest *older* revision
whose template is not known to be bad (kubectl takes the second-highest revision, so two
undos in a row flip back to the bad template); rollbackd's own ``rollbackd.io/*``
annotations and the owner's markers (Argo CD's tracking id, Helm's release, Flux's
reconcile switch) are carried from the Deployment, never restored from an old ReplicaSet.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from rollbackd.incidents.decide import NoUndo, Situation, Undo
from rollbackd.incidents.owners import OWNER_ANNOTATIONS, Owner, owner_of
from rollbackd.model import Obj, Target
from rollbackd.state.annotations import PREFIX, DeploymentState, LastRollback, parse_time, state_of

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
POD_TEMPLATE_HASH = "pod-template-hash"
CHANGE_CAUSE = "kubernetes.io/change-cause"
# Deployment annotations kubectl keeps from the Deployment instead of the ReplicaSet.
KEPT_FROM_DEPLOYMENT = (
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
    *OWNER_ANNOTATIONS,  # an undo never changes who owns the workload, nor its pause
)


class SkipReason(StrEnum):
    NO_HISTORY = "no_history"
    REVISION_NOT_FOUND = "revision_not_found"
    ALREADY_CURRENT = "already_current"
    PAUSED = "paused"
    NOT_SYNCED = "not_synced"
    ONLY_BAD_TEMPLATES = "only_bad_templates"


def template_images(template: Obj) -> tuple[str, ...]:
    """The images of a pod template's containers, in order."""
    containers = (template.get("spec") or {}).get("containers") or []
    return tuple(str(c.get("image", "")) for c in containers)


@dataclass(frozen=True)
class Revision:
    """One entry of a Deployment's rollout history (one ReplicaSet)."""

    number: int
    replicaset: str
    template_hash: str
    template: Obj
    annotations: dict[str, str]
    created: str
    history: tuple[int, ...]

    @property
    def images(self) -> tuple[str, ...]:
        return template_images(self.template)

    @property
    def change_cause(self) -> str:
        return self.annotations.get(CHANGE_CAUSE, "")


@dataclass(frozen=True)
class History:
    revisions: tuple[Revision, ...]  # oldest first
    current: Revision | None  # the ReplicaSet whose template is the Deployment's


@dataclass(frozen=True, kw_only=True)
class Planned:
    """A rollback ready to send, of any kind: from which revision to which."""

    namespace: str
    name: str
    from_revision: Revision
    to_revision: Revision
    record_at: str = ""  # the time of the rollback record riding in the patch

    def record(
        self,
        *,
        incident: str,
        at: str,
        rule: str,
        value: float | None,
        threshold: float | None,
        op: str,
        by: str,
        dry_run: bool = False,
        manual: bool = False,
        note: str = "",
    ) -> LastRollback:
        """The ``rollbackd.io/last-rollback`` record of this rollback, made at ``at``."""
        return LastRollback(
            incident=incident,
            at=at,
            from_revision=self.from_revision.number,
            to_revision=self.to_revision.number,
            from_hash=self.from_revision.template_hash,
            to_hash=self.to_revision.template_hash,
            rule=rule,
            value=value,
            threshold=threshold,
            dry_run=dry_run,
            op=op,
            from_images=self.from_revision.images,
            to_images=self.to_revision.images,
            manual=manual,
            note=note,
            by=by,
        )


@dataclass(frozen=True, kw_only=True)
class Plan(Planned):
    """A Deployment's rollback: kubectl's JSON patch, with a test of the generation."""

    generation: int
    patch: list[Obj]

    def with_annotations(self, extra: dict[str, str]) -> Plan:
        """The same rollback, also writing ``extra`` annotations in the same patch."""
        patch = [dict(op) for op in self.patch]
        for op in patch:
            if op["path"] == "/metadata/annotations":
                op["value"] = {**op["value"], **extra}
        return replace(self, patch=patch)


@dataclass(frozen=True)
class Skip:
    reason: SkipReason
    message: str


def _strip_hash(template: Obj) -> Obj:
    clean = copy.deepcopy(template)
    labels = clean.get("metadata", {}).get("labels")
    if labels is not None:
        labels.pop(POD_TEMPLATE_HASH, None)
    clean.get("metadata", {}).pop("creationTimestamp", None)
    return clean


def same_template(a: Obj, b: Obj) -> bool:
    """Equal ignoring pod-template-hash, as kubectl and the controller compare templates."""
    return _strip_hash(a) == _strip_hash(b)


def controlled_by(owned: Obj, owner: Obj) -> bool:
    """``owner`` is ``owned``'s controller (a ReplicaSet's, a ControllerRevision's)."""
    uid = owner["metadata"].get("uid")
    return any(
        ref.get("controller") and ref.get("uid") == uid
        for ref in owned["metadata"].get("ownerReferences") or []
    )


def rollout_history(deployment: Obj, replicasets: list[Obj]) -> History:
    """The revisions of ``deployment``: ReplicaSets it controls, by revision number."""
    revisions = []
    current = None
    owned = sorted(
        (rs for rs in replicasets if controlled_by(rs, deployment)),
        key=lambda rs: (rs["metadata"].get("creationTimestamp", ""), rs["metadata"]["name"]),
    )
    for rs in owned:
        meta = rs["metadata"]
        annotations = meta.get("annotations") or {}
        try:
            number = int(annotations.get(REVISION, "0"))
        except ValueError:
            continue  # kubectl skips unparsable revisions too
        history = tuple(
            int(n) for n in annotations.get(REVISION_HISTORY, "").split(",") if n.isdigit()
        )
        template = rs["spec"]["template"]
        revision = Revision(
            number=number,
            replicaset=meta["name"],
            template_hash=(meta.get("labels") or {}).get(POD_TEMPLATE_HASH, ""),
            template=template,
            annotations=annotations,
            created=meta.get("creationTimestamp", ""),
            history=history,
        )
        revisions.append(revision)
        if current is None and same_template(template, deployment["spec"]["template"]):
            current = revision
    return History(tuple(sorted(revisions, key=lambda r: r.number)), current)


def choose_revision(
    history: History,
    current: Revision,
    *,
    known_bad: frozenset[str],
    to_revision: int | None,
    workload: str,
    no_history: str,
) -> Revision | Skip:
    """The revision an undo returns to: ``to_revision``, or the newest older one whose
    template was never rolled back from (kubectl takes the newest older one, bad or not).
    ``workload`` names it in messages; ``no_history`` is kubectl's words for its kind."""
    if to_revision:
        target = next((r for r in history.revisions if r.number == to_revision), None)
        if target is None:
            return Skip(
                SkipReason.REVISION_NOT_FOUND,
                f"unable to find specified revision {to_revision} in history",
            )
        return target
    older = [r for r in history.revisions if r.number < current.number]
    if not older:
        return Skip(SkipReason.NO_HISTORY, no_history)
    usable = [r for r in older if r.template_hash not in known_bad]
    if not usable:
        return Skip(
            SkipReason.ONLY_BAD_TEMPLATES,
            f"every older revision of {workload} was already rolled back from",
        )
    return usable[-1]


def plan_rollback(
    deployment: Obj,
    replicasets: list[Obj],
    *,
    known_bad: frozenset[str] = frozenset(),
    to_revision: int | None = None,
    extra_annotations: dict[str, str] | None = None,
) -> Plan | Skip:
    """Choose the revision to return to and build the patch, or say why not."""
    meta, spec = deployment["metadata"], deployment["spec"]
    name = meta["name"]
    history = rollout_history(deployment, replicasets)
    current = history.current
    if current is None:
        return Skip(
            SkipReason.NOT_SYNCED,
            f'deployment "{name}": no ReplicaSet holds the current template yet',
        )
    target = choose_revision(
        history,
        current,
        known_bad=known_bad,
        to_revision=to_revision,
        workload=f'deployment "{name}"',
        no_history=f'no rollout history found for deployment "{name}"',
    )
    if isinstance(target, Skip):
        return target
    if spec.get("paused"):
        return Skip(
            SkipReason.PAUSED,
            "you cannot rollback a paused deployment; resume it first with "
            "'kubectl rollout resume' and try again",
        )
    if same_template(target.template, spec["template"]):
        return Skip(
            SkipReason.ALREADY_CURRENT,
            f"skipped rollback (current template already matches revision {target.number})",
        )
    template = _strip_hash(target.template)
    # kubectl sends the template's metadata with "creationTimestamp": null first.
    template["metadata"] = {"creationTimestamp": None, **template.get("metadata", {})}
    current_annotations = meta.get("annotations") or {}
    annotations = {
        k: current_annotations[k] for k in KEPT_FROM_DEPLOYMENT if k in current_annotations
    }
    annotations.update(
        (k, v)
        for k, v in target.annotations.items()
        if k not in KEPT_FROM_DEPLOYMENT and not k.startswith(PREFIX)
    )
    annotations.update((k, v) for k, v in current_annotations.items() if k.startswith(PREFIX))
    annotations.update(extra_annotations or {})
    generation = int(meta["generation"])
    return Plan(
        namespace=meta["namespace"],
        name=name,
        from_revision=current,
        to_revision=target,
        generation=generation,
        patch=[
            {"op": "test", "path": "/metadata/generation", "value": generation},
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ],
    )


def selector_of(deployment: Obj) -> str:
    """The Deployment's selector as a label-selector string, as kubectl lists ReplicaSets."""
    selector = deployment["spec"].get("selector") or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = ",".join(expression.get("values") or [])
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[operator]
        )
    return ",".join(terms)


def changed_at(history: History, *, observed: datetime | None = None) -> datetime | None:
    """When the current template became current, as far as the objects tell.

    A fresh template's ReplicaSet was created by the change. A re-adopted ReplicaSet (a
    rollback, or an old template deployed again) is older than the change; only an
    observation by the watch cache (``observed``) dates it. Unknown is treated by the
    guards as "no recent change", so not knowing never causes a rollback.
    """
    current = history.current
    created = parse_time(current.created) if current and not current.history else None
    known = [t for t in (created, observed) if t is not None]
    return max(known) if known else None


def deployment_state(deployment: Obj, replicasets: list[Obj]) -> DeploymentState:
    """rollbackd's state on ``deployment``, merged with the copies on its ReplicaSets."""
    copies = [
        rs["metadata"].get("annotations") or {}
        for rs in replicasets
        if controlled_by(rs, deployment)
    ]
    return state_of(deployment["metadata"].get("annotations") or {}, copies)


def situation_of(
    deployment: Obj,
    replicasets: list[Obj],
    *,
    observed_change: datetime | None = None,
    to_revision: int | None = None,
    argocd_namespace: str = "argocd",
) -> Situation:
    """What the guards need to know about ``deployment``, with the rollback it allows."""
    meta = deployment["metadata"]
    history = rollout_history(deployment, replicasets)
    annotations = meta.get("annotations") or {}
    state = deployment_state(deployment, replicasets)
    plan = plan_rollback(
        deployment, replicasets, known_bad=frozenset(state.bad_templates), to_revision=to_revision
    )
    undo: Undo | NoUndo = (
        NoUndo(str(plan.reason), plan.message)
        if isinstance(plan, Skip)
        else Undo(
            plan.from_revision.number,
            plan.to_revision.number,
            plan.from_revision.images,
            plan.to_revision.images,
        )
    )
    return Situation(
        target=Target(meta["namespace"], meta["name"]),
        labels=meta.get("labels") or {},
        annotations=annotations,
        paused=bool(deployment["spec"].get("paused")),
        current_hash=history.current.template_hash if history.current else "",
        changed_at=changed_at(history, observed=observed_change),
        state=state,
        undo=undo,
        owner=owner_of_workload(deployment, argocd_namespace=argocd_namespace),
    )


def owner_of_workload(obj: Obj, *, argocd_namespace: str) -> Owner | None:
    """Who re-applies ``obj``: its labels, annotations and field managers say."""
    meta = obj["metadata"]
    return owner_of(
        meta.get("labels") or {},
        meta.get("annotations") or {},
        [str(m.get("manager", "")) for m in meta.get("managedFields") or []],
        argocd_namespace=argocd_namespace,
    )
