"""Alertmanager webhook throughput: alerts per second with p99 latency, server on one core.

The receiver (rollbackd's starlette app under uvicorn, bearer auth, validation, queue and
interpretation) runs in a subprocess pinned to CPU 0; the load generator runs here on CPU 1.
Each request carries one alert with its own fingerprint, so nothing is deduplicated away.
For each concurrency level: sustained alerts per second and latency percentiles. The
reported figure is the best throughput whose p99 stays under 50 ms. Then 1,000 copies of
one alert are sent and the number of resulting verdicts is printed (expected: 1).

Run: .venv/bin/python benchmarks/bench_webhook.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from rollbackd.model import Verdict
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.server import HttpServer, WebhookIntake, build_app
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AlertmanagerSettings, ServerSettings

TOKEN = "bench-token-0123456789"  # noqa: S105 - a benchmark's own local receiver


def serve(port: int) -> None:
    os.sched_setaffinity(0, {0})
    configure_logging(level="warning", fmt="json", stream=sys.stderr)  # stdout is the channel
    settings = AlertmanagerSettings.model_validate(
        {
            "enabled": True,
            "auth": {"bearer_token": TOKEN},
            "triggers": [{"match": {"alertname": "HighErrorRate"}}],
        }
    )
    verdicts: list[Verdict] = []

    async def sink(batch: list[Verdict]) -> None:
        verdicts.extend(batch)

    async def main() -> None:
        telemetry = Telemetry()
        intake = WebhookIntake(
            settings, clock=SystemClock(), telemetry=telemetry, sink=sink, capacity=10_000
        )
        app = build_app(
            server=ServerSettings(),
            alertmanager=settings,
            telemetry=telemetry,
            intake=intake,
            ready=lambda: True,
        )
        http = HttpServer(app, host="127.0.0.1", port=port)
        await http.start()
        worker = asyncio.create_task(intake.run())
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "count":
                await intake.drain()
                print(len(verdicts), flush=True)
            if not line:
                break
        worker.cancel()
        await http.stop()

    asyncio.run(main())


def payload(fingerprint: str) -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "web"},
        "annotations": {},
        "startsAt": "2026-11-27T03:34:58.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }
    return json.dumps(
        {"version": "4", "status": "firing", "groupKey": "g", "receiver": "r", "alerts": [alert]}
    ).encode()


async def load(url: str, concurrency: int, seconds: float, start: int) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    deadline = time.perf_counter() + seconds
    counter = iter(range(start, 10**9))
    async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_connections=concurrency)) as c:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                body = payload(f"fp-{next(counter)}")
                sent = time.perf_counter()
                answer = await c.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - sent)
                assert answer.status_code == 200, answer.text

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--serve", type=int)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    os.sched_setaffinity(0, {1})
    port = 18650
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stdin is not None
    assert server.stdout.readline().strip() == "ready"
    url = f"http://127.0.0.1:{port}/api/v1/alertmanager"
    best, best_p99 = 0.0, 0.0
    print(f"{'concurrency':>11} {'alerts/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    sent = 0
    for concurrency in (1, 2, 4, 8, 16, 32):
        latencies = asyncio.run(load(url, concurrency, args.seconds, sent))
        sent += len(latencies)
        rate = len(latencies) / args.seconds
        p50 = statistics.median(latencies) * 1000
        p99 = statistics.quantiles(latencies, n=100)[98] * 1000
        print(f"{concurrency:>11} {rate:>9.0f} {p50:>7.1f} {p99:>7.1f}")
        if p99 < 50 and rate > best:
            best, best_p99 = rate, p99
    duplicate = payload("the-same-one")
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(timeout=5) as client:
        for _ in range(1000):
            client.post(url, content=duplicate, headers=headers)
    server.stdin.write("count\n")
    server.stdin.flush()
    verdicts = int(server.stdout.readline())
    server.stdin.close()
    server.wait(10)
    print(f"best sustained rate with p99 < 50 ms: {best:.0f} alerts/s (server on one core)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "best_rate_alerts_per_s": round(best),
                    "best_rate_p99_ms": round(best_p99, 1),
                    "distinct_alerts": sent,
                    "duplicate_actions": verdicts - sent,
                }
            )
        )
    print(
        f"verdicts: {verdicts} for {sent} distinct alerts + 1,000 copies of one "
        f"(expected {sent + 1})"
    )


if __name__ == "__main__":
    main()
