"""Releases from the watch: which deploy-status messages a group hears, in which order, and
when a stalled rollout becomes a breach of the built-in rule ``progress-deadline``."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from rollbackd.model import Event, Incident, Instant, Obj, RuleState, Target
from rollbackd.rollbacks.rollouts import PROGRESS_DEADLINE, Observed, Rollouts
from rollbackd.settings import RollbackSettings
from tests.kube_fixtures import load

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
WEB = Target("shop", "web")


def at(seconds: float) -> Instant:
    return Instant(seconds, T0 + timedelta(seconds=seconds))


def deployment(
    generation: int,
    image: str,
    *,
    observed: int | None = None,
    revision: int = 1,
    progressing: str = "NewReplicaSetAvailable",
    updated: int = 2,
    available: int = 2,
    total: int = 2,
    annotations: dict[str, str] | None = None,
) -> Obj:
    """shop/web as the API server shows it: spec, revision, and the controller's status."""
    return {
        "metadata": {
            "namespace": "shop",
            "name": "web",
            "generation": generation,
            "annotations": {
                "deployment.kubernetes.io/revision": str(revision),
                **(annotations or {}),
            },
        },
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"name": "nginx", "image": image}]}},
        },
        "status": {
            "observedGeneration": generation if observed is None else observed,
            "replicas": total,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {
                    "type": "Progressing",
                    "status": "False" if progressing == "ProgressDeadlineExceeded" else "True",
                    "reason": progressing,
                    "message": 'ReplicaSet "web-2" has timed out progressing.'
                    if progressing == "ProgressDeadlineExceeded"
                    else 'ReplicaSet "web-2" is progressing.',
                },
            ],
        },
    }


def release(image: str, generation: int, revision: int, *, stalls: bool = False) -> list[Obj]:
    """The watch events of one ``kubectl set image``, as the controller writes them: the
    patch, the revision annotation, the rollout in progress, then done (or stalled)."""
    return [
        deployment(generation, image, observed=generation - 1, revision=revision - 1),
        deployment(generation + 1, image, observed=generation - 1, revision=revision),
        deployment(
            generation + 1,
            image,
            revision=revision,
            progressing="ReplicaSetUpdated",
            updated=1,
            available=2,
            total=3,
        ),
        deployment(
            generation + 1,
            image,
            revision=revision,
            progressing="ProgressDeadlineExceeded" if stalls else "NewReplicaSetAvailable",
            updated=1 if stalls else 2,
            available=2,
            total=3 if stalls else 2,
        ),
    ]


def watch(
    rollouts: Rollouts, events: list[Obj], *, first: Obj | None, start: float = 0
) -> list[Observed]:
    """Feed ``events`` after ``first`` (already seen); one second apart."""
    seen, old = [], first
    for n, new in enumerate(events):
        seen.append(rollouts.observe(old, new, now=at(start + n)))
        old = new
    return seen


def told(seen: list[Observed]) -> list[Incident]:
    return [message for observed in seen for message in observed.messages]


def policy(on_progress_deadline: str = "notify") -> Any:
    settings = RollbackSettings(on_progress_deadline=on_progress_deadline)
    return lambda: settings


def test_a_release_is_told_started_then_succeeded_with_its_revisions_and_images() -> None:
    """Two releases in a row: each is told once as started (when the controller observed
    it, with the revision it moves from and to, both images and the change-cause) and once
    as rolled out, in the order they happened; nothing is told of a first sight."""
    rollouts = Rollouts(policy())
    first = deployment(1, "nginx:1.0")
    assert rollouts.observe(None, first, now=at(0)) == Observed()
    one = release("nginx:2.0", 2, 2)
    one[0]["metadata"]["annotations"]["kubernetes.io/change-cause"] = "pipeline #812"
    for event in one[1:]:
        event["metadata"]["annotations"]["kubernetes.io/change-cause"] = "pipeline #812"
    two = release("nginx:2.1", 4, 3)
    messages = told(watch(rollouts, one + two, first=first, start=10))
    assert [(m.event, m.from_revision, m.to_revision) for m in messages] == [
        (Event.DEPLOY_STARTED, 1, 2),
        (Event.DEPLOY_SUCCEEDED, 1, 2),
        (Event.DEPLOY_STARTED, 2, 3),
        (Event.DEPLOY_SUCCEEDED, 2, 3),
    ]
    assert [(m.from_images, m.to_images) for m in messages] == [
        (("nginx:1.0",), ("nginx:2.0",)),
        (("nginx:1.0",), ("nginx:2.0",)),
        (("nginx:2.0",), ("nginx:2.1",)),
        (("nginx:2.0",), ("nginx:2.1",)),
    ]
    assert messages[0].id == messages[1].id != messages[2].id == messages[3].id
    assert messages[0].change_cause == "pipeline #812"
    assert messages[0].since == T0 + timedelta(seconds=10)  # when the change was seen
    assert messages[1].reason == 'deployment "web" successfully rolled out'
    assert messages[0].reason == ""


