"""Play a span of history through the daemon's rule runner and incident core.

Each rule's ``expr`` (and ``min_traffic``) is read with ``query_range`` at the rule's
interval, in chunks of ``CHUNK_POINTS`` points per series (far under Prometheus's 11,000,
and one chunk in memory at a time). Every column is one tick of the daemon's
``RuleRunner`` (``play``), its verdicts one ``Signals`` event of the incident core, whose
effects are carried out against the past cluster (``past.py``): reading a workload, and
the rollback it would have made. Breaches, decisions and the gaps in the history are
collected into a ``Report``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from rollbackd.errors import PrometheusError
from rollbackd.incidents import lifecycle as core
from rollbackd.model import (
    Instant,
    QueryResult,
    RuleState,
    Target,
    Transition,
    Verdict,
    pick,
)
from rollbackd.ports import MetricsSource
from rollbackd.replay.past import PastCluster
from rollbackd.replay.recorded import Recorded, grid, ticks
from rollbackd.replay.report import Breach, Choice, Flap, Gap, Report
from rollbackd.runtime.evaluation import RuleRunner, play, record
from rollbackd.runtime.incidents import core_config
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import RuleSettings, Settings

CHUNK_POINTS = 120
"""Points per series in one range query: a 1,000-Deployment chunk stays a few MB."""
CONTEXT_POINTS = 20
"""Columns of a breach's chart before it began and after it ended."""

Progress = Callable[[float, float], None]
"""Called with the seconds of history done and the seconds in all."""


def _instant(stamp: float) -> Instant:
    return Instant(stamp, datetime.fromtimestamp(stamp, UTC))


def _worse(op: str, a: float | None, b: float | None) -> float | None:
    """The value further past the threshold of the two (for ``>``: the larger)."""
    known = [v for v in (a, b) if v is not None and not math.isnan(v)]
    if not known:
        return None
    return max(known) if op.startswith(">") else min(known)


@dataclass
class _Episode:
    """A (rule, target) from pending to cleared or resolved."""

    rule: RuleSettings
    target: Target
    began: datetime
    fired: datetime | None = None
    peak: float | None = None
    incident: str = ""
    points: list[tuple[float, float | None]] = field(default_factory=list)
    ended: datetime | None = None
    after: int = 0  # columns charted since it ended


