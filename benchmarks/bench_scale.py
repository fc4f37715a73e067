"""Scale: N managed Deployments shaped like a real API server's x 5 rules, in one process.

Set-up, each part in its own process: the fake API server holding N opted-in Deployments
with the ``managedFields`` a real server keeps (``python -m rollbackd.testing.kube --seed N
--real-shaped``), and a query backend that answers each rule with N series exactly as
Prometheus shapes an instant vector (this script with ``--serve-answers``: the backend's
own query time is not rollbackd's, and a scrape that times out cannot shrink an answer).

In this process, as in the daemon: the Deployment watch cache (paged LIST) and the rule
runner in quiet mode. Per steady tick: this process's CPU, wall time, queries the backend
received, LISTs the API server received, and the series every query returned (checked
against N: a short answer fails the run). In the same run, fetch and decode alone: the same
five answers fetched and decoded by the Prometheus edge without judging, the floor a tick is
measured against. At the end: peak RSS, and the cache's cost per Deployment.

Run: .venv/bin/python benchmarks/bench_scale.py [--targets 50000] [--ticks 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

from rollbackd.model import QueryResult
from rollbackd.rollbacks.informer import DeploymentCache
from rollbackd.rollbacks.kubernetes import api_client
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.process import tune_gc
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import KubernetesSettings, PrometheusSettings, RuleSettings, TargetLabels
from rollbackd.signals.prometheus import PrometheusSource
from rollbackd.testing.prometheus_stub import vector
from rollbackd.testing.services import free_port
from rollbackd.testing.serving import BackgroundServer

RULES = [
    {"name": "error-ratio", "op": ">", "threshold": 0.05, "expr": "error_ratio", "healthy": 0.002},
    {"name": "p99-latency", "op": ">", "threshold": 0.5, "expr": "p99_latency", "healthy": 0.12},
    {"name": "traffic-drop", "op": "<", "threshold": 1, "expr": "traffic", "healthy": 42.0},
    {"name": "restarts", "op": ">", "threshold": 3, "expr": "restarts", "healthy": 0.0},
    {"name": "saturation", "op": ">", "threshold": 0.9, "expr": "saturation", "healthy": 0.4},
]


def target(index: int) -> tuple[str, str]:
    """The Deployment the fake API server seeds at ``index``."""
    return f"ns-{index % 100}", f"app-{index}"


def answer(targets: int, value: float) -> bytes:
    """An instant vector of ``targets`` series, as Prometheus writes it."""
    return vector(
        *(
            ({"namespace": namespace, "deployment": name}, f"{value:g}")
            for namespace, name in map(target, range(targets))
        )
    )


class _Answers(BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, bytes]] = {}
    queries: ClassVar[dict[str, int]] = {}

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/count":
            body = json.dumps(self.queries).encode()
        else:
            expr = urllib.parse.parse_qs(url.query).get("query", [""])[0]
            self.queries[expr] = self.queries.get(expr, 0) + 1
            body = self.bodies.get(expr, b'{"status":"success","data":{"result":[]}}')
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_answers(port: int, targets: int) -> None:
    _Answers.bodies = {rule["expr"]: answer(targets, float(rule["healthy"])) for rule in RULES}
    server = BackgroundServer(_Answers, port=port)
    print("ready", flush=True)
    server.serve()


def backend_queries(url: str) -> int:
    with urllib.request.urlopen(f"{url}/count", timeout=10) as found:  # noqa: S310
        return sum(json.load(found).values())


class Counted:
    """The Prometheus edge, with the series of every answer counted and checked."""

    def __init__(self, source: PrometheusSource, expected: int) -> None:
        self.source, self.expected = source, expected
        self.short: list[int] = []

    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        result = await self.source.query(expr, target_labels=target_labels)
        if len(result.values) != self.expected:
            self.short.append(len(result.values))
        return result

    async def query_range(self, *args: Any, **kwargs: Any) -> Any:
        return await self.source.query_range(*args, **kwargs)

    async def check_syntax(self, expr: str) -> bool:
        return True


def rss_mb() -> float:
    """Current resident memory of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def decode_only(source: PrometheusSource, rules: list[RuleSettings]) -> float:
    """CPU seconds to fetch and decode the rules' answers, concurrently, without judging."""

    def fetch(expr: str) -> None:
        source._instant(expr, {"timeout": "9500ms"}, len)  # the edge's own fetch and decode

    cpu = time.process_time()
    threads = [threading.Thread(target=fetch, args=(rule.expr,)) for rule in rules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.process_time() - cpu


def steady_ticks(
    runner: RuleRunner, counted: Counted, rules: list[RuleSettings], url: str, ticks: int
) -> dict[str, Any]:
    """Ticks as the daemon runs them, each followed by fetch-and-decode alone."""
    walls, cpus, decodes, queries, verdicts = [], [], [], [], 0
    for _ in range(ticks):
        before = backend_queries(url)
        wall, cpu = time.perf_counter(), time.process_time()
        verdicts = len(asyncio.run(runner.run()))
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
        queries.append(backend_queries(url) - before)
        decodes.append(decode_only(counted.source, rules))
    if counted.short:
        raise SystemExit(f"answers short of {counted.expected} series: {counted.short[:5]}")
    cpu_ms = statistics.median(cpus) * 1000
    decode_ms = statistics.median(decodes) * 1000
    return {
        "queries_per_rule_per_tick": statistics.median(queries) / len(rules),
        "series_per_query": counted.expected,
        "verdicts_per_tick": verdicts,
        "cpu_ms_per_tick": round(cpu_ms, 1),
        "decode_ms_per_tick": round(decode_ms, 1),
        "tick_to_decode": round(cpu_ms / decode_ms, 2) if decode_ms else None,
        "wall_ms_per_tick": round(statistics.median(walls) * 1000, 1),
        "cpu_us_per_deployment_per_tick": round(cpu_ms * 1000 / max(counted.expected, 1), 2),
    }


def measure(targets: int, ticks: int) -> dict[str, Any]:
    configure_logging(level="warning", fmt="json", stream=sys.stderr)
    baseline_mb = rss_mb()
    answers_port, kube_port = free_port(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="rollbackd-bench-"))
    kubeconfig = folder / "kubeconfig"
    backend = subprocess.Popen(
        [sys.executable, __file__, "--serve-answers", str(answers_port), "--targets", str(targets)],
        stdout=subprocess.PIPE,
        text=True,
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
            "--real-shaped",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{answers_port}"
    results: dict[str, Any] = {"targets": targets, "rules": len(RULES), "ticks": ticks}
    try:
        assert backend.stdout is not None
        assert backend.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 600
        while not kubeconfig.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        settings = KubernetesSettings(kubeconfig=str(kubeconfig))
        started = time.perf_counter()
        cache = DeploymentCache(api_client(settings), settings)
        cache.start()
        while not cache.synced and time.monotonic() < deadline:
            time.sleep(0.1)
        results["cache_list_seconds"] = round(time.perf_counter() - started, 2)
        results["cached_deployments"] = len(cache.all())
        results["cache_list_pages"] = cache.lists
        gc.collect()
        results["cache_kib_per_deployment"] = round(
            (rss_mb() - baseline_mb) * 1024 / max(targets, 1), 2
        )

        rules = [
            RuleSettings.model_validate(
                {k: v for k, v in r.items() if k != "healthy"} | {"interval": "15s"}
            )
            for r in RULES
        ]
        source = PrometheusSource(PrometheusSettings(url=url, timeout="10s"))
        counted = Counted(source, targets)
        runner = RuleRunner(rules, source=counted, clock=SystemClock(), telemetry=Telemetry())
        runner.focus = frozenset  # as the daemon runs it: verdicts only where something happens
        runner.managed = cache.manages
        asyncio.run(runner.run())  # warm-up: connections, first state
        tune_gc()  # as the daemon does once its cache is synced
        lists_before = cache.lists
        results.update(steady_ticks(runner, counted, rules, url, ticks))
        results["steady_lists"] = cache.lists - lists_before
        results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        cache.stop()
        source.close()
    finally:
        for process in (backend, kube):
            process.terminate()
            process.wait(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=50_000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--serve-answers", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.serve_answers:
        serve_answers(args.serve_answers, args.targets)
        return
    results = measure(args.targets, args.ticks)
    for key, value in results.items():
        print(f"{key:32} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
