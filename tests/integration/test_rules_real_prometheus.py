"""Rules with hold windows against the real Prometheus scraping the sample app every second."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from rollbackd.model import Instant, Reason, RuleState, Target, Transition, Verdict
from rollbackd.rules.syntax import check_rule_syntax
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.scheduler import EvaluationScheduler
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import PrometheusSettings, RuleSettings
from rollbackd.signals.prometheus import PrometheusSource
from rollbackd.testing.app import SampleApp, set_traffic
from rollbackd.testing.services import Prometheus

pytestmark = pytest.mark.integration

WEB = Target("shop", "web")


def ratio(window: str = "5s", fn: str = "rate") -> str:
    return (
        f'sum by (namespace, deployment) ({fn}(http_requests_total{{code="500"}}[{window}]))'
        f" / sum by (namespace, deployment) ({fn}(http_requests_total[{window}]))"
    )


def rule(**fields: object) -> RuleSettings:
    base: dict[str, object] = {
        "name": "errors",
        "expr": ratio(),
        "op": ">",
        "threshold": 0.05,
        "interval": "1s",
    }
    return RuleSettings.model_validate({**base, **fields})


@dataclass
class Run:
    """What a scheduled run saw: (seconds since start, verdict) for one target."""

    started: float = field(default_factory=time.monotonic)
    seen: list[tuple[float, Verdict]] = field(default_factory=list)
    done: Callable[[], object] = lambda: False
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def sink(self, verdicts: list[Verdict], at: Instant) -> None:
        # `since` is the evaluation's own clock reading, free of query latency.
        self.seen.extend((v.since.monotonic - self.started, v) for v in verdicts if v.target == WEB)
        if self.done():
            self.finished.set()

    def first(self, transition: Transition, after: float = -1.0) -> float | None:
        return next((at for at, v in self.seen if v.transition is transition and at > after), None)

    def transitions(self) -> list[Transition]:
        return [v.transition for _, v in self.seen if v.transition is not None]


@pytest.fixture
def scraped(prometheus: Prometheus, sample_app: SampleApp) -> Prometheus:
    set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.0)
    prometheus.wait_until_scraped()
    return prometheus


def runner_for(prometheus: Prometheus, *rules: RuleSettings) -> tuple[RuleRunner, Telemetry]:
    telemetry = Telemetry()
    source = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout="800ms"))
    return RuleRunner(rules, source=source, clock=SystemClock(), telemetry=telemetry), telemetry


async def run_until(
    runner: RuleRunner, telemetry: Telemetry, run: Run, done: Callable[[], object], limit: float
) -> None:
    """Run the real scheduler until ``done()`` is true after a tick, or ``limit`` seconds."""
    run.done = done
    scheduler = EvaluationScheduler(runner, sink=run.sink, telemetry=telemetry)
    scheduler.start()
    try:
        await asyncio.wait_for(run.finished.wait(), limit)
    except TimeoutError:
        pass  # the assertions say what was missing
    finally:
        scheduler.shutdown()


def test_error_ratio_fires_after_its_hold_window(
    scraped: Prometheus, sample_app: SampleApp
) -> None:
    """0.3 against > 0.05 with for 5s: pending first, firing 5 to 8 seconds later."""
    runner, telemetry = runner_for(scraped, rule(**{"for": "5s"}))
    run = Run()
    set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.3)
    asyncio.run(run_until(runner, telemetry, run, lambda: run.first(Transition.FIRING), limit=40))
    pending, firing = run.first(Transition.PENDING), run.first(Transition.FIRING)
    assert pending is not None, run.transitions()
    assert firing is not None, run.transitions()
    interval, scrape, hold = 1.0, 1.0, 5.0
    assert hold <= firing - pending <= hold + interval + 2 * scrape
    assert run.transitions()[:2] == [Transition.PENDING, Transition.FIRING]
    assert telemetry.value("rollbackd_rules_firing", {"rule": "errors"}) == 1
    assert telemetry.value("rollbackd_rule_evaluations_total", {"rule": "errors", "result": "ok"})


def test_a_dip_below_the_threshold_restarts_the_hold(
    scraped: Prometheus, sample_app: SampleApp
) -> None:
    """A breach that recovers briefly before `for` elapses must hold a full `for` again."""
    runner, telemetry = runner_for(scraped, rule(expr=ratio("3s", "irate"), **{"for": "6s"}))
    run = Run()
    phase = {"name": "breach"}

    def steer() -> bool:
        pending = run.first(Transition.PENDING)
        if phase["name"] == "breach" and pending is not None:
            set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.0)
            phase["name"] = "dip"
        elif phase["name"] == "dip" and run.first(Transition.CLEARED) is not None:
            set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.5)
            phase["name"] = "again"
        return run.first(Transition.FIRING) is not None

    set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.5)
    asyncio.run(run_until(runner, telemetry, run, steer, limit=60))
    assert run.transitions()[:4] == [
        Transition.PENDING,
        Transition.CLEARED,
        Transition.PENDING,
        Transition.FIRING,
    ]
    cleared = run.first(Transition.CLEARED)
    assert cleared is not None
    second_pending = run.first(Transition.PENDING, after=cleared)
    firing = run.first(Transition.FIRING)
    assert second_pending is not None
    assert firing is not None
    assert firing - second_pending >= 6.0


def test_p99_latency_rule_fires(scraped: Prometheus, sample_app: SampleApp) -> None:
    """A histogram_quantile p99 rule fires when the workload's latency is 0.8s against 0.5s."""
    latency = rule(
        name="p99",
        expr=(
            "histogram_quantile(0.99, sum by (namespace, deployment, le)"
            " (rate(http_request_duration_seconds_bucket[5s])))"
        ),
        threshold=0.5,
        **{"for": "2s"},
    )
    runner, telemetry = runner_for(scraped, latency)
    run = Run()
    set_traffic(sample_app.url, "shop", "web", rps=100, latency_seconds=0.8)
    asyncio.run(run_until(runner, telemetry, run, lambda: run.first(Transition.FIRING), limit=40))
    fired = [v for _, v in run.seen if v.transition is Transition.FIRING]
    assert fired, run.transitions()
    assert fired[0].value is not None
    assert 0.5 < fired[0].value <= 1.0


