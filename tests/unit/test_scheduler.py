"""The evaluation scheduler: one job per interval, gated by leadership, overruns counted,
every tick judged on the time it was due."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollbackd.model import Instant, QueryResult, RuleState, Target, Transition, Verdict
from rollbackd.rules.evaluate import RuleEvaluator
from rollbackd.runtime.clock import SystemClock, TickGrid
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

    async def query_range(
        self, expr: str, *, target_labels: TargetLabels, start: float, end: float, step: float
    ) -> list[tuple[float, QueryResult]]:
        return []  # no history: a hold starts at the tick that saw it

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

    async def sink(verdicts: list[Verdict], at: Instant) -> None:
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


class JitterClock:
    """The system clock, each reading off by the next of ``offsets`` (seconds), in turn.

    Stands for a tick that starts a few milliseconds late by a varying amount, or reads a
    clock that has not quite reached the time the tick was due.
    """

    def __init__(self, offsets: list[float]) -> None:
        self._offsets = itertools.cycle(offsets)

    def now(self) -> Instant:
        offset = next(self._offsets)
        real = SystemClock().now()
        return Instant(real.monotonic + offset, real.wall + timedelta(seconds=offset))


ORIGIN = Instant(5000.123, datetime(2026, 12, 1, 3, 0, tzinfo=UTC))


@given(
    interval=st.sampled_from([1.0, 2.0, 15.0, 0.1 * 7]),
    tick=st.integers(min_value=0, max_value=100_000),
    late=st.floats(min_value=-0.004, max_value=0.9),
)
def test_a_tick_is_dated_at_the_grid_time_it_was_due(
    interval: float, tick: int, late: float
) -> None:
    """A tick that starts a few ms early or up to most of an interval late is dated at its
    own grid time, so no tick is taken for the one before or after it."""
    grid = TickGrid(ORIGIN, interval)
    offset = late * interval if late > 0 else late  # up to 4 ms early, or a share late
    start = ORIGIN.monotonic + tick * interval + offset
    due = grid.due(Instant(start, ORIGIN.wall))
    assert due.monotonic == pytest.approx(ORIGIN.monotonic + tick * interval, abs=1e-9)
    assert due.wall == ORIGIN.wall + timedelta(seconds=tick * interval)


@settings(max_examples=300)
@given(
    interval=st.sampled_from([1, 2, 5, 15]),
    holds=st.integers(min_value=1, max_value=8),
    jitter=st.lists(st.floats(min_value=-0.004, max_value=0.030), min_size=20, max_size=20),
)
def test_a_breach_fires_at_the_tick_for_after_it_began_whatever_the_jitter(
    interval: int, holds: int, jitter: list[float]
) -> None:
    """The hold boundary: with ticks that start a few ms off their time, a breach held for
    `for` fires at the tick `for` after it began, never one tick later (Prometheus judges
    on fixed group timestamps; so does rollbackd)."""
    rule = RuleSettings.model_validate(
        {
            "name": "errors",
            "expr": "x",
            "threshold": 1,
            "interval": f"{interval}s",
            "for": f"{interval * holds}s",
        }
    )
    evaluator = RuleEvaluator(rule)
    grid = TickGrid(ORIGIN, float(interval))
    breaching = QueryResult(values={Target("shop", "web"): 5.0})
    fired_at = None
    for tick, late in enumerate(jitter):
        started = ORIGIN.monotonic + tick * interval + late
        at = grid.due(Instant(started, ORIGIN.wall + timedelta(seconds=started - 5000.123)))
        verdicts = evaluator.evaluate(breaching, now=at)
        if any(v.transition is Transition.FIRING for v in verdicts):
            fired_at = tick
            break
    assert fired_at == holds


@pytest.mark.asyncio
async def test_the_scheduler_dates_each_tick_on_its_grid_despite_a_jittery_clock() -> None:
    """Through the real scheduler: every reading of the clock is a few ms off, yet the rule
    fires on the second tick after pending, with a hold of exactly its `for`."""
    clock = JitterClock([0.009, -0.003, 0.0, 0.004, -0.002])
    telemetry = Telemetry()
    rules = [
        RuleSettings.model_validate(
            {"name": "errors", "expr": "x", "threshold": -1, "interval": "1s", "for": "2s"}
        )
    ]
    source = SlowSource(0.0)
    runner = RuleRunner(rules, source=source, clock=clock, telemetry=telemetry)
    seen: list[tuple[Instant, list[Verdict]]] = []
    fired = asyncio.Event()

    async def sink(verdicts: list[Verdict], at: Instant) -> None:
        seen.append((at, verdicts))
        if any(v.state is RuleState.FIRING for v in verdicts):
            fired.set()

    scheduler = EvaluationScheduler(runner, sink=sink, telemetry=telemetry, clock=clock)
    scheduler.start()
    try:
        await asyncio.wait_for(fired.wait(), 6)
    finally:
        scheduler.shutdown()
    ticks = [at.monotonic for at, _ in seen]
    assert [round(b - a, 9) for a, b in itertools.pairwise(ticks)] == [1.0] * (len(ticks) - 1)
    states = [v.state for _, verdicts in seen for v in verdicts]
    assert states == [RuleState.PENDING, RuleState.PENDING, RuleState.FIRING]
    firing = seen[-1][1][0]
    assert firing.since.monotonic - seen[0][0].monotonic == pytest.approx(2.0, abs=1e-6)


class OnsetSource(SlowSource):
    """Breaching (1.0) now; its history shows the breach began ``onset`` seconds before
    the end of any range asked for, as when a scrape crossed the threshold mid-interval."""

    def __init__(self, onset: float) -> None:
        super().__init__(0.0)
        self.onset = onset
        self.ranges: list[tuple[float, float, float]] = []
        self.exprs: list[str] = []

    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        self.queries.append(expr)
        return QueryResult(values={Target("shop", "web"): 1.0})

    async def query_range(
        self, expr: str, *, target_labels: TargetLabels, start: float, end: float, step: float
    ) -> list[tuple[float, QueryResult]]:
        self.ranges.append((start, end, step))
        self.exprs.append(expr)
        count = round((end - start) / step) + 1
        stamps = [start + k * step for k in range(count)]
        began = end - self.onset
        # As Prometheus answers a comparison: only the points where it holds.
        return [
            (stamp, await self.query(expr, target_labels=target_labels))
            for stamp in stamps
            if stamp >= began - 1e-9
        ]


@pytest.mark.asyncio
async def test_a_hold_dated_from_its_onset_fires_when_for_is_up_between_ticks() -> None:
    """A breach the data shows 0.5 s before the tick that saw it, `for` 3s at a 2s interval:
    the rule fires 2.5 s after that tick, when the hold is really up, not at the 4 s tick."""
    telemetry = Telemetry()
    rules = [
        RuleSettings.model_validate(
            {"name": "errors", "expr": "x", "threshold": 0.5, "interval": "2s", "for": "3s"}
        )
    ]
    source = OnsetSource(0.5)
    runner = RuleRunner(rules, source=source, clock=SystemClock(), telemetry=telemetry)
    seen: list[tuple[float, Instant, Verdict]] = []
    fired = asyncio.Event()

    async def sink(verdicts: list[Verdict], at: Instant) -> None:
        seen.extend((time.monotonic(), at, v) for v in verdicts)
        if any(v.transition is Transition.FIRING for v in verdicts):
            fired.set()

    scheduler = EvaluationScheduler(runner, sink=sink, telemetry=telemetry)
    scheduler.start()
    try:
        await asyncio.wait_for(fired.wait(), 6)
    finally:
        scheduler.shutdown()
    first_tick = seen[0][1]
    pending = seen[0][2]
    assert pending.transition is Transition.PENDING
    assert first_tick.monotonic - pending.since.monotonic == pytest.approx(0.5, abs=1e-6)
    arrived, at, firing = seen[-1]
    assert firing.transition is Transition.FIRING
    assert at.monotonic - first_tick.monotonic == pytest.approx(2.5, abs=1e-6)
    assert firing.since.monotonic - pending.since.monotonic == pytest.approx(3.0, abs=1e-6)
    assert arrived - first_tick.monotonic < 3.0  # acted on before the 4 s tick by far
    assert source.exprs == ["(x) > 0.5"]  # once, when the hold begins; the breaching points
    start, end, step = source.ranges[0]
    assert (end - start, step) == (pytest.approx(5.9), pytest.approx(0.1))  # 3 intervals


class WideSource(OnsetSource):
    """``count`` Deployments breaching at once."""

    def __init__(self, count: int) -> None:
        super().__init__(0.5)
        self.count = count

    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        self.queries.append(expr)
        return QueryResult(values={Target("shop", f"web-{i}"): 1.0 for i in range(self.count)})


@pytest.mark.asyncio
@pytest.mark.parametrize(("count", "dated"), [(100, True), (101, False)])
async def test_a_wide_breach_is_dated_at_the_tick_without_a_range_query(
    count: int, dated: bool
) -> None:
    """Up to 100 targets turning pending at once have their onsets looked up; more is a wide
    breach, whose range answer would be as large as the cluster: holds start at the tick."""
    rules = [
        RuleSettings.model_validate(
            {"name": "errors", "expr": "x", "threshold": 0.5, "interval": "2s", "for": "3s"}
        )
    ]
    source = WideSource(count)
    runner = RuleRunner(rules, source=source, clock=SystemClock(), telemetry=Telemetry())
    tick = SystemClock().now()
    verdicts = await runner.run(at=tick)
    assert len(verdicts) == count
    assert len(source.exprs) == int(dated)
    moved = {round(tick.monotonic - v.since.monotonic, 6) for v in verdicts}
    assert moved == ({0.5} if dated else {0.0})
