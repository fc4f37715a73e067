"""Hold windows: the per-target state machine of a rule, with a fake clock."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from rollbackd.errors import PrometheusUnreachable
from rollbackd.model import (
    Instant,
    QueryResult,
    Reason,
    RuleState,
    SeriesValues,
    Target,
    Transition,
    Verdict,
)
from rollbackd.rules.evaluate import GRID_SLACK_SECONDS, RuleEvaluator, onsets
from rollbackd.settings import RuleSettings
from rollbackd.testing.clock import FakeClock

WEB = Target("shop", "web")


def rule(**overrides: object) -> RuleSettings:
    fields: dict[str, object] = {
        "name": "errors",
        "expr": "ratio",
        "op": ">",
        "threshold": 0.05,
        "for": "10s",
        "interval": "2s",
    }
    fields.update(overrides)
    return RuleSettings.model_validate(fields)


def result(value: float | None, target: Target = WEB) -> QueryResult:
    return QueryResult(values={} if value is None else {target: value})


def one(verdicts: list[Verdict], target: Target = WEB) -> Verdict:
    (verdict,) = [v for v in verdicts if v.target == target]
    return verdict


def test_breach_goes_pending_then_fires_after_for() -> None:
    """A breach is pending first and fires only once it has held for `for`."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule())
    first = one(evaluator.evaluate(result(0.3), now=clock.now()))
    assert (first.state, first.transition) == (RuleState.PENDING, Transition.PENDING)
    held = one(evaluator.evaluate(result(0.3), now=clock.advance(8)))
    assert (held.state, held.transition) == (RuleState.PENDING, None)
    fired = one(evaluator.evaluate(result(0.3), now=clock.advance(2)))
    assert (fired.state, fired.transition) == (RuleState.FIRING, Transition.FIRING)
    assert evaluator.firing == 1


def test_one_dip_restarts_the_hold() -> None:
    """One evaluation below the threshold before `for` elapses clears it; the hold starts over."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule())
    evaluator.evaluate(result(0.3), now=clock.now())
    evaluator.evaluate(result(0.3), now=clock.advance(6))
    dip = one(evaluator.evaluate(result(0.01), now=clock.advance(2)))
    assert dip.transition is Transition.CLEARED
    restart = one(evaluator.evaluate(result(0.3), now=clock.advance(2)))
    assert restart.transition is Transition.PENDING
    assert one(evaluator.evaluate(result(0.3), now=clock.advance(8))).state is RuleState.PENDING
    assert one(evaluator.evaluate(result(0.3), now=clock.advance(2))).state is RuleState.FIRING


def test_zero_for_fires_on_first_breach() -> None:
    """Without a hold window a breach fires at once, as a Prometheus rule without `for`."""
    evaluator = RuleEvaluator(rule(**{"for": "0s"}))
    verdict = one(evaluator.evaluate(result(0.3), now=FakeClock().now()))
    assert verdict.transition is Transition.FIRING


def test_keep_firing_for_delays_resolution() -> None:
    """A firing rule resolves only after `keep_firing_for` without a breach."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule(**{"for": "0s", "keep_firing_for": "5s"}))
    evaluator.evaluate(result(0.3), now=clock.now())
    assert one(evaluator.evaluate(result(0.0), now=clock.advance(2))).state is RuleState.FIRING
    assert one(evaluator.evaluate(result(0.0), now=clock.advance(2))).state is RuleState.FIRING
    resolved = one(evaluator.evaluate(result(0.0), now=clock.advance(1)))
    assert (resolved.state, resolved.transition) == (RuleState.INACTIVE, Transition.RESOLVED)


