"""Alertmanager webhook throughput and tail latency, measured with wrk against a bare bound.

The receiver (rollbackd's starlette app under uvicorn: bearer auth, size and time limits,
validation, dedup, queue and interpretation) runs in a subprocess pinned to CPU 0, started
and tuned as the daemon does; wrk (Debian's) runs on CPU 1 with two threads. Each request
carries one alert with its own fingerprint, so nothing is deduplicated away. In the same
run and the same way, a bare starlette endpoint that reads the body and answers 200: the
upper bound for any receiver on this stack. Both run at once and wrk takes them in turn,
round after round, so the machine's changes of speed (large on a shared host) fall on both
alike. For each connection count: alerts per second, p50 and p99 (wrk's own latency
histogram), each the median of the rounds. The share of bare is taken head to head: both
loaded at once, sharing CPU 0, so the ratio of their rates is the ratio of their costs
whatever the host does meanwhile (taken in turn, one round's share ranged 0.56 to 0.99 on
this machine; head to head, 0.83 to 0.85). Then 1,000 copies of one alert are sent and
the number of resulting verdicts is printed (expected: 1).

Run: .venv/bin/python benchmarks/bench_webhook.py [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rollbackd.model import Verdict
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.process import tune_gc
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AlertmanagerSettings, ServerSettings
from rollbackd.testing.services import free_port
from rollbackd.web import HttpServer, WebhookIntake, build_app

TOKEN = "bench-token-0123456789"  # noqa: S105 - a benchmark's own local receiver
PATH = "/api/v1/alertmanager"
CONNECTIONS = (8, 64)


def payload(fingerprint: str) -> str:
    alert = {
        "status": "firing",
        "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "web"},
        "annotations": {},
        "startsAt": "2026-11-27T03:34:58.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }
    body = {"version": "4", "status": "firing", "groupKey": "g", "receiver": "r"}
    return json.dumps({**body, "alerts": [alert]})


def bare_app() -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route(PATH, receive, methods=["POST"])])


def serve(port: int, *, bare: bool) -> None:
    os.sched_setaffinity(0, {0})
    configure_logging(level="warning", fmt="json", stream=sys.stderr)  # stdout is the channel
    settings = AlertmanagerSettings.model_validate(
        {
            "enabled": True,
            "auth": {"bearer_token": TOKEN},
            "triggers": [{"match": {"alertname": "HighErrorRate"}}],
        }
    )
    received = [0]

    async def sink(batch: list[Verdict]) -> None:
        received[0] += len(batch)

    async def main() -> None:
        telemetry = Telemetry()
        intake = WebhookIntake(
            settings, clock=SystemClock(), telemetry=telemetry, sink=sink, capacity=10_000
        )
        listen = ServerSettings(listen=f"127.0.0.1:{port}")
        app = (
            bare_app()
            if bare
            else build_app(
                server=listen,
                alertmanager=settings,
                telemetry=telemetry,
                intake=intake,
                ready=lambda: True,
            )
        )
        http = HttpServer(app, listen)
        await http.start()
        worker = asyncio.create_task(intake.run())
        tune_gc()  # as the daemon does once started
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "count":
                await intake.drain()
                print(received[0], flush=True)
            if not line:
                break
        worker.cancel()
        await http.stop()

    asyncio.run(main())


WRK_SCRIPT = """
local template = [[%s]]
local counter = 0
local prefix = ""
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer %s"
wrk.headers["Content-Type"] = "application/json"
function init(args)
  prefix = tostring(math.random(1, 1000000000)) .. "-" .. tostring(os.clock())
end
function request()
  counter = counter + 1
  local body = string.gsub(template, "FINGERPRINT", prefix .. "-" .. counter)
  return wrk.format(nil, nil, nil, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%.3f %%.3f %%.3f\\n", summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def run_wrk(url: str, connections: int, seconds: float, script: Path) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: make deps installs it (Debian package wrk)")
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            wrk,
            "-t2",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    requests, errors, duration_us, p50, p99, worst = line.split()[1:]
    return {
        "alerts_per_s": round(int(requests) / (int(duration_us) / 1e6)),
        "errors": int(errors),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "max_ms": round(float(worst), 1),
        "requests": int(requests),
    }


