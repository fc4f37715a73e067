"""Runs evaluation cycles on time with APScheduler's ``AsyncIOScheduler``.

One job per distinct rule interval, so a 15s rule and a 1m rule keep their own pace.
Each job allows one running instance and coalesces missed runs; its misfire grace time
is the interval itself (APScheduler's default of one second would silently drop a run
that starts a little late on a busy loop). A tick that is skipped because the previous
one still runs is logged and counted as an overrun.

Each tick is judged on the time it was due on its job's grid (``TickGrid``), not on the
moment it happened to start: holds and windows advance by exactly one interval per tick.
When a pending hold reaches ``for`` between two ticks (its start dated from the data, see
``RuleRunner``), its group is evaluated once more at that moment, so a breach held for
``for`` is acted on then, not up to an interval later. Ticks of one group never overlap.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from rollbackd.model import Instant, Verdict
from rollbackd.ports import Clock
from rollbackd.runtime.clock import SystemClock, TickGrid
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import RuleSettings, format_duration

log = get_logger(__name__)

TickSink = Callable[[list[Verdict], Instant], Awaitable[None]]
"""Takes one tick's verdicts and the time the tick was due."""


class EvaluationScheduler:
    """Calls ``runner`` for each interval group and hands the verdicts to ``sink``.

    ``active`` gates every tick: only the leader evaluates.
    """

    def __init__(
        self,
        runner: RuleRunner,
        *,
        sink: TickSink,
        telemetry: Telemetry,
        active: Callable[[], bool] = lambda: True,
        clock: Clock | None = None,
    ) -> None:
        self._runner = runner
        self._sink = sink
        self._telemetry = telemetry
        self._active = active
        self._clock = clock or SystemClock()
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_listener(self._on_skip, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self.groups = _by_interval(runner.rules)
        self._locks = {interval: asyncio.Lock() for interval in self.groups}
        self._dues: dict[timedelta, tuple[Instant, asyncio.Task[None]]] = {}

    def start(self) -> None:
        """Schedule every group; must be called inside the running event loop."""
        origin = self._clock.now()
        first_run = origin.wall
        for interval, rules in self.groups.items():
            seconds = interval.total_seconds()
            self._scheduler.add_job(
                self._tick,
                "interval",
                seconds=seconds,
                start_date=first_run,
                args=[rules, TickGrid(origin, seconds)],
                id=f"rules-{format_duration(interval)}",
                name=f"rules every {format_duration(interval)}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(seconds)),
                next_run_time=first_run,
            )
        self._scheduler.start()
        log.info(
            "scheduler_started",
            groups={format_duration(k): [r.name for r in v] for k, v in self.groups.items()},
        )

    def shutdown(self) -> None:
        """Stop scheduling; a tick already running finishes on its own."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for _, task in self._dues.values():
            task.cancel()
        self._dues.clear()

    async def _tick(self, rules: Sequence[RuleSettings], grid: TickGrid) -> None:
        if not self._active():
            return
        await self._evaluate(rules, grid, grid.due(self._clock.now()))

    async def _evaluate(self, rules: Sequence[RuleSettings], grid: TickGrid, at: Instant) -> None:
        interval = rules[0].interval
        try:
            async with self._locks[interval]:
                verdicts = await self._runner.run(rules, at=at)
                await self._sink(verdicts, at)
        except Exception:  # a bug must not stop the next tick; it is logged in full
            log.exception("evaluation_failed", rules=[rule.name for rule in rules])
            return
        self._follow_due(rules, grid, at)

    def _follow_due(self, rules: Sequence[RuleSettings], grid: TickGrid, at: Instant) -> None:
        """Evaluate ``rules`` again when a pending hold reaches ``for`` before the next tick."""
        due = self._runner.due(rules)
        next_tick = grid.due(at).monotonic + grid.interval
        if due is None or due.monotonic <= at.monotonic or due.monotonic >= next_tick:
            return
        interval = rules[0].interval
        known = self._dues.get(interval)
        if known is not None and not known[1].done():
            if known[0].monotonic <= due.monotonic:
                return
            known[1].cancel()
        task = asyncio.get_running_loop().create_task(self._at_due(rules, grid, due))
        self._dues[interval] = (due, task)

    async def _at_due(self, rules: Sequence[RuleSettings], grid: TickGrid, due: Instant) -> None:
        await asyncio.sleep(max(0.0, due.monotonic - self._clock.now().monotonic))
        if self._active():
            await self._evaluate(rules, grid, due)

    def _on_skip(self, event: JobEvent) -> None:
        interval = event.job_id.removeprefix("rules-")
        self._telemetry.evaluation_overruns.labels(interval).inc()
        log.warning(
            "evaluation_overrun",
            interval=interval,
            reason="still running" if event.code == EVENT_JOB_MAX_INSTANCES else "late",
        )


def _by_interval(rules: Sequence[RuleSettings]) -> dict[timedelta, list[RuleSettings]]:
    groups: dict[timedelta, list[RuleSettings]] = defaultdict(list)
    for rule in rules:
        groups[rule.interval].append(rule)
    return dict(groups)
