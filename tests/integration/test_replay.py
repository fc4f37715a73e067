"""`rollbackd replay` over a known day backfilled into real Prometheus with promtool.

The day (one rule, `max by (namespace, deployment) (app_error_ratio) > 0.05` for 3m, every
minute) holds:

- 03:00-03:19 no samples at all (Prometheus was down): a gap, no breach;
- 10:00 an innocent release of shop/api, then 10:05-10:14 every workload breaches at
  once (a cluster-wide blip): nothing is rolled back;
- 12:00-12:59 shop/search flaps every minute: held, cleared, never acted on;
- 15:00 a bad release of shop/web, breaching 15:02-15:39 (fixed by a new release at
  15:38): rolled back.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollbackd.model import DecisionReason, Instant, Target
from rollbackd.replay.past import PastCluster
from rollbackd.replay.run import Replayer, replay
from rollbackd.rollbacks.kubernetes import KubernetesWorkloads
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import Settings, load_settings
from rollbackd.signals.prometheus import PrometheusSource
from rollbackd.testing.browser import CHROMIUM_BINARIES, DRIVER_BINARIES, Browser
from rollbackd.testing.kube import seed
from rollbackd.testing.services import Prometheus
from tests.conftest import Kube, require_binary

pytestmark = pytest.mark.integration

NAMESPACE = "shop"
WORKLOADS = ("api", "cart", "feed", "pay", "search", "web")
DAY = 24 * 60  # minutes
# The day begins a little over a day ago, on the hour (inside Prometheus's retention).
START = datetime.fromtimestamp((datetime.now(UTC).timestamp() - 27 * 3600) // 3600 * 3600, UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return START + timedelta(hours=hour, minutes=minute)


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def ratio(name: str, minute: int) -> float | None:
    """The error ratio of ``name`` at ``minute`` of the day (None: no sample)."""
    if 180 <= minute < 200:
        return None  # 03:00-03:19: nothing was scraped
    if 605 <= minute < 615:
        return 0.3  # the blip: every workload at once
    if name == "search" and 720 <= minute < 780:
        return 0.1 if minute % 2 == 0 else 0.0
    if name == "web" and 902 <= minute < 940:
        return 0.2
    return 0.01


def openmetrics() -> str:
    lines = ["# TYPE app_error_ratio gauge"]
    for name in WORKLOADS:
        for minute in range(-30, DAY + 30):
            value = ratio(name, minute)
            if value is not None:
                stamp = int((START + timedelta(minutes=minute)).timestamp())
                labels = f'namespace="{NAMESPACE}",deployment="{name}"'
                lines.append(f"app_error_ratio{{{labels}}} {value} {stamp}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclass
class Day:
    prometheus: Prometheus
    config: Path
    settings: Settings


@pytest.fixture(scope="module")
def recorded_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Real Prometheus holding the day, backfilled by promtool before it starts."""
    require_binary(("prometheus",))
    prometheus = Prometheus()
    prometheus.backfill(openmetrics())
    prometheus.start()
    try:
        yield prometheus
    finally:
        prometheus.stop()


def _released(kube: Kube, image: str) -> None:
    """Wait until the controller made the ReplicaSet of ``image`` (it runs on its own
    thread, and dates the ReplicaSet by the cluster's clock)."""

    def made(cluster: Any) -> bool:
        return any(
            c.get("image") == image
            for rs in cluster.list_objects("replicasets", NAMESPACE)
            for c in rs["spec"]["template"]["spec"]["containers"]
        )

    assert kube.server.wait_for(made), image