class Replayer:
    """Follows the verdicts of each tick into breaches, and into the incident core's
    decisions against the past cluster (``past`` None: breaches only)."""

    def __init__(self, settings: Settings, rules: Sequence[RuleSettings], past: PastCluster | None):
        self.rules = list(rules)
        self.past = past
        config = replace(core_config(settings), epoch="replay", warmup=timedelta(0))
        self.state = core.initial(config, leading=True)
        self.open: dict[tuple[str, Target], _Episode] = {}
        self.closing: list[_Episode] = []
        self.breaches: list[Breach] = []
        self.flaps: dict[tuple[str, Target], Flap] = {}
        self.decisions: dict[str, Choice] = {}
        self.recent: dict[str, deque[tuple[float, QueryResult | PrometheusError]]] = {
            rule.name: deque(maxlen=CONTEXT_POINTS) for rule in self.rules
        }

    # --- rules ---------------------------------------------------------------------------

    def columns(self, recorded: Recorded, stamp: float, rules: Sequence[RuleSettings]) -> None:
        """Keep the columns of ``rules`` at ``stamp`` for the charts."""
        charted = [*self.open.values(), *self.closing]
        for rule in rules:
            column = recorded.column(rule.expr, stamp)
            self.recent[rule.name].append((stamp, column))
            episodes = [e for e in charted if e.rule.name == rule.name]
            if not episodes:
                continue
            values = _values(column, {e.target for e in episodes})
            for episode in episodes:
                episode.points.append((stamp, values.get(episode.target)))
                if episode.ended is not None:
                    episode.after += 1
        self.closing = [e for e in self.closing if e.after < CONTEXT_POINTS]

    def tick(self, at: Instant, verdicts: list[Verdict]) -> None:
        """One tick's verdicts: breaches followed, then the incident core stepped."""
        self.verdicts(at, verdicts)
        self.signals(at.wall, verdicts)

    def verdicts(self, at: Instant, verdicts: list[Verdict]) -> None:
        rules = {rule.name: rule for rule in self.rules}
        for verdict in verdicts:
            key = (verdict.rule, verdict.target)
            episode = self.open.get(key)
            if verdict.transition in (Transition.PENDING, Transition.FIRING) and episode is None:
                episode = _Episode(rules[verdict.rule], verdict.target, verdict.since.wall)
                episode.points = [
                    (stamp, _values(column, {verdict.target}).get(verdict.target))
                    for stamp, column in list(self.recent[verdict.rule])[:-1]
                ]
                episode.points.append((at.wall.timestamp(), verdict.value))
                self.open[key] = episode
            if episode is None:
                continue
            if verdict.state in (RuleState.PENDING, RuleState.FIRING):
                episode.peak = _worse(verdict.op, episode.peak, verdict.value)
            if verdict.transition is Transition.FIRING:
                episode.fired = at.wall
            elif verdict.transition is Transition.CLEARED:
                del self.open[key]
                flap = self.flaps.get(key)
                self.flaps[key] = (
                    Flap(verdict.rule, verdict.target, 1, episode.began, at.wall)
                    if flap is None
                    else replace(flap, count=flap.count + 1, last=at.wall)
                )
            elif verdict.transition is Transition.RESOLVED:
                del self.open[key]
                episode.ended = at.wall
                self.closing.append(episode)
                self.breaches.append(self.breach(episode))

    def breach(self, episode: _Episode) -> Breach:
        rule = episode.rule
        return Breach(
            rule=rule.name,
            target=episode.target,
            op=rule.op,
            threshold=rule.threshold,
            began=episode.began,
            fired=episode.fired,
            ended=episode.ended,
            peak=episode.peak,
            incident=episode.incident,
            points=episode.points,  # the same list: later columns still land in the chart
        )

    # --- the incident core ---------------------------------------------------------------

    def signals(self, at: datetime, verdicts: list[Verdict]) -> None:
        if self.past is None:
            return
        pending: list[core.Input] = [core.Signals(tuple(verdicts))]
        while pending:
            self.state, effects = core.step(self.state, pending.pop(0), at)
            for effect in effects:
                follow = self.effect(effect, at)
                if follow is not None:
                    pending.append(follow)
        for (_, target), episode in self.open.items():
            case = self.state.cases.get(target)
            if case is not None and episode.fired is not None and not episode.incident:
                episode.incident = case.id

    def effect(self, effect: core.Effect, at: datetime) -> core.Input | None:
        assert self.past is not None
        match effect:
            case core.Assess(target, incident):
                situation = self.past.situation(target, at)
                return core.Assessed(target, incident, situation, self.past.recent())
            case core.StartRollback():
                return self.past.roll_back(effect, at)
            case core.Decided(target, incident, decision):
                known = self.decisions.get(incident)
                if known is None or known.reason != str(decision.reason):
                    self.decisions[incident] = Choice(
                        incident=incident,
                        target=target,
                        at=at,
                        action=str(decision.action),
                        reason=str(decision.reason),
                        message=decision.message,
                        dry_run=decision.dry_run,
                    )
            case core.Say(facts) if facts.id in self.decisions:
                choice = self.decisions[facts.id]
                self.decisions[facts.id] = replace(choice, said=(*choice.said, facts.event))
                if facts.from_revision is not None and facts.to_revision is not None:
                    self.decisions[facts.id] = replace(
                        self.decisions[facts.id],
                        from_revision=facts.from_revision,
                        to_revision=facts.to_revision,
                    )
        return None

    def report(self, start: datetime, end: datetime, gaps: list[Gap]) -> Report:
        for episode in self.open.values():
            if episode.fired is not None:
                self.breaches.append(self.breach(episode))
        breaches = sorted(self.breaches, key=lambda b: (b.began, b.rule, b.target))
        releases = {}
        if self.past is not None:
            for breach in breaches:
                span = (breach.chart_start, breach.chart_end)
                releases[(breach.rule, breach.target, breach.began)] = self.past.releases(
                    breach.target, *span
                )
        return Report(
            start=start,
            end=end,
            rules=[rule.name for rule in self.rules],
            cluster=self.past is not None,
            breaches=breaches,
            decisions=sorted(self.decisions.values(), key=lambda d: (d.at, d.target)),
            flaps=sorted(self.flaps.values(), key=lambda f: (f.first, f.rule, f.target)),
            gaps=gaps,
            releases=releases,
        )


