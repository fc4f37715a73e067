"""``make bench``: run every benchmark, print a table, rewrite benchmarks/RESULTS.md.

Targets (issue "Performance"): detection p95 at or under the Alertmanager path's and within
0.5 s of the physical floor's, at intervals of 1 s and 2 s; at 50,000 real-shaped
Deployments x 5 rules at most 500 MB peak RSS, CPU per steady tick at most twice fetching
and decoding the same answers, one query per rule per tick, no LIST at steady state; the
webhook at 64 connections at least 0.8 of a bare endpoint's rate with p99 under 50 ms; the
leader at most 31 Kubernetes API requests a minute at the default timings. Replay (issue
"replay"): 24 h of 3 rules over 1,000 Deployments at a 15 s step in under 60 s and 500 MB.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def run(script: str, *args: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, str(HERE / script), *args, "--json", out.name],
            check=True,
            timeout=1800,
        )
        return dict(json.loads(Path(out.name).read_text()))


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{platform.platform()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"
    )


SIZES = (1_000, 10_000, 50_000)


def main() -> None:
    """Run everything (figures kept in results.json), or only re-render with --render."""
    raw = HERE / "results.json"
    if "--render" not in sys.argv:
        sizes = {str(n): run("bench_scale.py", "--targets", str(n)) for n in SIZES}
        detection = run("bench_detection.py")
        results = {
            "evaluate": run("bench_evaluate.py"),
            "scale": {**sizes[str(SIZES[-1])], "by_size": sizes},
            "detection": {**_headline(detection), "by_interval": detection},
            "webhook": run("bench_webhook.py"),
            "replay": run("bench_replay.py"),
            "machine": machine(),
            "measured": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        }
        raw.write_text(json.dumps(results, indent=2))
    render(json.loads(raw.read_text()))


def _headline(by_interval: dict[str, Any]) -> dict[str, Any]:
    """The figures named by the issue, from the slowest interval (the hardest to beat)."""
    worst = by_interval[max(by_interval, key=lambda k: by_interval[k]["interval_s"])]
    return {
        "floor_s": worst["floor_p50_s"],
        "floor_p95_s": worst["floor_p95_s"],
        "rollbackd_p95_s": worst["rollbackd_p95_s"],
        "alertmanager_p95_s": worst["alertmanager_p95_s"],
        "leader_requests_per_minute": worst["leader_requests_per_minute"],
    }


def checks(results: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    scale, detection, webhook = results["scale"], results["detection"], results["webhook"]
    found: list[tuple[str, Any, bool]] = []
    for name, run_ in detection["by_interval"].items():
        ours, am, floor_ = run_["rollbackd_p95_s"], run_["alertmanager_p95_s"], run_["floor_p95_s"]
        found += [
            (f"{name}: rollbackd p95 <= Alertmanager p95 (s)", f"{ours} / {am}", ours <= am),
            (
                f"{name}: rollbackd p95 within 0.5 s of the floor's p95 (s)",
                f"{ours} / {floor_}",
                floor_ is not None and ours - floor_ <= 0.5,
            ),
        ]
    share = webhook["at_64_connections"]["share_of_bare"]
    p99 = webhook["at_64_connections"]["p99_ms"]
    found += [
        ("scale: peak RSS <= 500 MB", scale["peak_rss_mb"], scale["peak_rss_mb"] <= 500),
        (
            "scale: CPU per tick <= 2x fetch and decode (ms)",
            f"{scale['cpu_ms_per_tick']} / {scale['decode_ms_per_tick']}",
            scale["cpu_ms_per_tick"] <= 2 * scale["decode_ms_per_tick"],
        ),
        (
            "scale: queries per rule per tick == 1",
            scale["queries_per_rule_per_tick"],
            scale["queries_per_rule_per_tick"] == 1,
        ),
        ("scale: LISTs at steady state == 0", scale["steady_lists"], scale["steady_lists"] == 0),
        ("webhook at 64 connections: share of bare >= 0.8", share, share >= 0.8),
        ("webhook at 64 connections: p99 < 50 ms", p99, p99 < 50),
        (
            "webhook: 1,000 duplicate alerts -> 1 action",
            webhook["duplicate_actions"],
            webhook["duplicate_actions"] == 1,
        ),
        *_replay_checks(results.get("replay")),
        (
            "leader API requests a minute <= 31",
            detection["leader_requests_per_minute"],
            detection["leader_requests_per_minute"] <= 31,
        ),
    ]
    return found


def _replay_checks(replay: dict[str, Any] | None) -> list[tuple[str, Any, bool]]:
    if replay is None:
        return [("replay: measured", "not yet", False)]
    return [
        ("replay: 24 h x 3 rules x 1,000 Deployments < 60 s", replay["replay_seconds"],
         replay["replay_seconds"] < 60),
        ("replay: peak RSS < 500 MB", replay["peak_rss_mb"], replay["peak_rss_mb"] < 500),
        ("replay: found exactly the bad releases", replay["found_the_bad_releases"],
         replay["found_the_bad_releases"] is True),
    ]  # fmt: skip


def render(results: dict[str, Any]) -> None:
    scale = results["scale"]
    lines = [
        "# rollbackd benchmark results",
        "",
        f"Measured {results['measured']} on {results['machine']} by `make bench`.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[
            f"| {name} | {value} | {'yes' if ok else '**no**'} |"
            for name, value, ok in checks(results)
        ],
        "",
        "## cost per workload",
        "",
        "| Deployments | CPU ms per tick | fetch+decode ms | us per Deployment | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for size, figures in scale["by_size"].items():
        lines.append(
            f"| {int(size):,} | {figures['cpu_ms_per_tick']} | {figures['decode_ms_per_tick']} "
            f"| {figures['cpu_us_per_deployment_per_tick']} | {figures['peak_rss_mb']} |"
        )
    lines.append("")
    for name in ("evaluate", "scale", "detection", "webhook", "replay"):
        if name not in results:
            continue
        figures = {k: v for k, v in results[name].items() if k not in ("by_size", "by_interval")}
        lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in figures.items()]
        lines.append("")
    for name, figures in results["detection"]["by_interval"].items():
        lines += [f"### detection, {name}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in figures.items()]
        lines.append("")
    text = "\n".join(lines)
    (HERE / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