def releases(kube: Kube) -> None:
    """The day's Deployments, created and released at the times of the story."""
    cluster = kube.server.cluster
    seed.create_namespace(kube.api, NAMESPACE)
    enabled = {"rollbackd.io/enabled": "true"}
    cluster.clock = lambda: START - timedelta(days=2)
    for name in WORKLOADS:
        seed.create_deployment(kube.api, NAMESPACE, name, image=f"{name}:1.0", labels=enabled)
        _released(kube, f"{name}:1.0")
    for when, name, image in (
        (at(10), "api", "api:2.0"),
        (at(15), "web", "web:2.0"),
        (at(15, 38), "web", "web:3.0"),
    ):
        cluster.clock = lambda when=when: when  # type: ignore[misc]
        seed.set_image(kube.api, NAMESPACE, name, image)
        _released(kube, image)
    cluster.clock = lambda: datetime.now(UTC)


@pytest.fixture
def day(kube: Kube, recorded_day: Prometheus, tmp_path: Path) -> Day:
    releases(kube)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
kubernetes: {{kubeconfig: '{kube.kubeconfig}'}}
prometheus: {{url: '{recorded_day.url}'}}
rules:
  - name: error-ratio
    expr: max by (namespace, deployment) (app_error_ratio)
    threshold: 0.05
    for: 3m
    interval: 1m
