"""Replay: 24 h of 3 rules over 1,000 Deployments at a 15 s step, against a real backend.

Set-up: a real VictoriaMetrics (Debian's) holding, for each of 3 metrics, 1,000 series of a
day at 15 s (17.3 million samples, written through its ``/api/v1/import``); five of the
Deployments have a bad release in the day and breach each rule for 20 minutes. The cluster's
past: 1,000 Deployments with two ReplicaSets each, shaped like the captures.

Measured in a child process (so its peak RSS is the replay's alone): the wall time of
``replay()`` over the day, from the first range query to the report, and the peak RSS; the
breaches and rollbacks it found are checked against the five bad releases.

Run: .venv/bin/python benchmarks/bench_replay.py [--targets 1000] [--hours 24]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import resource
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rollbackd.replay.past import PastCluster
from rollbackd.replay.run import replay
from rollbackd.runtime.wiring import Edges
from rollbackd.settings import Settings
from rollbackd.testing.services import VictoriaMetrics

HERE = Path(__file__).parent
FIXTURES = HERE.parent / "tests" / "fixtures" / "k8s"
RULES = 3
STEP = 15
BAD = 5  # Deployments with a bad release
BREACH_MINUTES = 20


def day_start(hours: int) -> int:
    """The span ends an hour ago, on a step (inside the backend's retention)."""
    end = int(time.time()) // 3600 * 3600 - 3600
    return end - hours * 3600


def bad_release_at(index: int, start: int, hours: int) -> int:
    """When the ``index``-th bad Deployment was released (spread over the day)."""
    return start + (index + 1) * hours * 3600 // (BAD + 1)


def names(targets: int) -> list[str]:
    return [f"svc-{i:04d}" for i in range(targets)]


def load(vm: VictoriaMetrics, targets: int, start: int, hours: int) -> int:
    """Write the day into VictoriaMetrics; returns the samples written."""
    stamps = list(range(start - 600, start + hours * 3600 + 1, STEP))
    millis = [s * 1000 for s in stamps]
    healthy = [0.01] * len(stamps)
    written = 0
    for rule in range(RULES):
        lines = []
        for index, name in enumerate(names(targets)):
            values = healthy
            if index < BAD:
                at = bad_release_at(index, start, hours) + 60
                values = [0.3 if at <= s < at + BREACH_MINUTES * 60 else 0.01 for s in stamps]
            metric = {"__name__": f"bench_ratio_{rule}", "namespace": "bench", "deployment": name}
            lines.append(json.dumps({"metric": metric, "values": values, "timestamps": millis}))
            written += len(stamps)
            if len(lines) == 100:
                _post(vm.url + "/api/v1/import", "\n".join(lines))
                lines = []
        if lines:
            _post(vm.url + "/api/v1/import", "\n".join(lines))
    urllib.request.urlopen(vm.url + "/internal/force_flush", timeout=60).close()  # noqa: S310
    return written


def _post(url: str, body: str) -> None:
    request = urllib.request.Request(url, data=body.encode(), method="POST")  # noqa: S310
    urllib.request.urlopen(request, timeout=120).close()  # noqa: S310


def wait_searchable(vm: VictoriaMetrics, targets: int, end: int, timeout: float = 120) -> None:
    """Until every imported series answers at the end of the span."""
    query = urllib.parse.urlencode({"query": 'count({__name__=~"bench_ratio_.*"})', "time": end})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{vm.url}/api/v1/query?{query}", timeout=30) as answer:  # noqa: S310
            result = json.load(answer)["data"]["result"]
        if result and int(float(result[0]["value"][1])) == RULES * targets:
            return
        time.sleep(1)
    raise RuntimeError("the imported series did not become searchable")


def cluster_objects(targets: int, start: int, hours: int) -> tuple[list[Any], list[Any]]:
    """1,000 Deployments with two ReplicaSets each, from the captured objects."""
    deployment = json.loads((FIXTURES / "deployment-rev2.json").read_text())
    replicasets = json.loads((FIXTURES / "replicasets-rev2.json").read_text())["items"]
    found_deployments, found_replicasets = [], []
    long_ago = datetime.fromtimestamp(start - 7 * 86400, UTC)
    for index, name in enumerate(names(targets)):
        d = copy.deepcopy(deployment)
        meta = d["metadata"]
        meta.update(name=name, namespace="bench", uid=f"uid-{index}")
        meta["labels"] = {"app": name, "rollbackd.io/enabled": "true"}
        released = (
            datetime.fromtimestamp(bad_release_at(index, start, hours), UTC)
            if index < BAD
            else long_ago + timedelta(days=1)
        )
        for rs in copy.deepcopy(replicasets):
            rmeta = rs["metadata"]
            revision = rmeta["annotations"]["deployment.kubernetes.io/revision"]
            rmeta["namespace"] = "bench"
            rmeta["name"] = f"{name}-{rmeta['labels']['pod-template-hash']}"
            rmeta["ownerReferences"][0]["uid"] = f"uid-{index}"
            when = released if revision == "2" else long_ago
            rmeta["creationTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            found_replicasets.append(rs)
        found_deployments.append(d)
    return found_deployments, found_replicasets


def settings(url: str) -> Settings:
    return Settings.model_validate(
        {
            "prometheus": {"url": url},
            "rules": [
                {
                    "name": f"ratio-{rule}",
                    "expr": f"max by (namespace, deployment) (bench_ratio_{rule})",
                    "threshold": 0.05,
                    "for": "2m",
                    "interval": f"{STEP}s",
                }
                for rule in range(RULES)
            ],
            "rollback": {"budget": {"max": 100}},
        }
    )


def measure_replay(url: str, targets: int, start: int, hours: int) -> dict[str, Any]:
    """In the child: build the past, replay the day, report time, memory and findings."""
    config = settings(url)
    deployments, replicasets = cluster_objects(targets, start, hours)
    began = time.perf_counter()
    past = PastCluster(
        deployments, replicasets, rollback=config.rollback, installation="bench/rollbackd"
    )
    with Edges(config) as edges:
        source = edges.prometheus()
        report = asyncio.run(
            replay(
                config,
                source=source,
                past=past,
                start=datetime.fromtimestamp(start, UTC),
                end=datetime.fromtimestamp(start + hours * 3600, UTC),
            )
        )
        source.close()
    seconds = time.perf_counter() - began
    rollbacks = sorted({str(d.target) for d in report.decisions if d.action == "rollback"})
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "breaches": len(report.breaches),
        "rollbacks": rollbacks,
        "gaps": len(report.gaps),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--replay", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.replay:
        print(json.dumps(measure_replay(args.replay, args.targets, args.start, args.hours)))
        return
    start = day_start(args.hours)
    with VictoriaMetrics(retention="7d") as vm:
        began = time.perf_counter()
        samples = load(vm, args.targets, start, args.hours)
        wait_searchable(vm, args.targets, start + args.hours * 3600)
        loaded = time.perf_counter() - began
        child = subprocess.run(
            [sys.executable, __file__, "--replay", vm.url, "--start", str(start),
             "--targets", str(args.targets), "--hours", str(args.hours)],
            stdout=subprocess.PIPE, text=True, check=True, timeout=1800,
        )  # fmt: skip
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    expected = [f"bench/svc-{i:04d}" for i in range(BAD)]
    results = {
        "deployments": args.targets,
        "rules": RULES,
        "hours": args.hours,
        "step_s": STEP,
        "samples": samples,
        "load_seconds": round(loaded, 1),
        "replay_seconds": figures["seconds"],
        "peak_rss_mb": figures["peak_rss_mb"],
        "breaches": figures["breaches"],
        "rollbacks_found": len(figures["rollbacks"]),
        "rollbacks_expected": BAD,
        "found_the_bad_releases": figures["rollbacks"] == expected,
        "gaps": figures["gaps"],
    }
    for key, value in results.items():
        print(f"{key:28} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if results["found_the_bad_releases"] is not True:
        sys.exit("the replay did not find exactly the bad releases")


if __name__ == "__main__":
    main()