def test_query_error_holds_state_and_never_fires_by_default() -> None:
    """An unreachable Prometheus keeps a pending target pending: no rollback from an outage."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule())
    evaluator.evaluate(result(0.3), now=clock.now())
    for _ in range(10):
        failed = one(evaluator.evaluate(PrometheusUnreachable("down"), now=clock.advance(2)))
        assert failed.state is RuleState.PENDING
        assert failed.transition is None
        assert (failed.reason, failed.error_code) == (Reason.ERROR, "ERR_PROM_UNREACHABLE")
    # The hold kept counting through the outage, as Prometheus keeps activeAt.
    assert one(evaluator.evaluate(result(0.3), now=clock.advance(2))).state is RuleState.FIRING


def test_error_policy_breach_and_ok() -> None:
    """on_error: breach treats a failed query as a breach; ok treats it as healthy."""
    clock = FakeClock()
    breach = RuleEvaluator(rule(on_error="breach", **{"for": "0s"}))
    ok = RuleEvaluator(rule(on_error="ok", **{"for": "0s"}))
    for evaluator in (breach, ok):
        evaluator.evaluate(result(0.3), now=clock.now())
    assert one(breach.evaluate(PrometheusUnreachable("x"), now=clock.advance(2))).state == "firing"
    assert one(ok.evaluate(PrometheusUnreachable("x"), now=clock.advance(2))).state == "inactive"


def test_missing_target_is_no_data() -> None:
    """A target absent from the result is judged by on_no_data; NaN counts as absent."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule(on_no_data="hold"))
    evaluator.evaluate(result(0.3), now=clock.now())
    gone = one(evaluator.evaluate(result(None), now=clock.advance(2)))
    assert (gone.reason, gone.state, gone.breaching) == (Reason.NO_DATA, RuleState.PENDING, None)
    nan = one(evaluator.evaluate(result(float("nan")), now=clock.advance(2)))
    assert nan.reason is Reason.NO_DATA
    default = RuleEvaluator(rule())
    default.evaluate(result(0.3), now=clock.now())
    assert one(default.evaluate(result(None), now=clock.advance(2))).transition == "cleared"


def test_low_traffic_cannot_breach() -> None:
    """Below min_traffic a 100% error ratio is not a breach: three failed requests are noise."""
    clock = FakeClock()
    evaluator = RuleEvaluator(
        rule(min_traffic={"expr": "rps", "op": ">=", "threshold": 1}, **{"for": "0s"})
    )
    quiet = QueryResult(values={WEB: 0.5})
    verdict = one(evaluator.evaluate(result(1.0), now=clock.now(), traffic=quiet))
    assert (verdict.breaching, verdict.reason, verdict.state) == (
        False,
        Reason.LOW_TRAFFIC,
        "inactive",
    )
    absent = one(evaluator.evaluate(result(1.0), now=clock.now(), traffic=QueryResult(values={})))
    assert absent.reason is Reason.LOW_TRAFFIC
    busy = QueryResult(values={WEB: 10.0})
    assert one(evaluator.evaluate(result(1.0), now=clock.now(), traffic=busy)).state == "firing"


def test_ambiguous_target_is_an_error() -> None:
    """Two series for one Deployment mean a wrong `by` clause: judged as a query error."""
    evaluator = RuleEvaluator(rule(**{"for": "0s"}))
    outcome = QueryResult(values={}, ambiguous=frozenset({WEB}))
    verdict = one(evaluator.evaluate(outcome, now=FakeClock().now()))
    assert (verdict.reason, verdict.breaching) == (Reason.AMBIGUOUS, None)