def test_a_stalled_rollout_is_told_failed_and_breaches_progress_deadline() -> None:
    """A rollout that ends in ProgressDeadlineExceeded is told started, then stalled with
    the controller's words, and is one firing verdict of progress-deadline whose note says
    it stalled; the finished rollout of the undo resolves it, once."""
    rollouts = Rollouts(policy("rollback"))
    first = deployment(1, "nginx:1.0")
    rollouts.observe(None, first, now=at(0))
    events = release("nginx:2.0", 2, 2, stalls=True)
    seen = watch(rollouts, events, first=first, start=10)
    assert [m.event for m in told(seen)] == [Event.DEPLOY_STARTED, Event.DEPLOY_FAILED]
    failed = told(seen)[1]
    assert "exceeded its progress deadline" in failed.reason
    assert "has timed out progressing" in failed.note
    (verdict,) = [v for observed in seen for v in observed.verdicts]
    assert (verdict.rule, verdict.target, verdict.state) == (
        PROGRESS_DEADLINE,
        WEB,
        RuleState.FIRING,
    )
    assert verdict.action == "rollback"
    assert verdict.began == T0 + timedelta(seconds=13)
    assert "the rollout stalled: no progress for 600s" in verdict.note
    assert verdict.threshold == 600

    stalled = events[-1]
    repeated = rollouts.observe(stalled, stalled, now=at(20))  # a status write, same stall
    assert repeated == Observed()
    undo = deployment(
        5,
        "nginx:1.0",
        revision=3,
        annotations={"rollbackd.io/last-rollback": '{"incident": "rb-1"}'},
    )
    seen = [rollouts.observe(stalled, undo, now=at(30))]
    seen.append(rollouts.observe(undo, undo, now=at(31)))
    assert told(seen) == []  # rollbackd's own undo is told by its incident
    resolved = [v for observed in seen for v in observed.verdicts]
    assert [(v.rule, v.state, v.breaching) for v in resolved] == [
        (PROGRESS_DEADLINE, RuleState.INACTIVE, False)
    ]


def test_ignore_tells_the_stall_but_raises_no_breach() -> None:
    """``on_progress_deadline: ignore``: the group still hears deploy_failed; the core
    gets no verdict, and no stall is kept for a new leader."""
    rollouts = Rollouts(policy("ignore"))
    first = deployment(1, "nginx:1.0")
    rollouts.observe(None, first, now=at(0))
    seen = watch(rollouts, release("nginx:2.0", 2, 2, stalls=True), first=first)
    assert [m.event for m in told(seen)] == [Event.DEPLOY_STARTED, Event.DEPLOY_FAILED]
    assert [v for observed in seen for v in observed.verdicts] == []
    assert rollouts.stalls() == ()


def test_a_stall_already_going_on_counts_and_a_new_leader_hears_it() -> None:
    """A Deployment already stalled when first listed (a restart) is a stall dated when its
    condition turned, never later than now; it is reported once, and ``stalls`` hands it to
    a new leader with its first date, until the finished rollout of a fix resolves it. (The
    soak found a leader that forgot a stall taking a later change for a breach's cause.)"""
    rollouts = Rollouts(policy("rollback"))
    stalled = release("nginx:2.0", 2, 2, stalls=True)[-1]
    for condition in stalled["status"]["conditions"]:
        condition["lastTransitionTime"] = "2026-12-04T08:50:00Z"
    (verdict,) = rollouts.observe(None, stalled, now=at(0)).verdicts
    assert verdict.began == datetime(2026, 12, 4, 8, 50, tzinfo=UTC)
    assert rollouts.observe(stalled, stalled, now=at(1)) == Observed()
    assert rollouts.stalls() == (verdict,)
    fixed = deployment(5, "nginx:2.1", revision=3)
    (resolved,) = rollouts.observe(stalled, fixed, now=at(60)).verdicts
    assert resolved.state is RuleState.INACTIVE
    assert rollouts.stalls() == ()


def test_an_incident_is_threaded_with_the_release_it_is_about() -> None:
    """A breach while the workload runs a release a group heard of names that release on
    each of its messages, also after rollbackd's undo changed the template; a breach on a template
    whose release was never told (first seen in a LIST, or rollbackd's own undo) names
    none."""
    rollouts = Rollouts(policy())
    first = deployment(1, "nginx:1.0")
    rollouts.observe(None, first, now=at(0))
    bare = Incident(id="rb-before", event=Event.BREACH, target=WEB)
    assert rollouts.thread(bare).release == ""
    events = release("nginx:2.0", 2, 2)
    (started, _) = told(watch(rollouts, events, first=first))
    breach = Incident(id="rb-incident", event=Event.BREACH, target=WEB)
    assert rollouts.thread(breach).release == ""  # no group heard of the release yet
    rollouts.heard(started)
    assert rollouts.thread(breach).release == started.id
    undo = deployment(
        5,
        "nginx:1.0",
        revision=3,
        annotations={"rollbackd.io/last-rollback": '{"incident": "rb-incident"}'},
    )
    assert rollouts.observe(events[-1], undo, now=at(30)) == Observed()
    later = Incident(id="rb-incident", event=Event.ROLLBACK_SUCCEEDED, target=WEB)
    assert rollouts.thread(later).release == started.id
    other = Incident(id="rb-other", event=Event.BREACH, target=WEB)
    assert rollouts.thread(other).release == ""  # rollbackd's undo is no release
    assert rollouts.thread(started).release == ""  # a release is not its own thread


def test_the_captured_stall_is_a_stall_with_the_controllers_words() -> None:
    """The Deployment a real controller gave up on (``progressDeadlineSeconds: 10``) is a
    stall once its Progressing condition turns: the verdict names the deadline and the
    controller's message."""
    stuck = load("deployment-progress-deadline-exceeded.json")
    before = copy.deepcopy(stuck)
    for condition in before["status"]["conditions"]:
        if condition["type"] == "Progressing":
            condition.update(status="True", reason="ReplicaSetUpdated")
    rollouts = Rollouts(policy())
    rollouts.observe(None, before, now=at(0))
    (verdict,) = rollouts.observe(before, stuck, now=at(10)).verdicts
    assert verdict.target == Target("demo", "stuck")
    assert verdict.note == (
        "the rollout stalled: no progress for 10s (ProgressDeadlineExceeded: "
        'ReplicaSet "stuck-84c754ddcf" has timed out progressing.)'
    )
