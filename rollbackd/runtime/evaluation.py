"""One evaluation cycle: query each rule once, judge every target, count and log it.

The queries of a cycle run concurrently, one per rule (plus its ``min_traffic`` query),
whatever the number of Deployments. Failures are logged once per outage, not once per
tick: the first failure logs ``prometheus_query_failed`` with its code (a partial answer:
``prometheus_partial_response`` with its warnings), the first success after it logs
``prometheus_query_recovered`` with the outage's length.

A target that turns pending has its hold dated from the moment the rule's data first
showed the breach: one ``query_range`` of the rule's comparison over the last three
intervals, at a twentieth of the interval, finds it (Prometheus dates ``activeAt`` on the
tick; rollbackd is as strict about ``for``, and sooner). When that range cannot be read
the hold starts at the tick, as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog

from rollbackd.errors import PrometheusError, PrometheusPartial
from rollbackd.model import Instant, QueryResult, Reason, RuleState, Target, Transition, Verdict
from rollbackd.ports import Clock, MetricsSource
from rollbackd.replay.recorded import Recorded, grid, ticks
from rollbackd.rules.evaluate import Answer, RuleEvaluator, onsets
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import RuleSettings

log = get_logger(__name__)

# Failures of Prometheus itself hit every rule at once: one outage, one log line.
_SOURCE_WIDE = {"ERR_PROM_UNREACHABLE", "ERR_PROM_TIMEOUT", "ERR_PROM_BAD_RESPONSE"}

# A breach's onset is looked for at this many points between two ticks, over this many
# intervals back (a scrape's samples are dated when it began and seen when it ends: on a
# loaded host the tick before may have judged before the first breaching samples arrived),
# for at most this many targets turning pending at once.
ONSET_POINTS = 20
ONSET_INTERVALS = 3
ONSET_LIMIT = 100


@dataclass
class _Outage:
    code: str
    began: Instant


class RuleRunner:
    """Evaluates rules against a ``MetricsSource`` and keeps each rule's hold windows."""

    def __init__(
        self,
        rules: Sequence[RuleSettings],
        *,
        source: MetricsSource,
        clock: Clock,
        telemetry: Telemetry,
        previous: RuleRunner | None = None,
        silent: bool = False,
    ) -> None:
        self.rules = list(rules)
        self._silent = silent  # replaying history: no cycle, transition or outage logs
        self._source = source
        self._clock = clock
        self._telemetry = telemetry
        kept: dict[str, RuleEvaluator] = previous._evaluators if previous is not None else {}
        # A reload keeps the hold windows of every rule it did not change.
        self._evaluators: dict[str, RuleEvaluator] = {
            rule.name: (
                kept[rule.name]
                if rule.name in kept and kept[rule.name].rule == rule
                else RuleEvaluator(rule)
            )
            for rule in self.rules
        }
        self._outages: dict[str, _Outage] = {}
        self.focus: Callable[[], Collection[Target]] | None = None
        """When set, only targets worth reporting yield verdicts (plus these targets)."""
        self.managed: Callable[[Target], bool] | None = None
        """Whether a target is still managed, for targets whose series vanished."""
        self.failures: dict[str, PrometheusError] = {}
        """The failure of each rule's latest evaluation, for rules whose query failed."""

    async def run(
        self, rules: Sequence[RuleSettings] | None = None, *, at: Instant | None = None
    ) -> list[Verdict]:
        """Evaluate ``rules`` (all by default) once, concurrently, and return every verdict.

        ``at`` is the time the tick was due (the clock's reading by default): holds and
        windows are judged on it.
        """
        chosen = self.rules if rules is None else rules
        now = at if at is not None else self._clock.now()
        started = time.perf_counter()
        batches = await asyncio.gather(*(self._evaluate(rule, now) for rule in chosen))
        verdicts = [verdict for batch, _ in batches for verdict in batch]
        if self._silent:
            return verdicts
        log.info(
            "evaluation_cycle",
            rules=len(chosen),
            verdicts=len(verdicts),  # quiet mode: only targets with something to report
            pending=sum(v.state is RuleState.PENDING for v in verdicts),
            firing=sum(v.state is RuleState.FIRING for v in verdicts),
            failed=sum(failed for _, failed in batches),
            seconds=round(time.perf_counter() - started, 4),
        )
        return verdicts

    def due(self, rules: Sequence[RuleSettings] | None = None) -> Instant | None:
        """The earliest moment a pending hold of ``rules`` (all by default) reaches ``for``."""
        chosen = self.rules if rules is None else rules
        dues = [due for r in chosen if (due := self._evaluators[r.name].due) is not None]
        return min(dues, key=lambda at: at.monotonic) if dues else None

    async def seed(self) -> int:
        """Replay each rule's last ``for + keep_firing_for`` of history (``query_range``).

        After a restart or a leader change the hold windows are empty; seeded from history,
        a breach keeps its start instead of beginning again at the failover. The history
        is played through a ``RuleRunner`` as ``rollbackd replay`` plays it (``play``). A
        rule whose history cannot be read starts empty (logged), as before. Returns the
        rules seeded.
        """
        now = self._clock.now()
        end = now.wall.timestamp()
        recorded = Recorded(self._source)
        grids: list[tuple[RuleSettings, list[float]]] = []
        for rule in self.rules:
            span, step = (rule.for_ + rule.keep_firing_for).total_seconds(), rule.interval
            if span <= 0:
                continue
            start = end - span - step.total_seconds()
            failure = await record(recorded, rule, start=start, end=end)
            if failure is not None:
                log.warning("hold_state_not_seeded", rule=rule.name, code=failure.code)
                continue
            grids.append((rule, grid(start, end, step.total_seconds())))
        if grids:
            runner = RuleRunner(
                [rule for rule, _ in grids],
                source=recorded,
                clock=self._clock,
                telemetry=Telemetry(),
                silent=True,
            )
            runner.focus, runner.managed = tuple, self.managed
            async for _ in play(runner, recorded, ticks(grids), dated=self._dated_by(now, end)):
                pass
            self._evaluators.update(runner._evaluators)
        log.info("hold_state_seeded", rules=len(grids))
        return len(grids)

    @staticmethod
    def _dated_by(now: Instant, end: float) -> Callable[[float], Instant]:
        return lambda stamp: _dated(stamp, now=now, end=end)

    async def _evaluate(self, rule: RuleSettings, now: Instant) -> tuple[list[Verdict], bool]:
        started = time.perf_counter()
        queries = [self._fetch(rule.expr, rule)]
        if rule.min_traffic is not None:
            queries.append(self._fetch(rule.min_traffic.expr, rule))
        outcome, *traffic = await asyncio.gather(*queries)
        evaluator = self._evaluators[rule.name]
        verdicts = evaluator.evaluate(
            outcome,
            now=now,
            traffic=traffic[0] if traffic else None,
            quiet=self.focus is not None,
            include=self.focus() if self.focus is not None else (),
            managed=self.managed,
        )
        pending = [v.target for v in verdicts if v.transition is Transition.PENDING]
        if pending:
            moved = await self._date_onsets(rule, evaluator, pending, now)
            if moved:
                verdicts = [
                    replace(v, since=at)
                    if (at := moved.get(v.target)) is not None and v.state is RuleState.PENDING
                    else v
                    for v in verdicts
                ]

        failure = next((o for o in (outcome, *traffic) if isinstance(o, PrometheusError)), None)
        if failure is None:
            self.failures.pop(rule.name, None)
        else:
            self.failures[rule.name] = failure
        if self._silent:
            return verdicts, failure is not None
        self._track_outage(rule, failure, now)
        metrics = self._telemetry
        metrics.rule_evaluations.labels(rule.name, _result(failure)).inc()
        metrics.rule_evaluation_seconds.labels(rule.name).observe(time.perf_counter() - started)
        metrics.rules_firing.labels(rule.name).set(evaluator.firing)
        if isinstance(outcome, QueryResult) and outcome.ignored:
            metrics.series_ignored.labels(rule.name).inc(outcome.ignored)
        for verdict in verdicts:
            if verdict.transition is not None:
                _log_transition(verdict)
        return verdicts, failure is not None

    async def _date_onsets(
        self,
        rule: RuleSettings,
        evaluator: RuleEvaluator,
        targets: list[Target],
        now: Instant,
    ) -> dict[Target, Instant]:
        """Move the start of each newly pending hold back to its breach's onset, found in
        the rule's data of the last ``ONSET_INTERVALS`` intervals; returns the targets
        moved, with their onset.

        The range query carries the rule's comparison (``(expr) > 0.05``), so Prometheus
        answers with the breaching points alone: a few series, not one per Deployment.
        More than ``ONSET_LIMIT`` targets at once is a wide breach; their holds start at
        the tick.
        """
        if len(targets) > ONSET_LIMIT:
            return {}
        interval = rule.interval.total_seconds()
        step = interval / ONSET_POINTS
        end = now.wall.timestamp()
        window = {"start": end - ONSET_INTERVALS * interval + step, "end": end, "step": step}
        labels = rule.target_labels
        exprs = [f"({rule.expr}) {rule.op} {rule.threshold!r}"]
        if rule.min_traffic is not None:
            low = rule.min_traffic
            exprs.append(f"({low.expr}) {low.op} {low.threshold!r}")
        try:
            answers = [
                dict(answer)
                for answer in await asyncio.gather(
                    *(self._source.query_range(e, target_labels=labels, **window) for e in exprs)
                )
            ]
        except PrometheusError as exc:
            log.debug("onset_not_dated", rule=rule.name, code=exc.code)
            return {}
        breaching, *traffic = answers
        columns = []
        for stamp, result in sorted(breaching.items()):
            if stamp > end:
                continue
            found = set(result.values)
            if traffic:
                found &= set(traffic[0].get(stamp, QueryResult(values={})).values)
            at = _dated(stamp, now=now, end=end)
            columns.append((at, found))
        dated = onsets(targets, columns, end=now, step=step)
        return {t: at for t, at in dated.items() if evaluator.date_onset(t, at)}

    async def _fetch(self, expr: str, rule: RuleSettings) -> Answer:
        try:
            return await self._source.query(expr, target_labels=rule.target_labels)
        except PrometheusError as exc:
            return exc

    def _track_outage(
        self, rule: RuleSettings, failure: PrometheusError | None, now: Instant
    ) -> None:
        if failure is None:
            for key in (rule.name, "*"):
                outage = self._outages.pop(key, None)
                if outage is not None:
                    log.info(
                        "prometheus_query_recovered",
                        rule=rule.name if key != "*" else None,
                        code=outage.code,
                        outage_seconds=round(now.seconds_since(outage.began), 1),
                    )
            return
        key = "*" if failure.code in _SOURCE_WIDE else rule.name
        known = self._outages.get(key)
        if known is not None and known.code == failure.code:
            return
        self._outages[key] = _Outage(failure.code, now)
        if isinstance(failure, PrometheusPartial):
            log.warning(
                "prometheus_partial_response",
                rule=rule.name,
                reason=Reason.PARTIAL_RESPONSE,
                code=failure.code,
                warnings=list(failure.warnings),
                policy=rule.on_error,
            )
            return
        log.error(
            "prometheus_query_failed",
            rule=rule.name,
            code=failure.code,
            error_type=failure.error_type,
            error=failure.message,
            policy=rule.on_error,
        )


