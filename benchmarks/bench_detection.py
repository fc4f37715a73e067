"""Detection latency against the physical floor and the Alertmanager path, and API load.

The sandbox (fake API server, real Prometheus scraping every second, sample workload, fake
robot) with ``rollbackd run`` as a child process: rule ``for: 10s`` on a 5 s rate window,
at an interval of 1 s and of 2 s (each its own run). Each release is its own Deployment: v1
healthy, then v2 whose error ratio is 30%. Latency is measured from the moment the sample
workload starts failing to the moment the rollback PATCH reaches the fake API server. In
the same run, the Alertmanager path: a Prometheus alerting rule with the same expression
and ``for``, its group evaluated at the same interval, Alertmanager with ``group_wait:
0s``, measured to the moment its webhook arrives. The physical floor, per release: the
first moment the ratio Prometheus computes from its data is over the threshold and stays
over it for ``for`` (judged every 10 ms: between scrapes the ratio still moves as samples
leave the rate window), plus ``for``; no evaluator can act sooner. The
daemon runs with the default leader-election timings (15 s / 10 s / 2 s): the Lease
requests per minute at steady state are the leader's API load.

Run: .venv/bin/python benchmarks/bench_detection.py [--runs 20] [--intervals 1,2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

from rollbackd.testing.sandbox import RULE_EXPR, Sandbox, wait_until
from rollbackd.testing.services import Prometheus
from rollbackd.testing.serving import BackgroundServer

FOR, THRESHOLD = 10.0, 0.05
ALERTS = """
groups:
  - name: detection
    interval: {interval}s
    rules:
      - alert: HighErrorRate
        expr: {expr}
        for: 10s
"""
DEFAULT_LEADER_ELECTION = {
    "lease_duration": "15s",
    "renew_deadline": "10s",
    "retry_period": "2s",
}


class _Receiver(BaseHTTPRequestHandler):
    arrivals: ClassVar[dict[str, float]] = {}

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        now = time.monotonic()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        for alert in body["alerts"]:
            if alert["status"] == "firing":
                self.arrivals.setdefault(alert["labels"].get("deployment", ""), now)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(runs: int, interval: int) -> dict[str, Any]:
    _Receiver.arrivals = {}
    receiver = BackgroundServer(_Receiver).start()
    folder = Path(tempfile.mkdtemp(prefix="rollbackd-detection-"))
    alerts = ALERTS.format(interval=interval, expr=json.dumps(f"{RULE_EXPR} > {THRESHOLD}"))
    try:
        with Sandbox(
            folder,
            rule_for="10s",
            interval=f"{interval}s",
            alert_rules=alerts,
            alert_webhook=f"{receiver.url}/alerts",
        ) as box:
            box.write_config(
                prometheus={"timeout": "900ms"},
                # 20 releases a few seconds apart: not an outage, each its own bad release
                rollback={
                    "budget": {"max": 1000, "per": "1h"},
                    "blast_radius": {"max_targets": 1000},
                },
                leader_election=DEFAULT_LEADER_ELECTION,
            )
            names = [f"run-{i}" for i in range(runs)]
            box.errors_by_image = {"app:2.0": 0.3}
            for name in names:
                box.deploy(name, "app:1.0")
            assert box.prometheus is not None
            box.prometheus.wait_until_scraped()
            box.start_daemon()
            time.sleep(15)  # leadership, synced cache, healthy evaluations
            quiet_start, quiet_requests = time.monotonic(), len(box.kube.requests)
            time.sleep(30)
            steady = _rollbackd_requests(box, quiet_requests)
            steady_seconds = time.monotonic() - quiet_start
            before = len(box.kube.requests)
            for name in names:  # staggered releases, each an independent run
                box.deploy(name, "app:2.0")
                time.sleep(3)
            wait_until(lambda: len(box.rollback_patches()) >= runs, 120)
            wait_until(lambda: len(_Receiver.arrivals) >= runs, 60)
            time.sleep(5)
            during = _rollbackd_requests(box, before)
            patched = {r.path.rsplit("/", 1)[-1]: r.at for r in box.rollback_patches()}
            since = box.errors_since
            rollbackd = [patched[n] - since[n] for n in names if n in patched]
            alerting = [_Receiver.arrivals[n] - since[n] for n in names if n in _Receiver.arrivals]
            floors = [floor(box.prometheus, n, since[n]) for n in names]
    finally:
        receiver.stop()
    ticks = steady_seconds / interval
    lease = sum(v for (_, resource), v in steady.items() if resource == "leases")
    measured = [f for f in floors if f is not None]
    return {
        "interval_s": interval,
        "runs": runs,
        "rolled_back": len(rollbackd),
        "floor_p50_s": round(statistics.median(measured), 2) if measured else None,
        "floor_p95_s": round(percentile(measured, 0.95), 2) if measured else None,
        "rollbackd_p50_s": round(statistics.median(rollbackd), 2),
        "rollbackd_p95_s": round(percentile(rollbackd, 0.95), 2),
        "alertmanager_webhooks": len(alerting),
        "alertmanager_p50_s": round(statistics.median(alerting), 2) if alerting else None,
        "alertmanager_p95_s": round(percentile(alerting, 0.95), 2) if alerting else None,
        "leader_requests_per_minute": round(lease / steady_seconds * 60, 1),
        "steady_requests_per_tick": round(sum(steady.values()) / ticks, 2),
        "steady_lists_per_tick": round(
            sum(v for (verb, _), v in steady.items() if verb == "list") / ticks, 2
        ),
        "requests_per_rollback": {
            f"{verb} {resource}": round(count / max(len(rollbackd), 1), 2)
            for (verb, resource), count in sorted(during.items())
            if resource != "leases"
        },
    }


def floor(prometheus: Prometheus, name: str, failing_since: float) -> float | None:
    """Seconds from the first failing request to the earliest moment any evaluator could
    act: the first moment the ratio, in Prometheus's own data (judged every 10 ms), is over
    the threshold and stays over it for ``for``, then ``for``."""
    wall_since = time.time() - (time.monotonic() - failing_since)
    crossed = prometheus.first_crossing(
        RULE_EXPR,
        THRESHOLD,
        labels={"deployment": name},
        start=wall_since - 1,
        end=wall_since + 40,
        held=FOR,
    )
    return None if crossed is None else crossed + FOR - wall_since


def _rollbackd_requests(box: Sandbox, start: int) -> dict[tuple[str, str], int]:
    """rollbackd's requests (by User-Agent) since ``start``, as (verb, resource) counts."""
    counts: dict[tuple[str, str], int] = {}
    for request in box.kube.requests[start:]:
        if not request.user_agent.startswith("rollbackd/") or request.rbac is None:
            continue
        _, resource, verb = request.rbac
        counts[(verb, resource)] = counts.get((verb, resource), 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--intervals", default="1,2", help="rule intervals in seconds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {
        f"interval_{seconds}s": measure(args.runs, int(seconds))
        for seconds in args.intervals.split(",")
    }
    for name, figures in results.items():
        print(name)
        for key, value in figures.items():
            print(f"  {key:32} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
