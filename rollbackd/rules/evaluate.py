"""Hold windows: one rule's state machine per target, with Prometheus alerting-rule semantics.

::

    inactive --breach--> pending --breach held for `for`--> firing
        ^                   |                                  |
        +---- no breach ----+      no breach for `keep_firing_for`
        +----------------------------------------------------- +

A target is judged ``breaching`` (True), ``not breaching`` (False) or ``unknown`` (None).
A failed query and a target missing from the result are judged by the rule's ``on_error``
and ``on_no_data`` policies, and so is a partial answer (``warnings``: its values are
shown with reason ``partial_response``, never compared as if complete): ``ok`` is not
breaching, ``breach`` is breaching, ``hold`` is unknown. Unknown changes nothing: a
pending target stays pending (its hold keeps counting, as Prometheus keeps ``activeAt``
across a failed evaluation) but never fires on an unknown tick, and a firing target stays
firing.

A hold begins at the tick that first saw the breach, unless ``date_onset`` moves its start
back to the moment the data itself first showed it (found in the last few intervals by
``onsets``): ``due`` is then when ``for`` is up, which may fall between ticks.

Pure: time comes in as ``now``; nothing here sleeps or does I/O.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from rollbackd.errors import PrometheusError, PrometheusPartial
from rollbackd.model import (
    Instant,
    QueryResult,
    Reason,
    RuleState,
    Target,
    Transition,
    Verdict,
    pick,
)
from rollbackd.settings import Policy, RuleSettings

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_POLICY: dict[Policy, bool | None] = {"ok": False, "breach": True, "hold": None}

Answer = QueryResult | PrometheusError
"""What a query produced: values, or the classified error."""


@dataclass(slots=True)
class _Track:
    """A target that is pending or firing; inactive targets are not tracked."""

    state: RuleState
    since: Instant
    active_since: Instant
    last_breach: Instant
    seen: Instant  # the tick that first saw the breach: when it began, for the guards


class _Judgement(NamedTuple):
    value: float | None
    breaching: bool | None
    reason: Reason = Reason.NONE
    error_code: str = ""


# Ticks are dated on their grid (a sum of floats): a hold of exactly `for` may come out a
# few femtoseconds short, which must not cost an interval.
GRID_SLACK_SECONDS = 1e-6


def holds(op: str, threshold: float, value: float) -> bool:
    """Whether ``value op threshold`` is true (NaN never is)."""
    return not math.isnan(value) and COMPARE[op](value, threshold)


def onsets(
    targets: Collection[Target],
    columns: Sequence[tuple[Instant, Collection[Target]]],
    *,
    end: Instant,
    step: float,
) -> dict[Target, Instant]:
    """For each of ``targets`` breaching up to ``end``, the first moment of its unbroken
    run of breaching columns (``columns``: oldest first, each a time and the targets
    breaching then, every ``step`` seconds). A column missing from the run ends it."""
    found: dict[Target, Instant] = {}
    running = set(targets)
    later = end
    for at, breaching in reversed(columns):
        if later.seconds_since(at) > 1.5 * step:
            break  # a time with nothing breaching, or the run does not reach the tick
        for target in list(running):
            if target in breaching:
                found[target] = at
            else:
                running.discard(target)
        if not running:
            break
        later = at
    return found


class RuleEvaluator:
    """Turns each evaluation's query outcome into verdicts for one rule."""

    def __init__(self, rule: RuleSettings) -> None:
        self.rule = rule
        self._for = rule.for_.total_seconds()
        self._keep = rule.keep_firing_for.total_seconds()
        self._tracks: dict[Target, _Track] = {}
        # Targets the rule has reported, so that one whose series vanished (a release that
        # crash-loops stops emitting metrics) is judged by `on_no_data`, not forgotten.
        self._seen: set[Target] = set()

    @property
    def due(self) -> Instant | None:
        """The earliest moment a pending hold reaches ``for``, if any target is pending."""
        starts = [t.active_since for t in self._tracks.values() if t.state is RuleState.PENDING]
        if not starts:
            return None
        start = min(starts, key=lambda at: at.monotonic)
        return Instant(start.monotonic + self._for, start.wall + timedelta(seconds=self._for))

    def date_onset(self, target: Target, onset: Instant) -> bool:
        """Start ``target``'s pending hold at ``onset``, when that is earlier than its start.

        ``onset`` is when the rule's data first showed the breach, at a finer step than the
        ticks, looked for a few intervals back (samples are seen some time after the time
        they carry). Only the hold moves: the breach still began, for the change guard, at
        the tick that saw it, so a change the watch reports a moment after the data's onset
        is never taken for a change after the breach. Returns whether it moved.
        """
        track = self._tracks.get(target)
        if track is None or track.state is not RuleState.PENDING:
            return False
        if onset.monotonic >= track.active_since.monotonic:
            return False
        track.since = track.active_since = onset
        return True

    @property
    def firing(self) -> int:
        """How many targets are firing now."""
        return sum(track.state is RuleState.FIRING for track in self._tracks.values())

    def evaluate(
        self,
        outcome: Answer,
        *,
        now: Instant,
        traffic: Answer | None = None,
        quiet: bool = False,
        include: Collection[Target] = (),
        managed: Callable[[Target], bool] | None = None,
    ) -> list[Verdict]:
        """Judge every target seen now or still held, and advance its state machine.

        ``traffic`` is the outcome of the rule's ``min_traffic`` query from the same tick.
        With ``quiet``, healthy targets with nothing to report (inactive, no transition,
        not breaching) yield no verdict unless named in ``include``: at 10,000 Deployments
        the daemon needs the few that matter, not 10,000 objects per tick.

        Unless ``on_no_data`` is ``ok``, a target seen before and now missing from the
        result is judged as no data while ``managed`` says it is still managed.
        """
        if isinstance(outcome, PrometheusPartial) and outcome.partial is not None:
            # What a partial answer holds is shown, judged by on_error; a target it lacks
            # may sit on the missing store: nothing is concluded from its absence.
            targets: Iterable[Target] = {*outcome.partial.values, *self._tracks}
        elif isinstance(outcome, PrometheusError):
            targets = list(self._tracks)
        else:
            values = whole = outcome.values
            if quiet and not isinstance(traffic, PrometheusError):
                # Quiet, a target with a number on the healthy side, nothing held and not
                # asked for has nothing to report whatever its traffic: it is not judged.
                # Only the targets judged are looked up (see ``SeriesValues``).
                compare, threshold = COMPARE[self.rule.op], self.rule.threshold
                isnan = math.isnan
                values = pick(values, {*include, *self._tracks}, (compare, threshold))
                targets = {t for t, v in values.items() if isnan(v) or compare(v, threshold)}
                targets.update(t for t in include if t in values)
                if traffic is not None:
                    rates = pick(traffic.values, targets | self._tracks.keys())
                    traffic = QueryResult(values=rates, ignored=traffic.ignored)
                outcome = QueryResult(values, outcome.ignored, outcome.ambiguous)
            else:
                targets = set(values)
            targets |= outcome.ambiguous
            targets |= self._tracks.keys()
            if self.rule.on_no_data != "ok":
                present = whole.keys() | outcome.ambiguous
                vanished = self._seen - present
                gone = {t for t in vanished if managed is not None and not managed(t)}
                self._seen -= gone
                self._seen |= present
                targets |= vanished - gone
        verdicts = []
        tracks = self._tracks
        for target in targets:
            judgement = self._judge(target, outcome, traffic)
            transition = self._step(target, judgement.breaching, now)
            track = tracks.get(target)
            if (
                quiet
                and track is None
                and transition is None
                and judgement.breaching is False
                and target not in include
            ):
                continue
            verdicts.append(
                Verdict(
                    rule=self.rule.name,
                    target=target,
                    value=judgement.value,
                    op=self.rule.op,
                    threshold=self.rule.threshold,
                    state=track.state if track else RuleState.INACTIVE,
                    since=track.since if track else now,
                    transition=transition,
                    breaching=judgement.breaching,
                    reason=judgement.reason,
                    error_code=judgement.error_code,
                    action=self.rule.action,
                    began=track.seen.wall if track else None,
                )
            )
        return verdicts

    def _judge(self, target: Target, outcome: Answer, traffic: Answer | None) -> _Judgement:
        rule = self.rule
        if isinstance(outcome, PrometheusPartial):
            shown = outcome.partial.values.get(target) if outcome.partial is not None else None
            policy = _POLICY[rule.on_error]
            return _Judgement(shown, policy, Reason.PARTIAL_RESPONSE, outcome.code)
        if isinstance(outcome, PrometheusError):
            return _Judgement(None, _POLICY[rule.on_error], Reason.ERROR, outcome.code)
        if target in outcome.ambiguous:
            return _Judgement(None, _POLICY[rule.on_error], Reason.AMBIGUOUS)
        value = outcome.values.get(target)
        if value is None or math.isnan(value):
            return _Judgement(None, _POLICY[rule.on_no_data], Reason.NO_DATA)
        if traffic is not None and rule.min_traffic is not None:
            if isinstance(traffic, PrometheusError):
                return _Judgement(value, _POLICY[rule.on_error], Reason.ERROR, traffic.code)
            rate = traffic.values.get(target)
            if rate is None or not holds(rule.min_traffic.op, rule.min_traffic.threshold, rate):
                return _Judgement(value, False, Reason.LOW_TRAFFIC)
        return _Judgement(value, holds(rule.op, rule.threshold, value))

    def _step(self, target: Target, breaching: bool | None, now: Instant) -> Transition | None:
        if breaching is None:
            return None
        if breaching:
            return self._breach(target, now)
        return self._no_breach(target, now)

    def _breach(self, target: Target, now: Instant) -> Transition | None:
        track = self._tracks.get(target)
        if track is None:
            state = RuleState.FIRING if self._for <= 0 else RuleState.PENDING
            self._tracks[target] = _Track(state, now, now, now, now)
            return Transition.FIRING if state is RuleState.FIRING else Transition.PENDING
        track.last_breach = now
        held = now.seconds_since(track.active_since)
        if track.state is RuleState.PENDING and held >= self._for - GRID_SLACK_SECONDS:
            track.state, track.since = RuleState.FIRING, now
            return Transition.FIRING
        return None

    def _no_breach(self, target: Target, now: Instant) -> Transition | None:
        track = self._tracks.get(target)
        if track is None:
            return None
        if track.state is RuleState.PENDING:
            del self._tracks[target]
            return Transition.CLEARED
        if now.seconds_since(track.last_breach) >= self._keep - GRID_SLACK_SECONDS:
            del self._tracks[target]
            return Transition.RESOLVED
        return None
