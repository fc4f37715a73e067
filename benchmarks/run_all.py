"""``make bench``: run every benchmark, print a table, rewrite benchmarks/RESULTS.md.

Targets (issue "Benchmarks"): at most 2 queries per rule per tick; rollbackd CPU per tick at
most 200 ms and RSS at most 200 MB at 10,000 targets; webhook p99 under 50 ms.
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


def main() -> None:
    """Run everything (figures kept in results.json), or only re-render with --render."""
    raw = HERE / "results.json"
    if "--render" not in sys.argv:
        results = {
            "evaluate": run("bench_evaluate.py"),
            "scale": run("bench_scale.py"),
            "detection": run("bench_detection.py"),
            "webhook": run("bench_webhook.py"),
            "machine": machine(),
            "measured": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        }
        raw.write_text(json.dumps(results, indent=2))
    render(json.loads(raw.read_text()))


def render(results: dict[str, Any]) -> None:
    scale, detection, webhook = results["scale"], results["detection"], results["webhook"]
    polling_ratio = scale["polling_cpu_s_per_tick"] * 1000 / scale["cpu_ms_per_tick"]
    rules = scale["rules"]
    checks = [
        (
            "queries per rule per tick <= 2",
            scale["queries_per_tick"] / rules,
            scale["queries_per_tick"] / rules <= 2,
        ),
        (
            "rollbackd CPU per tick <= 200 ms",
            scale["cpu_ms_per_tick"],
            scale["cpu_ms_per_tick"] <= 200,
        ),
        ("peak RSS <= 200 MB", scale["peak_rss_mb"], scale["peak_rss_mb"] <= 200),
        (
            "webhook p99 < 50 ms at the best rate",
            webhook["best_rate_p99_ms"],
            webhook["best_rate_p99_ms"] < 50,
        ),
        (
            "1,000 duplicate alerts -> 1 action",
            webhook["duplicate_actions"],
            webhook["duplicate_actions"] == 1,
        ),
        (
            "steady-state LISTs per tick == 0",
            detection["steady_lists_per_tick"],
            detection["steady_lists_per_tick"] == 0,
        ),
    ]
    lines = [
        "# rollbackd benchmark results",
        "",
        f"Measured {results['measured']} on {results['machine']} by `make bench`.",
        "",
        f"Per-target polling at {scale['targets']:,} Deployments x {scale['rules']} rules: "
        f"{scale['polling_queries_per_tick']:,} queries and {scale['polling_cpu_s_per_tick']} s "
        f"of CPU per tick against rollbackd's {scale['queries_per_tick']:g} queries and "
        f"{scale['cpu_ms_per_tick']} ms: {polling_ratio:,.0f} times the CPU.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
        "",
    ]
    for name in ("evaluate", "scale", "detection", "webhook"):
        figures = results[name]
        lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in figures.items()]
        lines.append("")
    text = "\n".join(lines)
    (HERE / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
