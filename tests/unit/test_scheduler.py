"""The evaluation scheduler: one job per interval, gated by leadership, overruns counted."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from rollbackd.model import QueryResult, Target, Verdict
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.scheduler import EvaluationScheduler
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import RuleSettings, TargetLabels


class SlowSource:
    """A MetricsSource whose answers take ``delay`` seconds and count the queries."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.queries: list[str] = []

    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        self.queries.append(expr)
        await asyncio.sleep(self.delay)
        return QueryResult(values={Target("shop", "web"): 0.0})

    async def check_syntax(self, expr: str) -> bool:
        return True


def rule(name: str, interval: str) -> RuleSettings:
    return RuleSettings.model_validate(
        {"name": name, "expr": name, "threshold": 1, "interval": interval}
    )


async def schedule(
    source: SlowSource, rules: list[RuleSettings], seconds: float, active: bool = True
) -> tuple[Telemetry, list[Verdict]]:
    telemetry = Telemetry()
    runner = RuleRunner(rules, source=source, clock=SystemClock(), telemetry=telemetry)
    seen: list[Verdict] = []

    async def sink(verdicts: list[Verdict]) -> None:
        seen.extend(verdicts)

    scheduler = EvaluationScheduler(runner, sink=sink, telemetry=telemetry, active=lambda: active)
    scheduler.start()
    await asyncio.sleep(seconds)
    scheduler.shutdown()
    return telemetry, seen


@pytest.mark.asyncio
async def test_one_query_per_rule_per_tick_grouped_by_interval() -> None:
    """Rules of different intervals keep their own pace; each tick queries each rule once."""
    source = SlowSource(0.0)
    await schedule(source, [rule("fast", "1s"), rule("slow", "2s")], 2.5)
    assert source.queries.count("fast") == 3  # t = 0, 1, 2
    assert source.queries.count("slow") == 2  # t = 0, 2


@pytest.mark.asyncio
async def test_overrunning_ticks_are_skipped_logged_and_counted() -> None:
    """A tick still running when the next is due is skipped, never run twice at once."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    source = SlowSource(2.2)
    telemetry, _ = await schedule(source, [rule("slow", "1s")], 3.5)
    assert telemetry.value("rollbackd_evaluation_overruns_total", {"interval": "1s"}) >= 1
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert "evaluation_overrun" in events
    assert source.queries.count("slow") <= 2


@pytest.mark.asyncio
async def test_inactive_replica_does_not_evaluate() -> None:
    """A replica that is not the leader queries nothing."""
    source = SlowSource(0.0)
    _, seen = await schedule(source, [rule("fast", "1s")], 1.5, active=False)
    assert source.queries == []
    assert seen == []