def test_targets_are_independent() -> None:
    """One Deployment breaching does not move another's state."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule(**{"for": "0s"}))
    api = Target("shop", "api")
    verdicts = evaluator.evaluate(QueryResult(values={WEB: 0.3, api: 0.0}), now=clock.now())
    assert one(verdicts).state is RuleState.FIRING
    assert one(verdicts, api).state is RuleState.INACTIVE


def test_less_than_rules() -> None:
    """op `<` rules (e.g. success ratio below 99%) breach on low values."""
    evaluator = RuleEvaluator(rule(op="<", threshold=0.99, **{"for": "0s"}))
    assert one(evaluator.evaluate(result(0.95), now=FakeClock().now())).breaching is True


# --- properties ----------------------------------------------------------------------

Tick = tuple[float, str]  # (seconds since the previous tick, "breach" | "ok" | "error")
ticks = st.lists(
    st.tuples(st.floats(0.5, 5), st.sampled_from(["breach", "ok", "error"])), max_size=60
)


def run(evaluator: RuleEvaluator, history: list[Tick]) -> list[tuple[float, str, Verdict | None]]:
    clock = FakeClock()
    seen: list[tuple[float, str, Verdict | None]] = []
    for gap, kind in history:
        now = clock.advance(gap)
        outcome = (
            PrometheusUnreachable("down")
            if kind == "error"
            else result(0.3 if kind == "breach" else 0.0)
        )
        verdicts = evaluator.evaluate(outcome, now=now)
        seen.append((clock.seconds, kind, verdicts[0] if verdicts else None))
    return seen


@settings(max_examples=300)
@given(ticks)
def test_never_fires_before_for_of_continuous_breach(history: list[Tick]) -> None:
    """Whenever a target fires, every evaluation of the last `for` seconds breached (or held)."""
    hold = 10.0
    seen = run(RuleEvaluator(rule(**{"for": "10s"})), history)
    for index, (at, kind, verdict) in enumerate(seen):
        if verdict is None or verdict.transition is not Transition.FIRING:
            continue
        assert kind == "breach"
        window = [k for t, k, _ in seen[: index + 1] if t >= at - hold]
        assert "ok" not in window
        # the episode began at least `for` before firing
        episode_start = max(
            (t for t, k, _ in seen[: index + 1] if k == "ok"), default=float("-inf")
        )
        episode = [t for t, k, _ in seen[: index + 1] if k == "breach" and t > episode_start]
        assert at - min(episode) >= hold - GRID_SLACK_SECONDS  # float sums of the grid


@settings(max_examples=300)
@given(ticks)
def test_error_tick_never_fires_under_hold(history: list[Tick]) -> None:
    """Under on_error: hold, an evaluation whose query failed never fires anything."""
    for _, kind, verdict in run(RuleEvaluator(rule()), history):
        if kind == "error" and verdict is not None:
            assert verdict.transition is None


@settings(max_examples=300)
@given(ticks)
def test_resolves_only_after_keep_firing_for(history: list[Tick]) -> None:
    """A firing target resolves only after `keep_firing_for` without a breach."""
    keep = 6.0
    seen = run(RuleEvaluator(rule(**{"for": "0s", "keep_firing_for": "6s"})), history)
    last_breach = None
    for at, kind, verdict in seen:
        if kind == "breach":
            last_breach = at
        if verdict is not None and verdict.transition is Transition.RESOLVED:
            assert last_breach is not None
            assert at - last_breach >= keep - GRID_SLACK_SECONDS


def test_quiet_mode_reports_only_what_matters() -> None:
    """The daemon's quiet mode skips healthy, inactive targets unless asked to include them."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule())
    api, db = Target("shop", "api"), Target("shop", "db")
    result_values = QueryResult(values={WEB: 0.3, api: 0.0, db: 0.0})
    verdicts = evaluator.evaluate(result_values, now=clock.now(), quiet=True, include={db})
    assert {v.target for v in verdicts} == {WEB, db}
    assert len(evaluator.evaluate(result_values, now=clock.advance(2))) == 3


def instant(seconds: float) -> Instant:
    return FakeClock(seconds).now()


def test_an_onset_run_is_unbroken_and_a_gap_or_a_dip_ends_it() -> None:
    """The onset of a breach is the first moment of its unbroken run up to the tick: a dip,
    or a time with nothing breaching at all (absent from the answer), ends the run; a run
    that stops short of the tick is no onset."""
    other, late = Target("shop", "api"), Target("shop", "db")
    breaching = [{WEB, other}, {WEB}, {WEB, other}, {WEB, other}, {WEB, other}]
    columns = [(instant(100 + 0.1 * k), b) for k, b in enumerate(breaching)]
    found = onsets([WEB, other, late], columns, end=instant(100.4), step=0.1)
    assert found == {WEB: instant(100.0), other: instant(100.2)}
    gap = [columns[0], *columns[2:]]  # at 100.1 nothing breached: Prometheus sent no point
    assert onsets([WEB], gap, end=instant(100.4), step=0.1) == {WEB: instant(100.2)}
    assert onsets([WEB], columns[:3], end=instant(100.4), step=0.1) == {}