rollback: {{change_window: 30m}}
notifications: {{language: en}}
"""
    )
    return Day(recorded_day, config, load_settings(config))


def rollbackd(day: Day, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "replay", "--config", str(day.config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


SPAN = ("--from", iso(START), "--to", iso(START + timedelta(minutes=DAY)))

BLIP = [(name, at(10, 5), at(10, 15)) for name in WORKLOADS]
BAD_RELEASE = ("web", at(15, 2), at(15, 40))


def test_replay_reports_exactly_the_day_s_breaches_and_decisions(day: Day) -> None:
    """Over the recorded day the JSON names every breach with its span and what rollbackd
    would have done: the bad release rolled back from revision 2 to 1, the blip's innocent
    release and its neighbours left alone (widespread, no recent change), the flapping
    metric never acted on, and the hour without samples reported as a gap."""
    done = rollbackd(day, *SPAN, "--output", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    breaches = {(b["deployment"], b["from"], b["to"]): b for b in report["breaches"]}
    expected = {(n, iso(f), iso(t)) for n, f, t in [*BLIP, BAD_RELEASE]}
    assert set(breaches) == expected
    decided = {
        (b["deployment"], b["from"]): (b["decision"]["action"], b["decision"]["reason"])
        for b in report["breaches"]
    }
    for name in WORKLOADS:
        want = (
            ("notify", DecisionReason.WIDESPREAD_BREACH)
            if name == "api"
            else ("notify", DecisionReason.NO_RECENT_CHANGE)
        )
        assert decided[(name, iso(at(10, 5)))] == want, name
    assert decided[("web", iso(at(15, 2)))] == ("rollback", DecisionReason.BREACH_AFTER_CHANGE)
    web = breaches[(BAD_RELEASE[0], iso(BAD_RELEASE[1]), iso(BAD_RELEASE[2]))]
    assert web["peak"] == pytest.approx(0.2)
    assert web["fired"] == iso(at(15, 5))
    assert (web["decision"]["from_revision"], web["decision"]["to_revision"]) == (2, 1)
    assert "rollback_started" in web["decision"]["said"]
    rollbacks = [d for d in report["decisions"] if d["action"] == "rollback"]
    assert [d["deployment"] for d in rollbacks] == ["web"]
    (flap,) = report["flaps"]
    assert (flap["deployment"], flap["count"]) == ("search", 30)
    assert (flap["first"], flap["last"]) == (iso(at(12)), iso(at(12, 59)))
    (gap,) = report["gaps"]
    assert gap["kind"] == "no_data"
    assert iso(at(3)) <= gap["from"] <= iso(at(3, 5))
    assert gap["to"] == iso(at(3, 19))


def test_the_table_prints_each_breach_flap_and_gap(day: Day) -> None:
    """The default table has one line per breach with its decision and reason, then the
    flapping metric and the gap."""
    done = rollbackd(day, *SPAN)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "rule", "target", "from", "to", "peak", "threshold", "decision", "reason"
    ]  # fmt: skip
    web = [line for line in lines if "shop/web" in line and iso(at(15, 2)) in line]
    assert len(web) == 1
    assert "rollback" in web[0]
    assert "breach_after_change" in web[0]
    assert sum("widespread_breach" in line for line in lines) == 1
    assert any(line.startswith("flapping: error-ratio shop/search: 30 holds") for line in lines)
    assert any(line.startswith("gap: error-ratio") for line in lines)


def test_without_the_cluster_only_breaches_are_reported(day: Day) -> None:
    """--no-cluster: the same breaches, and no decision (nothing is known of changes)."""
    done = rollbackd(day, *SPAN, "--output", "json", "--no-cluster")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["cluster"] is False
    assert len(report["breaches"]) == 7
    assert all(b["decision"] is None for b in report["breaches"])


def test_bad_arguments_exit_2_with_their_code(day: Day) -> None:
    """A time that is not one, a backwards span or an unknown rule: exit 2, ERR_ code, no
    traceback."""
    for args in (
        ("--from", "yesterday"),
        ("--from", "-1h", "--to", "-2h"),
        ("--from", "-1h", "--rule", "nosuch"),
        ("--from", "2026-01-01T00:00:00"),
    ):
        done = rollbackd(day, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("ERR_REPLAY_BAD_ARGUMENTS") == 1
        assert "Traceback" not in done.stderr


def test_an_unreachable_prometheus_exits_1_and_reports_the_gap(day: Day, tmp_path: Path) -> None:
    """History that cannot be read is a failure (exit 1), named with its code, never taken
    for a healthy span."""
    config = tmp_path / "down.yaml"
    config.write_text(day.config.read_text().replace(day.prometheus.url, "http://127.0.0.1:9"))
    done = subprocess.run(
        [sys.executable, "-m", "rollbackd", "replay", "--config", str(config), "--from", "-2h",
         "--output", "json", "--no-cluster"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert {g["code"] for g in report["gaps"]} == {"ERR_PROM_UNREACHABLE"}
    assert "ERR_PROM_UNREACHABLE" in done.stderr


async def _live(day: Day, past: PastCluster, ticks: list[datetime]) -> Any:
    """The daemon's way: each tick an instant query at its time, through RuleRunner, and
    the incident core stepped with its verdicts."""
    settings = day.settings
    replayer = Replayer(settings, settings.rules, past)
    runner: RuleRunner | None = None
    for tick in ticks:
        pinned = settings.prometheus.model_copy(update={"params": {"time": f"{tick.timestamp()}"}})
        source = PrometheusSource(pinned)
        runner = RuleRunner(
            settings.rules,
            source=source,
            clock=SystemClock(),
            telemetry=Telemetry(),
            previous=runner,
        )
        runner.focus = replayer.state.cases.keys
        runner.managed = past.managed
        verdicts = await runner.run(at=Instant(tick.timestamp(), tick))
        replayer.tick(Instant(tick.timestamp(), tick), verdicts)
        source.close()
    return replayer.report(ticks[0], ticks[-1], [])


def test_daemon_and_replay_agree_on_the_recorded_day(day: Day, kube: Kube) -> None:
    """On the same recorded data, the daemon's ticks (instant queries at each time) and the
    replay (range-query columns) reach the same breaches and the same decisions."""
    settings = day.settings

    async def both() -> tuple[Any, Any]:
        workloads = KubernetesWorkloads(kube.api, sleep=asyncio.sleep)
        deployments = await workloads.list_deployments(settings.kubernetes)
        replicasets = await workloads.list_replicasets(NAMESPACE, "")

        def past() -> PastCluster:
            return PastCluster(
                deployments, replicasets, rollback=settings.rollback, installation="x/y"
            )

        start, end = at(9, 50), at(16)
        ticks = [start + timedelta(minutes=m) for m in range(int((end - start).seconds / 60) + 1)]
        live = await _live(day, past(), ticks)
        source = PrometheusSource(settings.prometheus)
        replayed = await replay(settings, source=source, past=past(), start=start, end=end)
        source.close()
        return live, replayed

    live, replayed = asyncio.run(both())

    def breaches(report: Any) -> list[tuple[Any, ...]]:
        return [(b.rule, b.target, b.began, b.fired, b.ended, b.peak) for b in report.breaches]

    def decisions(report: Any) -> list[tuple[Any, ...]]:
        return [
            (d.target, d.at, d.action, d.reason, d.from_revision, d.to_revision, d.said)
            for d in report.decisions
        ]

    assert len(breaches(replayed)) == 7
    assert breaches(live) == breaches(replayed)
    assert decisions(live) == decisions(replayed)
    assert Target(NAMESPACE, "web") in {
        d.target for d in replayed.decisions if d.action == "rollback"
    }


def test_the_html_report_opens_in_chromium_with_a_chart_per_breach(
    day: Day, tmp_path: Path
) -> None:
    """The HTML report, opened in headless Chromium: one chart per breach, the decision
    written out, deploy markers on the bad release's chart, nothing loaded from anywhere,
    and a screenshot of it."""
    require_binary(CHROMIUM_BINARIES)
    require_binary(DRIVER_BINARIES)
    out = tmp_path / "replay.html"
    done = rollbackd(day, *SPAN, "--output", "html", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with Browser() as browser:
        browser.open(out.as_uri())
        assert browser.count("section.breach svg.chart") == 7
        web = f'section.breach[data-target="shop/web"][data-began="{iso(at(15, 2))}"]'
        assert "breach_after_change" in browser.text(f"{web} .decision")
        assert "roll back" in browser.text(f"{web} .decision")
        assert browser.count(f"{web} svg line.release") >= 2  # web:2.0 and web:3.0
        assert browser.count(f"{web} svg line.acted") == 1
        assert "widespread_breach" in browser.text('section.breach[data-target="shop/api"]')
        assert "search" in browser.text("#flaps")
        resources = browser.script("return performance.getEntriesByType('resource').length")
        assert resources == 0
        size = browser.screenshot(tmp_path / "replay.png")
    assert size > 20_000


def test_a_progress_bar_on_a_terminal_and_none_when_piped(day: Day) -> None:
    """On a terminal stderr shows a progress bar up to 100%; piped, nothing but the
    report (the other tests read stdout and stderr from pipes)."""
    master, slave = pty.openpty()
    done = subprocess.run(
        [sys.executable, "-m", "rollbackd", "replay", "--config", str(day.config), *SPAN,
         "--no-cluster", "--output", "json"],
        stdout=subprocess.PIPE, stderr=slave, timeout=300, check=False,
    )  # fmt: skip
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert done.returncode == 0
    assert b"replay [" in shown
    assert b"100%" in shown
    piped = rollbackd(day, *SPAN, "--no-cluster", "--output", "json")
    assert "replay [" not in piped.stderr
    assert json.loads(piped.stdout)["breaches"]


def test_an_unreachable_cluster_exits_1_and_points_at_no_cluster(day: Day, tmp_path: Path) -> None:
    """Without the cluster's history no decision can be judged: exit 1, one line naming
    the code and the way out (--no-cluster), no traceback."""
    kubeconfig = tmp_path / "down-kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    config = tmp_path / "no-cluster.yaml"
    text = day.config.read_text()
    config.write_text(text.replace(text.split("kubeconfig: '")[1].split("'")[0], str(kubeconfig)))
    done = subprocess.run(
        [sys.executable, "-m", "rollbackd", "replay", "--config", str(config), "--from", "-1h"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("ERR_KUBE_UNREACHABLE") == 1
    assert "--no-cluster" in done.stderr
    assert "Traceback" not in done.stderr