async def record(
    recorded: Recorded, rule: RuleSettings, *, start: float, end: float
) -> PrometheusError | None:
    """Record ``rule``'s query (and its ``min_traffic`` query) over ``[start, end]`` at its
    interval; the first failure, if any."""
    step = rule.interval.total_seconds()
    exprs = [rule.expr, *([rule.min_traffic.expr] if rule.min_traffic is not None else [])]
    spans = await asyncio.gather(
        *(
            recorded.record(e, target_labels=rule.target_labels, start=start, end=end, step=step)
            for e in exprs
        )
    )
    return next((span.failure for span in spans if span.failure is not None), None)


async def play(
    runner: RuleRunner,
    recorded: Recorded,
    timeline: Iterable[tuple[float, Sequence[RuleSettings]]],
    *,
    dated: Callable[[float], Instant],
) -> AsyncIterator[tuple[Instant, list[Verdict]]]:
    """Run ``runner`` over recorded history: at each time of ``timeline``, the rules due
    then are evaluated as one tick of the daemon, on the columns recorded for that time.
    ``runner`` must read from ``recorded``. Seeding and ``rollbackd replay`` both play."""
    for stamp, rules in timeline:
        recorded.at = stamp
        at = dated(stamp)
        yield at, await runner.run(rules, at=at)


def _dated(stamp: float, *, now: Instant, end: float) -> Instant:
    """The instant of a range query's ``stamp`` (unix seconds), ``end`` being ``now``."""
    return Instant(now.monotonic - (end - stamp), datetime.fromtimestamp(stamp, UTC))


def _result(failure: PrometheusError | None) -> str:
    """A rule evaluation's result for metrics: ok, partial_response, or the error code."""
    if failure is None:
        return "ok"
    if isinstance(failure, PrometheusPartial):
        return Reason.PARTIAL_RESPONSE.value
    return failure.code


def _log_transition(verdict: Verdict) -> None:
    with structlog.contextvars.bound_contextvars(
        rule=verdict.rule,
        namespace=verdict.target.namespace,
        deployment=verdict.target.deployment,
    ):
        level = "warning" if verdict.transition is Transition.FIRING else "info"
        getattr(log, level)(
            f"rule_{verdict.transition}",
            value=verdict.value,
            op=verdict.op,
            threshold=verdict.threshold,
            reason=str(verdict.reason) or None,
        )