def test_an_onset_moves_a_pending_hold_back_never_forward_and_never_a_firing_one() -> None:
    """Dated from its onset, a pending hold reaches `for` sooner (``due``) while the breach
    still began at its tick for the change guard; a later onset changes nothing, and
    neither does an onset for a hold that already fires."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule())
    tick = clock.now()
    evaluator.evaluate(result(0.3), now=tick)
    assert evaluator.due == instant(tick.monotonic + 10)
    assert not evaluator.date_onset(WEB, instant(tick.monotonic + 0.5))
    assert evaluator.date_onset(WEB, instant(tick.monotonic - 0.7))
    assert evaluator.due == instant(tick.monotonic + 9.3)
    early = one(evaluator.evaluate(result(0.3), now=clock.advance(8)))
    assert early.state is RuleState.PENDING
    assert early.began == tick.wall  # the change guard still dates the breach at its tick
    fired = one(evaluator.evaluate(result(0.3), now=clock.advance(1.3)))
    assert fired.transition is Transition.FIRING
    assert evaluator.due is None
    assert not evaluator.date_onset(WEB, instant(tick.monotonic - 1.5))
    assert one(evaluator.evaluate(result(0.3), now=clock.advance(2))).state is RuleState.FIRING


def as_columns(values: dict[Target, float]) -> SeriesValues:
    """``values`` as the Prometheus edge keeps a vector of two-label series."""
    return SeriesValues(
        [t.namespace for t in values], [t.deployment for t in values], list(values.values())
    )


@settings(max_examples=200)
@given(
    ticks=st.lists(
        st.lists(
            st.sampled_from([0.0, 0.01, 0.05, 0.06, 0.3, math.nan, math.inf]),
            min_size=6,
            max_size=6,
        ),
        min_size=1,
        max_size=6,
    ),
    op=st.sampled_from([">", ">=", "<", "<="]),
    include=st.sets(st.integers(min_value=0, max_value=7), max_size=3),
    missing=st.sets(st.integers(min_value=0, max_value=5), max_size=2),
    traffic=st.booleans(),
    no_data=st.sampled_from(["ok", "breach", "hold"]),
)
def test_quiet_judging_of_a_columnar_answer_reports_what_the_whole_answer_does(
    ticks: list[list[float]],
    op: str,
    include: set[int],
    missing: set[int],
    traffic: bool,
    no_data: str,
) -> None:
    """The edge keeps a large answer as columns and only the targets worth judging are
    looked up: every tick's verdicts are the same as when the whole answer is a mapping
    (targets held, asked for, breaching, NaN or gone missing, with or without min_traffic,
    whatever ``on_no_data``)."""
    names = [Target(f"ns-{i % 2}", f"app-{i}") for i in range(8)]
    fields: dict[str, object] = {"op": op, "threshold": 0.05, "for": "4s", "on_no_data": no_data}
    if traffic:
        fields["min_traffic"] = {"expr": "rate", "threshold": 1}
    plain, columnar = RuleEvaluator(rule(**fields)), RuleEvaluator(rule(**fields))
    clock = FakeClock()
    for tick, numbers in enumerate(ticks):
        now = clock.advance(2)
        present = [i for i in range(len(numbers)) if i not in missing or tick % 2]
        whole = {names[i]: numbers[i] for i in present}
        rates = {names[i]: float(i) for i in present}
        wanted = {names[i] for i in include}
        verdicts = [
            evaluator.evaluate(
                QueryResult(shape(whole)),
                now=now,
                traffic=QueryResult(shape(rates)) if traffic else None,
                quiet=True,
                include=wanted,
            )
            for evaluator, shape in ((plain, dict), (columnar, as_columns))
        ]
        expected, got = verdicts
        assert sorted(map(repr, got)) == sorted(map(repr, expected))
