"""A sample workload's metrics, whose traffic a test steers over HTTP.

The server exposes, per (namespace, deployment), the counter
``http_requests_total{namespace,deployment,code}`` and the histogram
``http_request_duration_seconds{namespace,deployment}``, as a real service instrumented
with prometheus_client would. Nothing is simulated per request: counters advance
continuously at the configured request rate, a share ``error_ratio`` of it with code 500,
every request taking ``latency_seconds``.

HTTP API::

    GET    /metrics                      Prometheus text format
    GET    /targets                      every target and its traffic, as JSON
    PUT    /targets/<namespace>/<name>   set traffic: {"rps", "error_ratio", "latency_seconds"}
    DELETE /targets/<namespace>/<name>   stop exposing the target's series

Run it alone with ``python -m rollbackd.testing.app --port 9101``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rollbackd.testing.serving import BackgroundServer

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Traffic:
    """What a target's traffic looks like from now on."""

    rps: float = 10.0
    error_ratio: float = 0.0
    latency_seconds: float = 0.05

    def check(self) -> None:
        if self.rps < 0:
            raise ValueError("rps must be >= 0")
        if not 0 <= self.error_ratio <= 1:
            raise ValueError("error_ratio must be between 0 and 1")
        if self.latency_seconds < 0:
            raise ValueError("latency_seconds must be >= 0")


@dataclass
class _Target:
    traffic: Traffic
    updated: float
    ok: float = 0.0
    errors: float = 0.0
    duration_sum: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))

    def advance(self, now: float) -> None:
        requests = self.traffic.rps * max(0.0, now - self.updated)
        self.updated = now
        self.errors += requests * self.traffic.error_ratio
        self.ok += requests * (1 - self.traffic.error_ratio)
        self.duration_sum += requests * self.traffic.latency_seconds
        for index, bound in enumerate(BUCKETS):
            if self.traffic.latency_seconds <= bound:
                self.buckets[index] += requests

    @property
    def count(self) -> float:
        return self.ok + self.errors


class Workload(Collector):
    """The traffic of many targets, readable as Prometheus metrics."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._targets: dict[tuple[str, str], _Target] = {}

    def set(self, namespace: str, deployment: str, traffic: Traffic) -> None:
        traffic.check()
        now = self._clock()
        with self._lock:
            target = self._targets.get((namespace, deployment))
            if target is None:
                self._targets[(namespace, deployment)] = _Target(traffic=traffic, updated=now)
            else:
                target.advance(now)  # what happened so far happened at the old rates
                target.traffic = traffic

    def remove(self, namespace: str, deployment: str) -> bool:
        with self._lock:
            return self._targets.pop((namespace, deployment), None) is not None

    def traffic(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {f"{ns}/{name}": asdict(t.traffic) for (ns, name), t in self._targets.items()}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "http_requests", "Requests served.", labels=["namespace", "deployment", "code"]
        )
        durations = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Time to serve a request.",
            labels=["namespace", "deployment"],
        )
        now = self._clock()
        with self._lock:
            for (namespace, deployment), target in sorted(self._targets.items()):
                target.advance(now)
                requests.add_metric([namespace, deployment, "200"], target.ok)
                requests.add_metric([namespace, deployment, "500"], target.errors)
                buckets = [(str(b), n) for b, n in zip(BUCKETS, target.buckets, strict=True)]
                buckets.append(("+Inf", target.count))
                durations.add_metric([namespace, deployment], buckets, target.duration_sum)
        yield requests
        yield durations


class _Handler(BaseHTTPRequestHandler):
    workload: Workload
    registry: CollectorRegistry

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read results, not access logs."""

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _target(self) -> tuple[str, str] | None:
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "targets" and all(parts[1:]):
            return parts[1], parts[2]
        return None

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._answer(200, generate_latest(self.registry), "text/plain; version=0.0.4")
        elif self.path == "/targets":
            self._answer(200, json.dumps(self.workload.traffic()).encode())
        else:
            self._answer(404, b'{"error": "not found"}')

    def do_PUT(self) -> None:
        target = self._target()
        if target is None:
            self._answer(404, b'{"error": "use /targets/<namespace>/<deployment>"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            fields = json.loads(self.rfile.read(length) or b"{}")
            traffic = Traffic(**{k: float(v) for k, v in fields.items()})
            self.workload.set(*target, traffic)
        except (ValueError, TypeError, AttributeError) as exc:
            self._answer(400, json.dumps({"error": str(exc)}).encode())
            return
        self._answer(200, json.dumps(asdict(traffic)).encode())

    def do_DELETE(self) -> None:
        target = self._target()
        if target is None or not self.workload.remove(*target):
            self._answer(404, b'{"error": "no such target"}')
            return
        self._answer(200, b"{}")


class SampleApp(BackgroundServer):
    """The sample workload served on 127.0.0.1 from a background thread."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.workload = Workload()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.workload)
        handler = type("Handler", (_Handler,), {"workload": self.workload, "registry": registry})
        super().__init__(handler, port=port, host=host)


def set_traffic(
    app_url: str,
    namespace: str,
    deployment: str,
    *,
    rps: float = 10.0,
    error_ratio: float = 0.0,
    latency_seconds: float = 0.05,
) -> None:
    """Set a target's traffic over HTTP, as a test or the demo does."""
    body = json.dumps(
        {"rps": rps, "error_ratio": error_ratio, "latency_seconds": latency_seconds}
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is the test's own server
        f"{app_url}/targets/{namespace}/{deployment}",
        data=body,
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        answer.read()


def main() -> None:
    parser = argparse.ArgumentParser(description="rollbackd's sample workload metrics server")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--targets",
        type=int,
        default=0,
        help="serve this many healthy targets at once (ns-<i%%100>/app-<i>), for benchmarks",
    )
    args = parser.parse_args()
    app = SampleApp(port=args.port, host=args.host)
    for index in range(args.targets):
        app.workload.set(f"ns-{index % 100}", f"app-{index}", Traffic(rps=20, error_ratio=0.001))
    print(f"sample app on http://{args.host}:{app.port}/metrics", flush=True)
    app.serve()


if __name__ == "__main__":
    main()
