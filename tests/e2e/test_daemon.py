"""`rollbackd run` as a subprocess against real Prometheus, the fake API server and robot."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbackd.testing.sandbox import NAMESPACE, Sandbox, wait_until
from tests.unit.test_deploy import EXPECTED_RULES

pytestmark = pytest.mark.integration

RULE_FOR, INTERVAL = 4.0, 1.0


def titles(box: Sandbox) -> list[str]:
    return [m["body"]["markdown"]["title"] for m in box.messages()]


def incident_ids(box: Sandbox) -> set[str]:
    return set(
        re.findall(
            r"rb-\d{8}-\d{6}-[0-9a-f]{4}",
            "\n".join(m["body"]["markdown"]["text"] for m in box.messages()),
        )
    )


def leader_ready(box: Sandbox) -> bool:
    lease = box.kube.cluster.get("leases", "rollbackd", "rollbackd")
    return bool(lease and lease["spec"].get("holderIdentity"))


def holder(box: Sandbox) -> str:
    lease = box.kube.cluster.get("leases", "rollbackd", "rollbackd")
    return str((lease or {}).get("spec", {}).get("holderIdentity", ""))


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def start_and_settle(box: Sandbox, count: int = 1) -> list[Any]:
    daemons = [box.start_daemon() for _ in range(count)]
    assert wait_until(lambda: leader_ready(box), 20)
    assert wait_until(box.settled, 20)  # a few healthy evaluations of v1 on the leader
    return daemons


def test_bad_release_is_rolled_back_and_recovers(box: Sandbox) -> None:
    """Errors after a change: rolled back within for + interval + a few seconds; breach,
    rollback and recovery messages carry one incident id."""
    start_and_settle(box)
    started = time.monotonic()
    box.deploy("web", "nginx:2.0")
    assert wait_until(box.rollback_patches, 40)
    elapsed = time.monotonic() - started
    # 5 s rate window and 1 s scrapes before the ratio shows, then `for` + one interval
    assert elapsed <= RULE_FOR + INTERVAL + 10, elapsed
    assert wait_until(lambda: box.image("web") == "nginx:1.0", 5)  # the patch was recorded first
    assert wait_until(lambda: any(t.startswith("Recovered") for t in titles(box)), 40)
    text = "\n".join(m["body"]["markdown"]["text"] for m in box.messages())
    for expected in ("Breach", "Rolling back", "Rolled back", "Recovered"):
        assert expected in text or any(t.startswith(expected) for t in titles(box))
    assert len(incident_ids(box)) == 1
    (patch,) = box.rollback_patches()
    assert patch.status == 200


def verbs_used(box: Sandbox) -> dict[tuple[str, str], set[str]]:
    """What rollbackd (by its User-Agent) asked the API server, as RBAC verbs."""
    used: dict[tuple[str, str], set[str]] = {}
    for request in box.kube.requests:
        if not request.user_agent.startswith("rollbackd/"):
            continue
        assert request.rbac is not None, request.path
        group, resource, verb = request.rbac
        used.setdefault((group, resource), set()).add(verb)
    return used


def readyz(log: Path) -> int:
    """The status of ``GET /readyz`` on the daemon that wrote ``log``."""
    (port,) = [e["port"] for e in log_events(log) if e.get("event") == "listening"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_sigterm_during_a_rollback_finishes_it_then_hands_over(box: Sandbox) -> None:
    """Two replicas, both ready (a drain may evict either), only the leader's pod labelled
    for Alertmanager's webhooks. SIGTERM reaches the leader while its rollback's rollout is
    still going: it finishes the rollback and delivers "Rolled back" itself, renewing the
    Lease until it releases it as its very last step; then the standby labels its own pod,
    takes over and says "Recovered". One rollback, one incident, one set of messages; the
    requests both made are exactly what the shipped RBAC rules grant."""
    daemons = start_and_settle(box, count=2)
    assert [readyz(log) for log in box.daemon_logs] == [200, 200]
    assert wait_until(lambda: len(box.leader_pods()) == 1)
    (leading_pod,) = box.leader_pods()
    index = int(leading_pod.rsplit("-", 1)[1])
    leader, standby = daemons[index], daemons[1 - index]
    box.kube.cluster.rollout_delay = 4.0  # the rolled-back pods take 4 s to be available
    box.deploy("web", "nginx:2.0")
    assert wait_until(box.rollback_patches, 40)
    leader.send_signal(signal.SIGTERM)
    assert leader.wait(40) == 0
    said = log_events(box.daemon_logs[index])
    names = [e.get("event") for e in said]
    told = [
        i
        for i, e in enumerate(said)
        if e.get("event") == "notification_sent" and e.get("kind") == "rollback_succeeded"
    ]
    assert told, "the leader did not deliver its own 'Rolled back'"
    assert names.index("lease_released") > told[-1]
    assert names[-2:] == ["lease_released", "shutdown_finished"]
    assert wait_until(lambda: box.leader_pods() == [f"rollbackd-{1 - index}"], 15)
    assert wait_until(lambda: any(t.startswith("Recovered") for t in titles(box)), 40)
    assert len(box.rollback_patches()) == 1
    assert len(incident_ids(box)) == 1
    assert len([t for t in titles(box) if t.startswith("Rolled back")]) == 1
    standby.send_signal(signal.SIGTERM)  # a clean stop releases the Lease (an update) too
    assert standby.wait(30) == 0
    assert verbs_used(box) == EXPECTED_RULES


def test_killed_leader_is_replaced_without_a_second_rollback(box: Sandbox) -> None:
    """SIGKILL of the leader right after its rollback: the other takes over within lease
    duration + retry period, does not roll back again, and sends the recovery message."""
    daemons = start_and_settle(box, count=2)
    first_holder = holder(box)
    box.deploy("web", "nginx:2.0")
    assert wait_until(box.rollback_patches, 40)
    leader = next(
        d
        for d, log in zip(daemons, sorted(box.folder.glob("rollbackd-*.log")), strict=True)
        if any(e.get("event") == "leadership_changed" and e.get("leader") for e in log_events(log))
    )
    leader.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until(lambda: holder(box) not in ("", first_holder), 15)
    assert time.monotonic() - killed <= 3 + 0.5 + 2  # lease + retry period + one round
    assert wait_until(lambda: any(t.startswith("Recovered") for t in titles(box)), 40)
    assert len(box.rollback_patches()) == 1
    assert len(incident_ids(box)) == 1


def test_restarted_daemon_keeps_cooldown_and_never_repeats(box: Sandbox) -> None:
    """After a rollback and a restart, the bad release deployed again is not rolled back:
    the record on the Deployment holds (a template rolled back from is not a new change,
    owner_reapplied, and the cooldown still runs); people are told why."""
    first = start_and_settle(box)[0]
    box.deploy("web", "nginx:2.0")
    assert wait_until(box.rollback_patches, 40)
    assert wait_until(lambda: any(t.startswith("Recovered") for t in titles(box)), 40)
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    start_and_settle(box)
    box.deploy("web", "nginx:2.0")  # the same bad release again
    assert wait_until(lambda: any(t.startswith("Not rolled back") for t in titles(box)), 40)
    assert len(box.rollback_patches()) == 1
    assert box.image("web") == "nginx:2.0"

    def skipped() -> list[str]:
        return [
            m["body"]["markdown"]["text"]
            for m in box.messages()
            if m["body"]["markdown"]["title"].startswith("Not rolled back")
        ]

    assert "`owner_reapplied`" in skipped()[0]
    deployment = box.kube.cluster.get("deployments", NAMESPACE, "web")
    assert deployment is not None
    assert "rollbackd.io/cooldown-until" in deployment["metadata"]["annotations"]


def test_innocent_deployment_in_an_outage_is_only_reported(box: Sandbox) -> None:
    """A Deployment that did not change recently breaches (an outage elsewhere): people
    hear about it, nothing is rolled back."""
    box.write_config(rollback={"change_window": "3s"})
    box.deploy("api", "nginx:1.0")
    time.sleep(5)  # the last change is now older than the change window
    start_and_settle(box)
    box.errors_by_image["nginx:1.0"] = 0.5
    box._apply_traffic("api", "nginx:1.0")  # errors without any change
    assert wait_until(lambda: any(t.startswith("Not rolled back") for t in titles(box)), 40)
    assert box.rollback_patches() == []
    skipped = next(
        m for m in box.messages() if m["body"]["markdown"]["title"].startswith("Not rolled back")
    )
    assert "no_recent_change" in skipped["body"]["markdown"]["text"]
    assert box.kube.cluster.get("deployments", NAMESPACE, "api") is not None


def test_demo_rolls_back_and_exits_0(prometheus_binary: None) -> None:
    """`rollbackd demo` prints its timeline, says "rolled back", and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "rollbackd", "demo"],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rolled back: shop/web runs nginx:1.0 again" in result.stdout
    assert "DingTalk <- Recovered shop/web" in result.stdout