def test_prometheus_outage_holds_state_and_logs_once(sample_app: SampleApp) -> None:
    """Prometheus down mid-incident: nothing fires, state is kept, one log line, then recovery."""
    set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.3)
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    with Prometheus(scrape_targets=[sample_app.address]) as prometheus:
        prometheus.wait_until_scraped()
        # A 30s window keeps values across a few seconds of outage.
        runner, _ = runner_for(prometheus, rule(expr=ratio("30s"), **{"for": "8s"}))

        def tick() -> Verdict | None:
            verdicts = [v for v in asyncio.run(runner.run()) if v.target == WEB]
            return verdicts[0] if verdicts else None

        deadline = time.monotonic() + 30
        first = tick()
        while (
            first is None or first.state is not RuleState.PENDING
        ) and time.monotonic() < deadline:
            time.sleep(1)
            first = tick()
        assert first is not None
        assert first.state is RuleState.PENDING

        prometheus.terminate()
        during = []
        for _ in range(5):
            time.sleep(1)
            during.append(tick())
        assert all(v is not None and v.state is RuleState.PENDING for v in during)
        assert all(v is not None and v.error_code == "ERR_PROM_UNREACHABLE" for v in during)

        prometheus.start()
        after: list[Verdict | None] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after.append(tick())
            if after[-1] is not None and after[-1].state is RuleState.FIRING:
                break
            time.sleep(1)
    assert after[-1] is not None
    assert after[-1].state is RuleState.FIRING  # the hold kept counting through the outage
    assert all(v is None or v.reason is not Reason.NO_DATA for v in after)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    failed = [e for e in events if e["event"] == "prometheus_query_failed"]
    assert len(failed) == 1
    assert failed[0]["code"] == "ERR_PROM_UNREACHABLE"
    recovered = [e for e in events if e["event"] == "prometheus_query_recovered"]
    assert len(recovered) == 1


