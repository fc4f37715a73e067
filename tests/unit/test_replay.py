"""The pure parts of `rollbackd replay`: times, the recorded columns and their chunks, the
past cluster built from captured objects, and the report."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.errors import PrometheusUnreachable, ReplayBadArguments
from rollbackd.incidents.decide import decide
from rollbackd.incidents.lifecycle import StartRollback
from rollbackd.model import DecisionReason, QueryResult, Target
from rollbackd.replay.past import PastCluster
from rollbackd.replay.recorded import MAX_POINTS, Recorded, grid, ticks
from rollbackd.replay.report import Breach, Report, dumps, to_table
from rollbackd.replay.run import replay
from rollbackd.replay.times import parse_span, parse_when
from rollbackd.settings import KubernetesSettings, RollbackSettings, Settings, TargetLabels
from tests.kube_fixtures import items, load

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
WEB = Target("demo", "web")
REV1, REV2, REV3 = "7c564bb85c", "784d9f6d74", "54d9bccb47"
# The captured releases: nginx:1.0 at 03:34:15, 2.0 at 03:34:20, 3.0 at 03:34:25.
T1 = datetime(2026, 11, 27, 3, 34, 15, tzinfo=UTC)
T3 = datetime(2026, 11, 27, 3, 34, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-24h", NOW - timedelta(hours=24)),
        ("now-90m", NOW - timedelta(minutes=90)),
        ("-1h30m", NOW - timedelta(minutes=90)),
        ("2026-11-30T10:00:00Z", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("2026-11-30T18:00:00+08:00", datetime(2026, 11, 30, 10, tzinfo=UTC)),
    ],
)
def test_times_are_rfc3339_or_relative_to_now(text: str, expected: datetime) -> None:
    """--from and --to take RFC 3339 (any offset), now, and now less a duration."""
    assert parse_when(text, now=NOW, name="--from") == expected


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("yesterday", "now", "is not a time"),
        ("2026-11-30T10:00:00", "now", "has no timezone"),
        ("-1x", "now", "invalid duration"),
        ("-1h", "-2h", "is not before"),
        ("-1h", "2026-12-02T00:00:00Z", "in the future"),
    ],
)
def test_a_bad_span_is_refused_with_its_code(start: str, end: str, says: str) -> None:
    """A time that is not one, a backwards span or one reaching the future is refused
    with ERR_REPLAY_BAD_ARGUMENTS and says why."""
    with pytest.raises(ReplayBadArguments, match=says) as raised:
        parse_span(start, end, now=NOW)
    assert raised.value.code == "ERR_REPLAY_BAD_ARGUMENTS"


def test_the_grid_is_in_whole_milliseconds_and_ticks_merge_rules() -> None:
    """Evaluation times are computed as Prometheus computes a range query's, and rules
    due at the same time are evaluated in one tick."""
    assert grid(0.1, 0.4, 0.1) == [0.1, 0.2, 0.3, 0.4]
    assert grid(10.0, 70.0, 30.0) == [10.0, 40.0, 70.0]
    merged = ticks([("a", [0.0, 15.0, 30.0]), ("b", [0.0, 30.0])])
    assert merged == [(0.0, ["a", "b"]), (15.0, ["a"]), (30.0, ["a", "b"])]


class Ranges:
    """A source answering every range query with nothing, and recording the asks."""

    def __init__(self, failing: bool = False) -> None:
        self.asked: list[tuple[str, float, float, float]] = []
        self.failing = failing

    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        raise AssertionError("a replay asks for ranges only")

    async def query_range(
        self, expr: str, *, target_labels: TargetLabels, start: float, end: float, step: float
    ) -> list[tuple[float, QueryResult]]:
        self.asked.append((expr, start, end, step))
        if self.failing:
            raise PrometheusUnreachable("connection refused")
        return []

    async def check_syntax(self, expr: str) -> bool:
        return True


def settings(**extra: Any) -> Settings:
    return Settings.model_validate(
        {
            "rules": [
                {"name": "fast", "expr": "fast", "threshold": 1, "interval": "15s"},
                {"name": "slow", "expr": "slow", "threshold": 1, "interval": "1m"},
            ],
            **extra,
        }
    )


def test_a_long_span_is_read_in_contiguous_chunks_under_the_point_limit() -> None:
    """A week is read in chunks of far fewer than 11,000 points per series, each rule at
    its own interval, covering every evaluation time once."""
    source = Ranges()
    start = datetime(2026, 11, 24, tzinfo=UTC)
    end = start + timedelta(days=7)
    report = asyncio.run(replay(settings(), source=source, past=None, start=start, end=end))
    for rule, step in (("fast", 15.0), ("slow", 60.0)):
        asks = [(s, e) for expr, s, e, st in source.asked if expr == rule and st == step]
        assert asks
        assert all((e - s) / step + 1 <= MAX_POINTS for s, e in asks)
        covered = [t for s, e in asks for t in grid(s, e, step)]
        assert covered == grid(start.timestamp(), end.timestamp(), step)
    # Nothing at all came back: the whole week is one gap of each rule, not "healthy".
    assert [(g.rule, g.kind) for g in report.gaps] == [("fast", "no_data"), ("slow", "no_data")]
    assert report.gaps[0].start == start
    assert report.gaps[0].end == end


def test_a_failed_history_is_a_gap_with_its_code_judged_by_on_error() -> None:
    """A range that cannot be read is reported with its code, and each of its times is
    answered with the failure (so `on_error` judges it, as live)."""
    source = Ranges(failing=True)
    start = datetime(2026, 11, 30, tzinfo=UTC)
    report = asyncio.run(
        replay(settings(), source=source, past=None, start=start, end=start + timedelta(hours=1))
    )
    assert {(g.kind, g.code) for g in report.gaps} == {("error", "ERR_PROM_UNREACHABLE")}
    assert report.failed
    recorded = Recorded(source)
    asyncio.run(recorded.record("fast", target_labels=TargetLabels(), start=0, end=60, step=15))
    assert isinstance(recorded.column("fast", 15), PrometheusUnreachable)


def past(**rollback: Any) -> PastCluster:
    return PastCluster(
        [load("deployment-rev3.json")],
        items("replicasets-rev3.json"),
        rollback=RollbackSettings.model_validate(rollback),
        installation="rollbackd/rollbackd",
    )


def test_the_past_cluster_shows_the_template_current_at_each_moment() -> None:
    """Before nginx:3.0 was released the Deployment held nginx:2.0 (revision 2, changed
    at its ReplicaSet's creation); before the first release it was not there at all."""
    cluster = past()
    assert cluster.situation(WEB, T1 - timedelta(seconds=1)) is None
    between = cluster.situation(WEB, T3 - timedelta(seconds=1))
    assert between is not None
    assert between.current_hash == REV2
    assert between.changed_at == T3 - timedelta(seconds=5)
    assert between.undo is not None
    assert (between.undo.from_revision, between.undo.to_revision) == (2, 1)  # type: ignore[union-attr]
    after = cluster.situation(WEB, T3 + timedelta(minutes=1))
    assert after is not None
    assert (after.current_hash, after.changed_at) == (REV3, T3)
    releases = cluster.releases(WEB, T1, T3)
    assert [(r.revision, r.images) for r in releases] == [
        (1, ("nginx:1.0",)),
        (2, ("nginx:2.0",)),
        (3, ("nginx:3.0",)),
    ]


def test_a_replayed_rollback_is_remembered_and_never_undone() -> None:
    """The replay's own rollback makes revision 2's template current again as revision
    4, marks 3.0 bad and starts the cooldown; a later breach finds rollbackd's own undo
    and would not undo it."""
    cluster = past()
    when = T3 + timedelta(minutes=2)
    start = StartRollback(WEB, "rb-1", "errors", 0.3, ">", 0.05, False, REV3)
    result = cluster.roll_back(start, when)
    assert (result.outcome, result.written) == ("succeeded", True)
    assert result.undo is not None
    assert (result.undo.from_revision, result.undo.to_revision) == (3, 2)
    assert (WEB, result.at) in cluster.recent()
    later = cluster.situation(WEB, when + timedelta(minutes=1))
    assert later is not None
    assert later.current_hash == REV2
    assert later.changed_at == when
    assert REV3 in later.state.bad_templates
    assert later.state.cooling_down(when + timedelta(minutes=1))
    decision = decide(
        later,
        breach_since=when + timedelta(seconds=30),
        action="rollback",
        kube=KubernetesSettings(selector="app=web"),
        rollback=RollbackSettings(),
        budget_used=0,
        now=when + timedelta(minutes=1),
    )
    assert decision.reason is DecisionReason.ALREADY_ROLLED_BACK


def test_today_s_memory_on_the_objects_is_not_taken_for_the_past() -> None:
    """A cooldown and records written today do not stand in the way of a decision in the
    past: the replay keeps its own memory; the operator's opt-out stays."""
    deployment = load("deployment-rev3.json")
    deployment["metadata"].setdefault("annotations", {}).update(
        {
            "rollbackd.io/cooldown-until": "2099-01-01T00:00:00Z",
            "rollbackd.io/bad-templates": REV2,
        }
    )
    cluster = PastCluster(
        [deployment],
        items("replicasets-rev3.json"),
        rollback=RollbackSettings(),
        installation="rollbackd/rollbackd",
    )
    situation = cluster.situation(WEB, T3 + timedelta(minutes=1))
    assert situation is not None
    assert not situation.state.cooling_down(T3 + timedelta(minutes=1))
    assert situation.state.bad_templates == ()


def test_the_report_has_no_nan_and_says_when_it_knows_no_cluster() -> None:
    """JSON never holds NaN (a peak that is not a number is null), and a replay without
    the cluster says so on every breach line."""
    breach = Breach(
        rule="errors",
        target=WEB,
        op=">",
        threshold=0.05,
        began=NOW,
        fired=NOW + timedelta(minutes=2),
        ended=None,
        peak=math.nan,
    )
    report = Report(
        start=NOW - timedelta(hours=1),
        end=NOW + timedelta(hours=1),
        rules=["errors"],
        cluster=False,
        breaches=[breach],
        decisions=[],
        flaps=[],
        gaps=[],
    )
    data = json.loads(dumps(report))
    assert data["breaches"][0]["peak"] is None
    assert data["breaches"][0]["to"] is None
    table = to_table(report)
    assert "(firing)" in table
    assert "no cluster history: breaches only" in table
