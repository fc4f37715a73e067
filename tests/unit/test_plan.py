"""Planning a rollback from real captured objects: kubectl's patch, safer target choice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rollbackd.rollbacks.plan import (
    Plan,
    Skip,
    SkipReason,
    plan_rollback,
    rollout_history,
    selector_of,
    situation_of,
)
from rollbackd.rollbacks.status import rollout_status
from tests.kube_fixtures import captured_undo_patch, items, load


def planned(deployment: str, replicasets: str, **kwargs: object) -> Plan:
    plan = plan_rollback(load(deployment), items(replicasets), **kwargs)  # type: ignore[arg-type]
    assert isinstance(plan, Plan), plan
    return plan


def skipped(deployment: str, replicasets: str, **kwargs: object) -> Skip:
    plan = plan_rollback(load(deployment), items(replicasets), **kwargs)  # type: ignore[arg-type]
    assert isinstance(plan, Skip), plan
    return plan


def test_patch_equals_kubectls_apart_from_the_test_op() -> None:
    """At revision 3 the patch is byte for byte kubectl's, after a test of the generation
    read (a status write leaves it; a deploy, a scale or an annotation raises it)."""
    plan = planned("deployment-rev3.json", "replicasets-rev3.json")
    test, *rest = plan.patch
    assert test == {"op": "test", "path": "/metadata/generation", "value": 3}
    assert rest == captured_undo_patch()
    assert (plan.from_revision.number, plan.to_revision.number) == (3, 2)
    assert plan.to_revision.images == ("nginx:2.0",)


def test_annotations_are_restored_and_dropped_as_kubectl_does() -> None:
    """change-cause comes back from the ReplicaSet; annotations added later are dropped."""
    plan = planned(
        "annotations-deployment-before-undo.json", "annotations-replicasets-before-undo.json"
    )
    expected = load("annotations-undo-summary.json")["undo_patch_request"]["body"]
    assert plan.patch[1:] == expected


def test_rollbackd_state_rides_in_the_same_patch() -> None:
    """State annotations are added to kubectl's annotation map, not sent separately."""
    plan = planned("deployment-rev3.json", "replicasets-rev3.json")
    stamped = plan.with_annotations({"rollbackd.io/cooldown-until": "2026-11-27T04:00:00Z"})
    annotations = stamped.patch[2]["value"]
    assert annotations == {
        "deployment.kubernetes.io/revision": "3",
        "rollbackd.io/cooldown-until": "2026-11-27T04:00:00Z",
    }
    assert plan.patch[2]["value"] == {"deployment.kubernetes.io/revision": "3"}


def test_second_rollback_never_returns_to_the_template_rolled_back_from() -> None:
    """After undo #1 (rev 4 = 2.0), the bad 3.0 template is skipped: the target is rev 1."""
    history = rollout_history(
        load("deployment-after-undo1.json"), items("replicasets-after-undo1.json")
    )
    bad = next(r for r in history.revisions if r.images == ("nginx:3.0",)).template_hash
    plan = planned(
        "deployment-after-undo1.json", "replicasets-after-undo1.json", known_bad=frozenset({bad})
    )
    assert plan.to_revision.images == ("nginx:1.0",)
    assert plan.to_revision.number == 1
    # kubectl's own choice, the second-highest revision, would have flipped back to 3.0:
    naive = planned("deployment-after-undo1.json", "replicasets-after-undo1.json")
    assert naive.to_revision.images == ("nginx:3.0",)


def test_only_bad_templates_left_is_a_skip() -> None:
    """When every older template was already rolled back from, rollbackd does nothing."""
    history = rollout_history(load("deployment-rev3.json"), items("replicasets-rev3.json"))
    hashes = frozenset(r.template_hash for r in history.revisions)
    assert (
        skipped("deployment-rev3.json", "replicasets-rev3.json", known_bad=hashes).reason
        is SkipReason.ONLY_BAD_TEMPLATES
    )


def test_one_revision_only_is_skipped_with_kubectls_words() -> None:
    """A Deployment with one revision has nothing to return to."""
    skip = skipped("deployment-single-rev1.json", "replicasets-single-rev1.json")
    assert skip.reason is SkipReason.NO_HISTORY
    assert skip.message == 'no rollout history found for deployment "single"'


def test_paused_deployment_is_skipped() -> None:
    """A paused Deployment is left alone, as kubectl refuses it."""
    skip = skipped("deployment-paused.json", "replicasets-after-undo-to-rev1.json")
    assert skip.reason is SkipReason.PAUSED
    assert "resume it first" in skip.message


@pytest.mark.parametrize(
    ("revision", "reason", "message"),
    [
        (99, SkipReason.REVISION_NOT_FOUND, "unable to find specified revision 99 in history"),
        (
            6,
            SkipReason.ALREADY_CURRENT,
            "skipped rollback (current template already matches revision 6)",
        ),
    ],
)
def test_explicit_revisions(revision: int, reason: SkipReason, message: str) -> None:
    """--to-revision behaves as kubectl's: unknown numbers and the current one are refused."""
    skip = skipped(
        "deployment-after-undo-to-rev1.json",
        "replicasets-after-undo-to-rev1.json",
        to_revision=revision,
    )
    assert (skip.reason, skip.message) == (reason, message)


def test_history_follows_renumbering() -> None:
    """After undos the history lists 4, 5, 6 with revision-history, as `rollout history` does."""
    history = rollout_history(
        load("deployment-after-undo-to-rev1.json"), items("replicasets-after-undo-to-rev1.json")
    )
    assert [r.number for r in history.revisions] == [4, 5, 6]
    assert history.current is not None
    assert history.current.number == 6
    assert history.current.history == (1,)


def test_selector_string() -> None:
    """ReplicaSets are listed with the Deployment's selector, as kubectl does (app=web)."""
    assert selector_of(load("deployment-rev3.json")) == "app=web"


def test_change_time_of_a_fresh_template_is_its_replicaset() -> None:
    """A new template's change time is its ReplicaSet's creation; a re-adopted one is unknown."""
    fresh = situation_of(load("deployment-rev3.json"), items("replicasets-rev3.json"))
    assert fresh.changed_at == datetime(2026, 11, 27, 3, 34, 25, tzinfo=UTC)
    readopted = situation_of(
        load("deployment-after-undo1.json"), items("replicasets-after-undo1.json")
    )
    assert readopted.changed_at is None
    seen = datetime(2026, 11, 27, 3, 40, tzinfo=UTC)
    observed = situation_of(
        load("deployment-after-undo1.json"),
        items("replicasets-after-undo1.json"),
        observed_change=seen,
    )
    assert observed.changed_at == seen


def test_rollout_status_follows_kubectl() -> None:
    """The captured deadline-exceeded and in-progress Deployments read as kubectl reads them."""
    stuck = rollout_status(load("deployment-progress-deadline-exceeded.json"))
    assert (stuck.done, stuck.failed) == (True, True)
    assert stuck.message == 'deployment "stuck" exceeded its progress deadline'
    waiting = rollout_status(load("deployment-rev3.json"))
    assert not waiting.done
    assert waiting.message == (
        'Waiting for deployment "web" rollout to finish: '
        "1 out of 2 new replicas have been updated..."
    )
