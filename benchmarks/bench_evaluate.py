"""How long one rule takes to judge a result of 10,000 series (one per Deployment).

Two figures per run, best of several ticks:
- pure: mapping the parsed series to targets and advancing 10,000 state machines (in the
  daemon's quiet mode: verdicts only for targets with something to report);
- edge: the same plus the HTTP request and JSON parsing, through PrometheusSource against
  a local stub serving the 10,000-series body.

Run: .venv/bin/python benchmarks/bench_evaluate.py [--series 10000] [--ticks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from pathlib import Path

from rollbackd.model import Instant
from rollbackd.rules.evaluate import RuleEvaluator
from rollbackd.settings import PrometheusSettings, RuleSettings, TargetLabels
from rollbackd.signals.answers import to_query_result
from rollbackd.signals.prometheus import PrometheusSource
from rollbackd.testing.clock import FakeClock
from rollbackd.testing.prometheus_stub import PrometheusStub, vector


def series(count: int, tick: int) -> list[tuple[dict[str, str], str]]:
    # a tenth of the Deployments breach, so transitions and tracks are exercised
    return [
        (
            {"namespace": f"ns-{i % 100}", "deployment": f"app-{i}"},
            "0.3" if (i + tick) % 10 == 0 else "0.01",
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rule = RuleSettings.model_validate(
        {"name": "errors", "expr": "x", "threshold": 0.05, "for": "30s", "interval": "15s"}
    )
    labels = TargetLabels()
    clock = FakeClock()

    evaluator = RuleEvaluator(rule)
    pure: list[float] = []
    for tick in range(args.ticks):
        parsed = json.loads(vector(*series(args.series, tick // 5)))["data"]["result"]
        now: Instant = clock.advance(15)
        started = time.perf_counter()
        evaluator.evaluate(to_query_result(parsed, labels), now=now, quiet=True)
        pure.append(time.perf_counter() - started)

    edge: list[float] = []
    evaluator = RuleEvaluator(rule)
    with PrometheusStub() as stub:
        source = PrometheusSource(PrometheusSettings(url=stub.url))
        for tick in range(args.ticks):
            stub.answer(vector(*series(args.series, tick // 5)))
            now = clock.advance(15)
            started = time.perf_counter()
            result = asyncio.run(source.query("x", target_labels=labels))
            evaluator.evaluate(result, now=now, quiet=True)
            edge.append(time.perf_counter() - started)
        source.close()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"series per result       {args.series}")
    print(
        f"pure  map+judge  median {statistics.median(pure) * 1000:7.1f} ms  "
        f"best {min(pure) * 1000:7.1f} ms"
    )
    print(
        f"edge  http+json+judge   {statistics.median(edge) * 1000:7.1f} ms  "
        f"best {min(edge) * 1000:7.1f} ms"
    )
    print(f"peak RSS of this process {peak_mb:.0f} MB")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "series": args.series,
                    "map_and_judge_ms_median": round(statistics.median(pure) * 1000, 1),
                    "http_json_judge_ms_median": round(statistics.median(edge) * 1000, 1),
                    "peak_rss_mb": round(peak_mb),
                }
            )
        )


if __name__ == "__main__":
    main()