def start(port: int, *, bare: bool) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), *(["--bare"] if bare else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    return server


def count(server: subprocess.Popen[str]) -> int:
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write("count\n")
    server.stdin.flush()
    return int(server.stdout.readline())


def settled_count(server: subprocess.Popen[str]) -> int:
    """The verdict count once two readings 0.2 s apart agree (at most 5 s)."""
    last = count(server)
    for _ in range(25):
        time.sleep(0.2)
        now = count(server)
        if now == last:
            return now
        last = now
    return last


def stop(server: subprocess.Popen[str]) -> None:
    assert server.stdin is not None
    server.stdin.close()
    server.wait(10)


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per key: the median over the rounds (p99 also at its worst)."""
    figures = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    figures["p99_ms_worst"] = max(r["p99_ms"] for r in rounds)
    figures["requests"] = sum(r["requests"] for r in rounds)
    return figures


def head_to_head(urls: dict[str, str], seconds: float, script: Path) -> dict[str, dict[str, Any]]:
    """One wrk against each server at the same time, 64 connections each: both servers
    share CPU 0, so whatever the machine's speed does, it does to both."""
    figures: dict[str, dict[str, Any]] = {}

    def load(name: str) -> None:
        figures[name] = run_wrk(urls[name], 64, seconds, script)

    threads = [threading.Thread(target=load, args=(name,)) for name in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return figures


def measure(seconds: float, rounds: int) -> dict[str, Any]:
    """Both servers up at once. At each connection count, ``rounds`` runs of each in turn
    (bare, rollbackd, bare, ...) give the rates and latencies of each alone. The share of
    bare is measured head to head: both loaded at once on the one core for ``rounds``
    rounds, each round's share the ratio of the two rates (the same CPU, the same moment),
    the figure their median. The in-turn share is kept beside it."""
    script = Path(tempfile.mkdtemp(prefix="rollbackd-wrk-")) / "alerts.lua"
    script.write_text(WRK_SCRIPT % (payload("FINGERPRINT"), TOKEN))
    results: dict[str, Any] = {}
    ports = {"bare": free_port(), "rollbackd": free_port()}
    servers = {name: start(port, bare=name == "bare") for name, port in ports.items()}
    urls = {name: f"http://127.0.0.1:{port}{PATH}" for name, port in ports.items()}
    shares: dict[int, list[float]] = {}
    try:
        for connections in CONNECTIONS:
            runs: dict[str, list[dict[str, Any]]] = {"bare": [], "rollbackd": []}
            for _ in range(rounds):
                for name, figures in runs.items():
                    figures.append(run_wrk(urls[name], connections, seconds, script))
            for name, figures in runs.items():
                results[f"{name}_{connections}"] = _median_round(figures)
            shares[connections] = [
                ours["alerts_per_s"] / max(bare["alerts_per_s"], 1)
                for ours, bare in zip(runs["rollbackd"], runs["bare"], strict=True)
            ]
        together = [head_to_head(urls, seconds, script) for _ in range(rounds)]
        head_shares = [
            r["rollbackd"]["alerts_per_s"] / max(r["bare"]["alerts_per_s"], 1) for r in together
        ]
        server, url = servers["rollbackd"], urls["rollbackd"]
        sent = settled_count(server)  # wrk's last requests may still be in flight
        duplicate = payload("the-same-one")
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        with httpx.Client(timeout=5) as client:
            for _ in range(1000):
                client.post(url, content=duplicate, headers=headers)
        results["duplicate_actions"] = settled_count(server) - sent
        results["distinct_alerts"] = sum(
            results[f"rollbackd_{c}"]["requests"] for c in CONNECTIONS
        ) + sum(r["rollbackd"]["requests"] for r in together)
        results["verdicts_for_distinct"] = sent
    finally:
        for server in servers.values():
            stop(server)
    ours, bare_64 = results["rollbackd_64"], results["bare_64"]
    results["at_64_connections"] = {
        "alerts_per_s": round(ours["alerts_per_s"]),
        "p99_ms": ours["p99_ms"],
        "p99_ms_worst": ours["p99_ms_worst"],
        "bare_alerts_per_s": round(bare_64["alerts_per_s"]),
        "bare_p99_ms": bare_64["p99_ms"],
        "share_of_bare": round(statistics.median(head_shares), 2),
        "share_of_bare_rounds": [round(share, 2) for share in head_shares],
        "share_of_bare_in_turn": round(statistics.median(shares[64]), 2),
        "share_of_bare_in_turn_rounds": [round(share, 2) for share in shares[64]],
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, bare=args.bare)
        return
    results = measure(args.seconds, args.rounds)
    for key, value in results.items():
        print(f"{key:24} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