def test_zero_and_low_traffic_never_fire_with_min_traffic(
    scraped: Prometheus, sample_app: SampleApp
) -> None:
    """A quiet Deployment with all requests failing, or none at all, does not fire."""
    set_traffic(sample_app.url, "shop", "quiet", rps=0.5, error_ratio=1.0)
    set_traffic(sample_app.url, "shop", "idle", rps=0.0)
    guarded = rule(
        min_traffic={
            "expr": "sum by (namespace, deployment) (rate(http_requests_total[5s]))",
            "op": ">=",
            "threshold": 1,
        },
        **{"for": "0s"},
    )
    runner, _ = runner_for(scraped, guarded)
    seen: list[Verdict] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen += asyncio.run(runner.run())
        quiet = [v for v in seen if v.target == Target("shop", "quiet")]
        if sum(v.reason is Reason.LOW_TRAFFIC for v in quiet) >= 5:
            break
        time.sleep(1)
    quiet = [v for v in seen if v.target == Target("shop", "quiet")]
    assert sum(v.reason is Reason.LOW_TRAFFIC and (v.value or 0) > 0.05 for v in quiet) >= 5
    idle = [v for v in seen if v.target == Target("shop", "idle")]
    assert all(v.reason is Reason.NO_DATA for v in idle)
    assert not [v for v in seen if v.target != WEB and v.state is not RuleState.INACTIVE]


def test_syntax_errors_are_found_at_start_up(prometheus: Prometheus) -> None:
    """A rule with a PromQL typo is named at start-up with Prometheus's own parse error."""
    source = PrometheusSource(PrometheusSettings(url=prometheus.url))
    good = rule()
    bad = rule(name="typo", expr="sum(rate(http_requests_total[5m])")
    problems = asyncio.run(check_rule_syntax(source, [good, bad]))
    assert len(problems) == 1
    assert problems[0].startswith("rule 'typo' expr: bad_data:")
    assert "parse error" in problems[0]
    assert problems[0].endswith("[ERR_PROM_BAD_QUERY]")


def test_case_9_a_restart_keeps_the_breach_start_from_history(
    scraped: Prometheus, sample_app: SampleApp
) -> None:
    """Case 9: a replica that starts (or becomes leader) while a breach is pending seeds its
    hold windows from the last `for` of history: the breach keeps its start, and it fires
    when `for` has passed since then, not since the restart."""
    set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.5)
    errors_began = time.time()
    before, _ = runner_for(scraped, rule(**{"for": "30s"}))

    async def breaching() -> bool:
        return any(v.state is RuleState.PENDING for v in await before.run())

    deadline = time.monotonic() + 20
    while not asyncio.run(breaching()):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    time.sleep(6)  # the process restarts six seconds into the hold window
    after, _ = runner_for(scraped, rule(**{"for": "30s"}))
    assert asyncio.run(after.seed()) == 1
    (verdict,) = [v for v in asyncio.run(after.run()) if v.target == WEB]
    assert verdict.state is RuleState.PENDING
    assert verdict.began is not None
    assert verdict.began.timestamp() <= time.time() - 5
    assert verdict.began.timestamp() >= errors_began - 2


def test_a_breach_is_dated_from_the_scrape_that_crossed_and_acted_on_when_for_is_up(
    scraped: Prometheus, sample_app: SampleApp
) -> None:
    """At a 2s interval, the hold starts at the first scrape whose ratio crosses the
    threshold (within the onset step of 0.1 s), and the rule fires `for` after it, between
    ticks if need be: as soon as any evaluator could, not up to an interval later."""
    runner, telemetry = runner_for(scraped, rule(interval="2s", **{"for": "4s"}))
    run = Run()
    arrivals: dict[Transition, float] = {}
    sink = run.sink

    async def timed(verdicts: list[Verdict], at: Instant) -> None:
        for verdict in verdicts:
            if verdict.transition is not None:
                arrivals.setdefault(verdict.transition, time.time())
        await sink(verdicts, at)

    run.sink = timed  # type: ignore[method-assign]
    began = time.time()
    set_traffic(sample_app.url, "shop", "web", rps=100, error_ratio=0.3)
    asyncio.run(run_until(runner, telemetry, run, lambda: run.first(Transition.FIRING), limit=40))
    pending = next(v for _, v in run.seen if v.transition is Transition.PENDING)
    firing = next(v for _, v in run.seen if v.transition is Transition.FIRING)
    crossed = scraped.first_crossing(
        ratio(),
        0.05,
        labels={"namespace": "shop", "deployment": "web"},
        start=began - 1,
        end=firing.since.wall.timestamp(),
    )
    assert crossed is not None
    onset = pending.since.wall.timestamp()
    assert crossed - 0.05 <= onset <= crossed + 0.1 + 0.01, (crossed, onset)
    assert firing.since.monotonic - pending.since.monotonic == pytest.approx(4.0, abs=1e-3)
    assert arrivals[Transition.FIRING] - (crossed + 4.0) < 0.5  # the floor, plus the step