def test_still_breaching_after_rollback_escalates(box: Sandbox) -> None:
    """When the rollback does not end the breach within verify_window, people are told,
    with @all where configured, and rollbackd does nothing more on its own."""
    box.errors_by_image = {"nginx:1.0": 0.3, "nginx:2.0": 0.3}  # the fault is elsewhere
    box.write_config(
        rollback={"verify_window": "5s"},
        notifications={
            "language": "en",
            "robots": [
                {
                    "name": "oncall",
                    "kind": "webhook",
                    "url": f"{box.robot.url}/robot/send?access_token=sandbox-robot-token-51f0",
                    "secret": "SECsandbox0123456789abcdef",
                    "at_all_on": ["escalated", "rollback_failed"],
                }
            ],
        },
    )
    start_and_settle(box)
    box.deploy("web", "nginx:2.0")
    assert wait_until(lambda: any(t.startswith("Still breaching") for t in titles(box)), 60)
    escalated = next(
        m for m in box.messages() if m["body"]["markdown"]["title"].startswith("Still breaching")
    )
    assert escalated["body"]["at"]["isAtAll"] is True
    time.sleep(3)
    assert len(box.rollback_patches()) == 1
    assert len(incident_ids(box)) == 1


def test_sighup_reloads_valid_configuration_and_keeps_the_old_on_error(box: Sandbox) -> None:
    """SIGHUP applies a valid file (a new rule is evaluated) and refuses a broken one."""
    daemon = start_and_settle(box)[0]
    log = box.folder / "rollbackd-0.log"
    settings = box.settings()
    settings["rules"].append({**settings["rules"][0], "name": "second-rule"})
    box.config.write_text(yaml.safe_dump(settings))
    daemon.send_signal(signal.SIGHUP)
    assert wait_until(
        lambda: any(
            e.get("event") == "reloaded" and "second-rule" in e["rules"] for e in log_events(log)
        ),
        15,
    )
    box.config.write_text("rules: [{name: broken, expr: up, threshold: 1, for: 2x}]\n")
    daemon.send_signal(signal.SIGHUP)
    assert wait_until(lambda: any(e.get("event") == "reload_rejected" for e in log_events(log)), 15)
    assert daemon.poll() is None  # still running, with the previous configuration
    rejected = next(e for e in log_events(log) if e.get("event") == "reload_rejected")
    assert any("rules[0].for" in line for line in rejected["problems"])


