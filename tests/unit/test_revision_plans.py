"""The undo of a StatefulSet or DaemonSet, planned from its ControllerRevisions as a real
kubectl did it in the captures: the same revision, the same body, kubectl's own words when it
refuses; plus what rollbackd adds (never back to a known-bad template, the resourceVersion
precondition, its record in the same request)."""

from __future__ import annotations

from typing import Any

import pytest

from rollbackd.rollbacks.plan import Skip, SkipReason
from rollbackd.rollbacks.revisions import RevisionPlan, plan_revision_rollback, revision_history
from tests.kube_fixtures import load

KINDS = [("statefulset", "StatefulSet"), ("daemonset", "DaemonSet")]


def state(folder: str, step: str) -> tuple[Any, list[Any]]:
    workload = load(f"workloads/{folder}/{folder}-{step}.json")
    revisions = load(f"workloads/{folder}/controllerrevisions-{step}.json")["items"]
    return workload, revisions


def sent(folder: str, name: str) -> Any:
    """The body of the PATCH kubectl sent in the capture ``name``."""
    requests = load(f"workloads/{folder}/{name}.json")["requests"]
    (patch,) = [r for r in requests if r["method"] == "PATCH"]
    assert patch["content_type"] == "application/strategic-merge-patch+json"
    return patch["body"]


def planned(result: RevisionPlan | Skip) -> RevisionPlan:
    assert isinstance(result, RevisionPlan), result
    return result


@pytest.mark.parametrize(("folder", "kind"), KINDS)
@pytest.mark.parametrize(
    ("step", "capture", "to_revision"),
    [
        ("rev3", "rollout-undo1-requests", None),
        ("after-undo1", "rollout-undo2-requests", None),
        ("after-undo2", "rollout-undo-to-rev1-requests", 1),
    ],
)
def test_the_undo_is_the_one_kubectl_sent(
    folder: str, kind: str, step: str, capture: str, to_revision: int | None
) -> None:
    """For each captured undo, the plan returns to the revision kubectl chose and sends its
    very body, the ControllerRevision's data, with the object's resourceVersion in front."""
    workload, revisions = state(folder, step)
    plan = planned(plan_revision_rollback(workload, kind, revisions, to_revision=to_revision))
    body = sent(folder, capture)
    assert {k: v for k, v in plan.body.items() if k != "metadata"} == body
    assert plan.body["metadata"] == {"resourceVersion": workload["metadata"]["resourceVersion"]}
    assert plan.resource_version == workload["metadata"]["resourceVersion"]
    assert list(plan.body) == ["metadata", "spec"]  # the precondition in front, as captured


@pytest.mark.parametrize(("folder", "kind"), KINDS)
def test_the_second_undo_never_flips_back_to_the_bad_template(folder: str, kind: str) -> None:
    """After the first undo (from nginx:3.0), kubectl's second undo goes back to 3.0; with
    3.0's hash known bad, rollbackd's goes to revision 1 (nginx:1.0) instead, and a body
    carrying rollbackd's record besides the precondition."""
    workload, revisions = state(folder, "after-undo1")
    history = revision_history(workload, revisions)
    assert [(r.number, r.images) for r in history.revisions] == [
        (1, ("nginx:1.0",)),
        (3, ("nginx:3.0",)),
        (4, ("nginx:2.0",)),
    ]
    assert history.current is not None
    assert history.current.number == 4
    kubectl = planned(plan_revision_rollback(workload, kind, revisions))
    assert kubectl.to_revision.images == ("nginx:3.0",)
    bad = frozenset({kubectl.to_revision.template_hash})
    plan = planned(
        plan_revision_rollback(workload, kind, revisions, known_bad=bad)
    ).with_annotations({"rollbackd.io/cooldown-until": "2026-12-01T21:00:00Z"})
    assert (plan.from_revision.number, plan.to_revision.number) == (4, 1)
    assert plan.to_revision.images == ("nginx:1.0",)
    assert plan.body["metadata"]["annotations"] == {
        "rollbackd.io/cooldown-until": "2026-12-01T21:00:00Z"
    }
    assert plan.body["spec"]["template"]["$patch"] == "replace"
    every = frozenset(r.template_hash for r in history.revisions)
    refused = plan_revision_rollback(workload, kind, revisions, known_bad=every)
    assert refused == Skip(
        SkipReason.ONLY_BAD_TEMPLATES,
        f'every older revision of {folder} "web" was already rolled back from',
    )


@pytest.mark.parametrize(("folder", "kind"), KINDS)
def test_refusals_say_what_kubectl_says(folder: str, kind: str) -> None:
    """A single revision, an unknown revision and the current revision are refused with
    kubectl's words (the last one kubectl sends as a no-op; rollbackd does not send it)."""
    workload, revisions = state(folder, "rev1")
    assert plan_revision_rollback(workload, kind, revisions) == Skip(
        SkipReason.NO_HISTORY, "no last revision to roll back to"
    )
    workload, revisions = state(folder, "after-undo-to-rev1")
    assert plan_revision_rollback(workload, kind, revisions, to_revision=99) == Skip(
        SkipReason.REVISION_NOT_FOUND, "unable to find specified revision 99 in history"
    )
    current = revision_history(workload, revisions).current
    assert current is not None
    assert current.number == 6
    skipped = plan_revision_rollback(workload, kind, revisions, to_revision=6)
    assert isinstance(skipped, Skip)
    assert skipped.reason is SkipReason.ALREADY_CURRENT


@pytest.mark.parametrize(("folder", "kind"), KINDS)
def test_the_precondition_body_is_the_one_the_server_accepted(folder: str, kind: str) -> None:
    """The hand-sent precondition PATCH the API server accepted (200, the rollback done)
    is exactly what rollbackd plans for revision 5 of that state."""
    (current,) = [
        c for c in load(f"workloads/{folder}/precondition-patches.json") if c["case"] == "current"
    ]
    assert current["response_status"] == "200 OK"
    workload, revisions = state(folder, "after-undo-to-rev1")
    assert workload["metadata"]["resourceVersion"] == current["object_resourceVersion_at_send"]
    plan = planned(plan_revision_rollback(workload, kind, revisions, to_revision=5))
    assert plan.body == current["request"]["body"]
