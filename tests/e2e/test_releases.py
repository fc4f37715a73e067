"""Deploy-status messages and stalled rollouts through ``rollbackd run``, against real
Prometheus, the fake API server (whose controller lets a bad image stall until its
progress deadline) and the fake DingTalk robot."""

from __future__ import annotations

import re

import pytest

from rollbackd.testing.sandbox import Sandbox, wait_until
from tests.e2e.test_daemon import log_events, start_and_settle, titles

pytestmark = pytest.mark.integration

DEPLOY_EVENTS = ["deploy_started", "deploy_succeeded", "deploy_failed"]


def texts(box: Sandbox) -> list[str]:
    return [m["body"]["markdown"]["text"] for m in box.messages()]


def fact(text: str, name: str) -> str:
    """The value of one ``- **name**: value`` line of a message."""
    found = re.search(rf"^- \*\*{re.escape(name)}\*\*: (.*)$", text, re.MULTILINE)
    assert found, (name, text)
    return found.group(1)


def test_each_release_is_told_in_order_with_its_revisions_and_images(box: Sandbox) -> None:
    """With the deploy_* events listed, the group hears each release as it happens: a good
    one started then rolled out, a bad image started then stalled, in that order, each with
    the revision and image it moves from and to and its change-cause. The stall is also a
    breach of progress-deadline, notified (the default) with a reason that says it stalled,
    under the release it is about; the threshold rule keeps silent, and nothing is undone."""
    box.kube.cluster.rollout_delay = 0.5  # the rollout is seen in progress before its end
    box.kube.cluster.stalling_images = {"nginx:1.2"}
    settings = box.settings()
    events = settings["notifications"].get("events") or []
    box.write_config(notifications={"events": [*events, "breach", "skipped", *DEPLOY_EVENTS]})
    start_and_settle(box)
    assert box.messages() == []  # the Deployment listed at start-up is no release

    box.deploy("web", "nginx:1.1", change_cause="release 1.1 (pipeline #41)")
    assert wait_until(lambda: "Rolled out shop/web" in titles(box), 30), titles(box)
    box.deploy("web", "nginx:1.2", change_cause="release 1.2 (pipeline #42)")
    assert wait_until(lambda: "Rollout stalled shop/web" in titles(box), 30), titles(box)
    assert wait_until(lambda: len(box.messages()) >= 6, 40), titles(box)

    told = titles(box)
    assert told[:4] == [
        "Rolling out shop/web",
        "Rolled out shop/web",
        "Rolling out shop/web",
        "Rollout stalled shop/web",
    ]
    first, done, second, stalled = texts(box)[:4]
    assert fact(first, "Revision") == "1 (nginx:1.0) → 2 (nginx:1.1)"
    assert fact(done, "Revision") == "1 (nginx:1.0) → 2 (nginx:1.1)"
    assert fact(second, "Revision") == "2 (nginx:1.1) → 3 (nginx:1.2)"
    assert fact(stalled, "Revision") == "2 (nginx:1.1) → 3 (nginx:1.2)"
    assert fact(first, "Change cause") == "release 1.1 \\(pipeline \\#41\\)"
    assert fact(done, "Status") == 'deployment "web" successfully rolled out'
    assert fact(stalled, "Status") == 'deployment "web" exceeded its progress deadline'
    assert fact(first, "Release") == fact(done, "Release") != fact(second, "Release")

    breach = next(t for t in texts(box) if t.startswith("### Breach"))
    assert "progress-deadline" in fact(breach, "Rule")
    skipped = next(t for t in texts(box) if t.startswith("### Not rolled back"))
    assert fact(skipped, "Reason").startswith("the rollout stalled: no progress for 600s")
    assert "`notify_only_rule`" in fact(skipped, "Reason")
    assert fact(breach, "Release") == fact(second, "Release")  # threaded with its deploy
    assert box.rollback_patches() == []
    assert box.image("web") == "nginx:1.2"
    logged = [e for e in log_events(box.daemon_logs[0]) if e.get("event") == "release_observed"]
    assert [(e["kind"], e["revision"], e["images"]) for e in logged] == [
        ("deploy_started", 2, ["nginx:1.1"]),
        ("deploy_succeeded", 2, ["nginx:1.1"]),
        ("deploy_started", 3, ["nginx:1.2"]),
        ("deploy_failed", 3, ["nginx:1.2"]),
    ]


def test_a_rollout_that_stalls_within_the_change_window_is_rolled_back(box: Sandbox) -> None:
    """``on_progress_deadline: rollback``: a release whose new pods never become ready
    breaches no threshold (the old pods keep serving) but stalls; it is rolled back once,
    through every guard, and every message says why: the rollout stalled. The deploy_*
    events are not listed, so the group hears none of them."""
    box.kube.cluster.stalling_images = {"nginx:3.0"}
    box.write_config(rollback={**box.settings()["rollback"], "on_progress_deadline": "rollback"})
    start_and_settle(box)
    box.deploy("web", "nginx:3.0")
    assert wait_until(box.rollback_patches, 30)
    assert wait_until(lambda: box.image("web") == "nginx:1.0", 10)
    assert wait_until(lambda: any(t.startswith("Recovered") for t in titles(box)), 60), titles(box)
    told = titles(box)
    assert told[:3] == ["Breach shop/web", "Rolling back shop/web", "Rolled back shop/web"]
    assert not any(t.startswith(("Rolling out", "Rolled out", "Rollout stalled")) for t in told)
    started = texts(box)[1]
    assert "progress-deadline" in fact(started, "Rule")
    reason = fact(started, "Reason")
    assert reason.startswith("the rollout stalled: no progress for 600s")
    assert "after the change" in reason
    assert "`breach_after_change`" in reason
    assert fact(started, "Revisions") == "2 (nginx:3.0) → 1 (nginx:1.0)"
    assert "Release**" not in "".join(texts(box))  # no thread with a release nobody heard
    assert len(box.rollback_patches()) == 1
    decided = [e for e in log_events(box.daemon_logs[0]) if e.get("event") == "decision"]
    assert [e["decision"] for e in decided] == ["rollback"]
    assert "stalled" in decided[0]["message"]