def _values(column: QueryResult | PrometheusError, targets: set[Target]) -> dict[Target, float]:
    """The numbers of ``targets`` in ``column`` (looked up without mapping the whole of
    it: a column holds every Deployment)."""
    if isinstance(column, PrometheusError):
        return {}
    return {t: v for t, v in pick(column.values, targets).items() if not math.isnan(v)}


def _no_data(recorded: Recorded, rule: RuleSettings, stamps: list[float]) -> list[Gap]:
    """Runs of times at which ``rule``'s query had no series at all."""
    seen = set(recorded.seen(rule.expr))
    gaps: list[Gap] = []
    run: list[float] = []
    for stamp in [*stamps, math.inf]:
        if stamp not in seen and stamp != math.inf:
            run.append(stamp)
            continue
        if run:
            gaps.append(Gap(rule.name, _at(run[0]), _at(run[-1]), "no_data", ""))
            run = []
    return gaps


def _stamps(start: float, until: float, step: float, *, final: bool) -> list[float]:
    """A rule's evaluation times in ``[start, until)`` (``until`` included in the last
    chunk), on the grid of multiples of ``step`` (unix seconds)."""
    stamps = grid(math.ceil(start / step - 1e-9) * step, until, step)
    return [s for s in stamps if s >= start and (s < until or final)]


def _at(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def _merged(gaps: list[Gap], step: dict[str, float]) -> list[Gap]:
    """Adjacent gaps of one rule and kind (across chunks) as one."""
    merged: list[Gap] = []
    for gap in sorted(gaps, key=lambda g: (g.rule, g.start)):
        last = merged[-1] if merged else None
        if (
            last is not None
            and (last.rule, last.kind, last.code) == (gap.rule, gap.kind, gap.code)
            and (gap.start - last.end).total_seconds() <= step[gap.rule] * 1.5
        ):
            merged[-1] = replace(last, end=gap.end)
        else:
            merged.append(gap)
    return merged


async def replay(
    settings: Settings,
    *,
    source: MetricsSource,
    past: PastCluster | None,
    start: datetime,
    end: datetime,
    rules: Sequence[RuleSettings] | None = None,
    progress: Progress | None = None,
) -> Report:
    """What rollbackd would have done from ``start`` to ``end`` (``past`` None: breaches
    only, without the cluster's history)."""
    chosen = list(rules if rules is not None else settings.rules)
    state = Replayer(settings, chosen, past)
    recorded = Recorded(source)
    runner = RuleRunner(chosen, source=recorded, clock=_Fixed(), telemetry=Telemetry(), silent=True)
    runner.focus = state.state.cases.keys if past is not None else tuple
    runner.managed = past.managed if past is not None else None
    steps = {rule.name: rule.interval.total_seconds() for rule in chosen}
    first, last = start.timestamp(), end.timestamp()
    width = CHUNK_POINTS * min(steps.values(), default=60.0)
    gaps: list[Gap] = []
    at = first
    while at <= last:
        until = min(at + width, last)
        final = until >= last
        grids = []
        for rule in chosen:
            stamps = _stamps(at, until, steps[rule.name], final=final)
            if not stamps:
                continue
            failure = await record(recorded, rule, start=stamps[0], end=stamps[-1])
            if failure is not None:
                gaps.append(Gap(rule.name, _at(stamps[0]), _at(stamps[-1]), "error", failure.code))
            else:
                gaps.extend(_no_data(recorded, rule, stamps))
            grids.append((rule, stamps))
        timeline = [
            (stamp, [r for r in due if r.interval == interval])
            for stamp, due in ticks(grids)
            for interval in dict.fromkeys(r.interval for r in due)
        ]
        index = 0
        async for tick, verdicts in play(runner, recorded, timeline, dated=_instant):
            stamp, due = timeline[index]
            index += 1
            state.columns(recorded, stamp, due)
            state.tick(tick, verdicts)
        if progress is not None:
            progress(until - first, last - first)
        if final:
            break
        at = until
    return state.report(start, end, _merged(gaps, steps))


class _Fixed:
    """The replay's clock is each column's time, passed to every tick; nothing reads it."""

    def now(self) -> Instant:
        return _instant(0.0)
