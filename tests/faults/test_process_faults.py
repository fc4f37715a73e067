"""rollbackd processes killed, frozen and restarted mid-incident: exactly one rollback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from rollbackd.testing.kube import Cluster, Fault, Hook
from rollbackd.testing.sandbox import ROBOT_SECRET, ROBOT_TOKEN, Sandbox, wait_until
from tests.e2e.test_daemon import (
    holder,
    incident_ids,
    leader_ready,
    log_events,
    start_and_settle,
    titles,
)

pytestmark = pytest.mark.integration

WEB_PATCH = re.compile(r"/deployments/web$")
EVENTS = re.compile(r"/events$")


def applied_rollbacks(box: Sandbox) -> int:
    return len([r for r in box.rollback_patches() if r.status == 200])


def kill(process: subprocess.Popen[bytes]) -> Hook:
    def action(cluster: Cluster) -> None:
        os.kill(process.pid, signal.SIGKILL)

    return Hook("PATCH", WEB_PATCH, action)


def no_message_twice(box: Sandbox) -> None:
    """Within one incident, no message is sent twice."""
    seen = Counter(
        (
            m["body"]["markdown"]["title"],
            tuple(sorted(re.findall(r"rb-\d{8}-\d{6}-[0-9a-f]{4}", m["body"]["markdown"]["text"]))),
        )
        for m in box.messages()
    )
    assert [key for key, count in seen.items() if count > 1] == []


def test_killed_after_deciding_before_patching(box: Sandbox) -> None:
    """SIGKILL between the decision and the patch: the patch never lands; the restarted
    process decides again and rolls back exactly once."""
    first = start_and_settle(box)[0]
    box.deploy("web", "nginx:2.0")
    # rollbackd's PATCH comes `for` seconds later: kill it there, and drop its request
    box.kube.faults.hooks.append(kill(first))
    box.kube.faults.injected.append(Fault("PATCH", WEB_PATCH, 0))
    assert wait_until(lambda: first.poll() is not None, 40)
    assert applied_rollbacks(box) == 0
    assert box.image("web") == "nginx:2.0"
    start_and_settle(box)
    assert wait_until(lambda: applied_rollbacks(box) == 1, 40)
    assert wait_until(lambda: any(t.startswith("Recovered") for t in titles(box)), 40)
    time.sleep(3)
    assert applied_rollbacks(box) == 1
    assert box.image("web") == "nginx:1.0"
    no_message_twice(box)


def test_killed_after_patching_before_telling(box: Sandbox) -> None:
    """Case 14: SIGKILL right after the patch (its record is in the same patch), before the
    Event and the messages: the restarted process adopts the incident, never rolls back
    again, sends the lost "Rolled back" and records its Event, then the recovery, all under
    the same incident id and none twice."""
    first = start_and_settle(box)[0]

    def after_patch(cluster: Cluster) -> None:
        os.kill(first.pid, signal.SIGKILL)

    box.kube.faults.hooks.append(Hook("POST", EVENTS, after_patch))
    box.kube.faults.injected.append(Fault("POST", EVENTS, 0))
    box.deploy("web", "nginx:2.0")
    assert wait_until(lambda: first.poll() is not None, 40)
    assert applied_rollbacks(box) == 1
    deployment = box.kube.cluster.get("deployments", "shop", "web")
    assert deployment is not None
    assert "rollbackd.io/last-rollback" in deployment["metadata"]["annotations"]
    start_and_settle(box)
    assert wait_until(lambda: any(t.startswith("Recovered") for t in titles(box)), 40)
    assert any(t.startswith("Rolled back") for t in titles(box))
    events = box.kube.cluster.list_objects("events", "shop")
    assert any(e["reason"] == "RollbackdRollback" for e in events)
    assert applied_rollbacks(box) == 1
    assert len(incident_ids(box)) == 1
    no_message_twice(box)


def test_frozen_leader_does_not_write_when_it_wakes(box: Sandbox) -> None:
    """Split brain: the leader is frozen (SIGSTOP) past its lease, the other takes over and
    rolls back; when the old leader resumes it finds itself not leading and writes nothing
    but the removal of its own pod's leader label (webhooks go to the new leader)."""
    daemons = start_and_settle(box, count=2)
    logs = sorted(box.folder.glob("rollbackd-*.log"))
    leader, leader_log = next(
        (d, log)
        for d, log in zip(daemons, logs, strict=True)
        if any(e.get("event") == "leadership_changed" and e.get("leader") for e in log_events(log))
    )
    old_holder = holder(box)
    leader.send_signal(signal.SIGSTOP)
    assert wait_until(lambda: holder(box) not in ("", old_holder), 15)
    box.deploy("web", "nginx:2.0")
    assert wait_until(lambda: applied_rollbacks(box) == 1, 40)
    resumed = len(box.kube.requests)
    leader.send_signal(signal.SIGCONT)
    assert wait_until(
        lambda: any(
            e.get("event") == "leadership_changed" and not e.get("leader")
            for e in log_events(leader_log)
        ),
        15,
    )
    time.sleep(3)
    mine = f"pid {leader.pid})"
    after = [r for r in box.kube.requests[resumed:] if mine in r.user_agent]
    assert after  # it woke up and talked to the API server...
    own_pod = f"/api/v1/namespaces/rollbackd/pods/rollbackd-{daemons.index(leader)}"
    writes = [r for r in after if r.method in ("PATCH", "POST", "PUT") and r.path != own_pod]
    # Nothing on Deployments or Events; at most a Lease renewal already in flight when it
    # froze, which the API server refuses (409: the Lease changed since it was read).
    assert [r for r in writes if "/leases/" not in r.path] == []
    assert [r.status for r in writes] == [409] * len(writes)
    assert applied_rollbacks(box) == 1
    assert leader_ready(box)
    assert box.leader_pods() == [f"rollbackd-{1 - daemons.index(leader)}"]


def test_secrets_never_reach_logs_metrics_or_messages(box: Sandbox) -> None:
    """After a whole incident, neither the robot's token nor its secret appear in the
    daemon's log, its /metrics or any message."""
    start_and_settle(box)
    box.deploy("web", "nginx:2.0")
    assert wait_until(lambda: any(t.startswith("Recovered") for t in titles(box)), 60)
    log = Path(box.folder / "rollbackd-0.log")
    port = next(e["port"] for e in log_events(log) if e.get("event") == "listening")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    assert "rollbackd_rollbacks_total" in metrics
    everything = log.read_text() + metrics + "\n".join(str(m["body"]) for m in box.messages())
    for secret in (ROBOT_TOKEN, ROBOT_SECRET):
        assert secret not in everything
