"""Scale: 10,000 managed Deployments x 3 rules against a real Prometheus.

Set-up, each part in its own process: the sample workload serving 10,000 targets
(``python -m rollbackd.testing.app --targets``), the fake API server holding 10,000 opted-in
Deployments (``python -m rollbackd.testing.kube --seed``), and the real Prometheus scraping
the workload. In this process, as in the daemon: the Deployment watch cache (one LIST) and
the rule runner. Per evaluation tick: queries Prometheus received (its own
``prometheus_http_requests_total``), this process's CPU seconds, wall time; at the end its
peak RSS. Side by side, the per-target polling that canary analysers do (one query per
Deployment per rule): a sample of queries is timed and the full tick extrapolated.

Run: .venv/bin/python benchmarks/bench_scale.py [--targets 10000] [--ticks 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from rollbackd.rollbacks.kubernetes import DeploymentCache, api_client
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.daemon import tune_gc
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import KubernetesSettings, PrometheusSettings, RuleSettings, TargetLabels
from rollbackd.signals.prometheus import PrometheusSource
from rollbackd.testing.services import Prometheus, free_port

RULES = [
    {
        "name": "error-ratio",
        "op": ">",
        "threshold": 0.05,
        "expr": 'sum by (namespace, deployment) (rate(http_requests_total{code="500"}[1m])) / '
        "sum by (namespace, deployment) (rate(http_requests_total[1m]))",
    },
    {
        "name": "p99-latency",
        "op": ">",
        "threshold": 0.5,
        "expr": "histogram_quantile(0.99, sum by (namespace, deployment, le) "
        "(rate(http_request_duration_seconds_bucket[1m])))",
    },
    {
        "name": "traffic-drop",
        "op": "<",
        "threshold": 1,
        "expr": "sum by (namespace, deployment) (rate(http_requests_total[1m]))",
    },
]
PER_TARGET = [
    'sum(rate(http_requests_total{{code="500",{m}}}[1m]))'
    " / sum(rate(http_requests_total{{{m}}}[1m]))",
    "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{m}}}[1m])))",
    "sum(rate(http_requests_total{{{m}}}[1m]))",
]


def prometheus_queries(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


def series_count(url: str) -> int:
    query = urllib.parse.urlencode({"query": "count(http_requests_total)"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=30) as answer:  # noqa: S310
        result = json.load(answer)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def polling(source: PrometheusSource, targets: int, sample: int) -> dict[str, Any]:
    """One query per Deployment per rule, timed on a sample and scaled to a full tick."""
    labels = TargetLabels()
    per_query_wall, per_query_cpu = [], []
    for template in PER_TARGET:
        for index in range(sample):
            matcher = f'namespace="ns-{index % 100}",deployment="app-{index}"'
            wall, cpu = time.perf_counter(), time.process_time()
            asyncio.run(source.query(template.format(m=matcher), target_labels=labels))
            per_query_cpu.append(time.process_time() - cpu)
            per_query_wall.append(time.perf_counter() - wall)
    scale = targets * len(RULES)
    return {
        "polling_sample_queries": len(per_query_wall),
        "polling_queries_per_tick": scale,
        "polling_wall_s_per_tick": round(statistics.mean(per_query_wall) * scale, 1),
        "polling_cpu_s_per_tick": round(statistics.mean(per_query_cpu) * scale, 1),
    }


def measure(targets: int, ticks: int, sample: int) -> dict[str, Any]:
    configure_logging(level="warning", fmt="json", stream=sys.stderr)
    app_port, kube_port = free_port(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="rollbackd-bench-"))
    kubeconfig = folder / "kubeconfig"
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rollbackd.testing.app",
            "--port",
            str(app_port),
            "--targets",
            str(targets),
        ],
        stdout=subprocess.DEVNULL,
    )
    kube = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rollbackd.testing.kube",
            "--port",
            str(kube_port),
            "--kubeconfig",
            str(kubeconfig),
            "--seed",
            str(targets),
        ],
        stdout=subprocess.DEVNULL,
    )
    prometheus = Prometheus(scrape_targets=[f"127.0.0.1:{app_port}"], scrape_interval="5s")
    results: dict[str, Any] = {"targets": targets, "rules": len(RULES), "ticks": ticks}
    try:
        prometheus.start()
        deadline = time.monotonic() + 300
        while series_count(prometheus.url) < targets * 2 and time.monotonic() < deadline:
            time.sleep(2)
        time.sleep(12)  # two more scrapes so every rate() has points
        while not kubeconfig.exists():
            time.sleep(0.2)
        settings = KubernetesSettings(kubeconfig=str(kubeconfig))
        started = time.perf_counter()
        cache = DeploymentCache(api_client(settings), settings)
        cache.start()
        while not cache.synced:
            time.sleep(0.1)
        results["cache_list_seconds"] = round(time.perf_counter() - started, 2)
        results["cached_deployments"] = len(cache.all())
        results["cache_lists"] = cache.lists

        rules = [RuleSettings.model_validate({**r, "interval": "15s"}) for r in RULES]
        source = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout="10s"))
        runner = RuleRunner(rules, source=source, clock=SystemClock(), telemetry=Telemetry())
        runner.focus = frozenset  # as the daemon runs it: verdicts only where something happens
        asyncio.run(runner.run())  # warm-up: connections, first state
        tune_gc()  # as the daemon does once its cache is synced
        walls, cpus, queries, verdicts = [], [], [], 0
        for _ in range(ticks):
            before_q = prometheus_queries(prometheus.url)
            wall, cpu = time.perf_counter(), time.process_time()
            verdicts = len(asyncio.run(runner.run()))
            cpus.append(time.process_time() - cpu)
            walls.append(time.perf_counter() - wall)
            queries.append(prometheus_queries(prometheus.url) - before_q)
        results.update(
            queries_per_tick=statistics.median(queries),
            verdicts_per_tick=verdicts,
            cpu_ms_per_tick=round(statistics.median(cpus) * 1000, 1),
            wall_ms_per_tick=round(statistics.median(walls) * 1000, 1),
            cache_lists_after_ticks=cache.lists,
        )

        results.update(polling(source, targets, sample))
        results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        cache.stop()
        source.close()
    finally:
        prometheus.stop()
        for process in (app, kube):
            process.terminate()
            process.wait(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--sample", type=int, default=200, help="per-target queries timed per rule")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = measure(args.targets, args.ticks, args.sample)
    for key, value in results.items():
        print(f"{key:28} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
