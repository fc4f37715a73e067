"""Runs evaluation cycles on time with APScheduler's ``AsyncIOScheduler``.

One job per distinct rule interval, so a 15s rule and a 1m rule keep their own pace.
Each job allows one running instance and coalesces missed runs; its misfire grace time
is the interval itself (APScheduler's default of one second would silently drop a run
that starts a little late on a busy loop). A tick that is skipped because the previous
one still runs is logged and counted as an overrun.

Each tick is judged on the time it was due on its job's grid (``TickGrid``), not on the
moment it happened to start: holds and windows advance by exactly one interval per tick.
"""

from __future__ import annotations

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

    async def _tick(self, rules: Sequence[RuleSettings], grid: TickGrid) -> None:
        if not self._active():
            return
        at = grid.due(self._clock.now())
        try:
            verdicts = await self._runner.run(rules, at=at)
            await self._sink(verdicts, at)
        except Exception:  # a bug must not stop the next tick; it is logged in full
            log.exception("evaluation_failed", rules=[rule.name for rule in rules])

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
