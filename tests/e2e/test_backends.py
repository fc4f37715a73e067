"""`rollbackd run` against a real VictoriaMetrics instead of Prometheus, in a cluster with a
name: the whole pipeline, from its queries to the messages, Events, logs and history."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollbackd.testing.sandbox import NAMESPACE, Sandbox, wait_until
from tests.e2e.test_daemon import log_events, start_and_settle, titles

pytestmark = pytest.mark.integration

CLUSTER = "prod-bj"


@pytest.fixture
def victoria_box(tmp_path: Path, victoriametrics_binary: None) -> Iterator[Sandbox]:
    """The sandbox on VictoriaMetrics (latency offset 0 s), shop/web at nginx:1.0 scraped,
    nginx:2.0 failing 30 % of requests, and the cluster named prod-bj."""
    with Sandbox(tmp_path, backend="victoriametrics") as sandbox:
        sandbox.errors_by_image = {"nginx:2.0": 0.3}
        sandbox.deploy("web", "nginx:1.0")
        assert sandbox.prometheus is not None
        sandbox.prometheus.wait_until_scraped()
        sandbox.write_config(kubernetes={"cluster_name": CLUSTER})
        yield sandbox


def test_bad_release_is_rolled_back_through_victoriametrics(victoria_box: Sandbox) -> None:
    """A bad release breaches on VictoriaMetrics's answers and is rolled back, then
    recovers; start-up says once that syntax cannot be checked there and goes on. Every
    message's title and facts name the cluster, so does every Event and every log line
    of the incident, and `history` shows it."""
    box = victoria_box
    start_and_settle(box)
    started = time.monotonic()
    box.deploy("web", "nginx:2.0")
    assert wait_until(box.rollback_patches, 40)
    assert time.monotonic() - started <= 4 + 1 + 10  # as on Prometheus: for + interval + 10 s
    assert wait_until(lambda: box.image("web") == "nginx:1.0", 5)
    assert wait_until(lambda: any("Recovered" in t for t in titles(box)), 40)

    assert titles(box)
    assert all(t.startswith(f"[{CLUSTER}] ") for t in titles(box))
    assert all(f"**Cluster**: {CLUSTER}" in m["body"]["markdown"]["text"] for m in box.messages())
    notes = [e["message"] for e in box.kube.cluster.list_objects("events", NAMESPACE)]
    assert notes
    assert all(note.startswith(f"cluster {CLUSTER}: incident rb-") for note in notes)
    said = log_events(box.daemon_logs[0])
    assert [e["event"] for e in said].count("rule_syntax_check_unavailable") == 1
    of_incident = [e for e in said if e.get("incident_id")]
    assert of_incident
    assert all(e.get("cluster") == CLUSTER for e in of_incident)

    command = ["history", f"{NAMESPACE}/web", "--config", str(box.config), "--output", "json"]
    listed = subprocess.run(
        [sys.executable, "-m", "rollbackd", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert {row["cluster"] for row in json.loads(listed.stdout)} == {CLUSTER}