def test_dry_run_daemon_says_so_and_writes_nothing(box: Sandbox) -> None:
    """`run --dry-run`: the whole incident happens in messages marked DRY-RUN; no patch,
    no write to anything but rollbackd's own Lease and its own pod's leader label."""
    start = len(box.kube.requests)
    daemon = box.start_daemon("--dry-run")
    assert wait_until(lambda: leader_ready(box), 20)
    assert wait_until(box.settled, 20)
    box.deploy("web", "nginx:2.0")
    assert wait_until(lambda: any("DRY-RUN" in t and "Rolled back" in t for t in titles(box)), 40)
    assert box.rollback_patches() == []
    writes = [
        r
        for r in box.kube.requests[start:]
        if r.user_agent.startswith("rollbackd/")
        and r.method in ("PATCH", "POST")
        and "/leases" not in r.path
        and not r.path.startswith("/api/v1/namespaces/rollbackd/pods/")
    ]
    assert writes == []
    assert box.image("web") == "nginx:2.0"
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


def test_once_runs_one_cycle_and_exits(box: Sandbox) -> None:
    """`run --once` evaluates the rules once and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "rollbackd", "run", "--once", "--config", str(box.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "evaluation_cycle" for e in events)
    assert any(e.get("event") == "once_finished" for e in events)
