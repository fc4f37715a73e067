"""Issue 13's cases at the stages around the incident core: change times, templates, no
data, reloads and the manual override. Each test failed on the code before its fix."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rollbackd.incidents.decide import Choice, decide
from rollbackd.model import DecisionReason, Event, QueryResult, RuleState
from rollbackd.notifications.render import Renderer, sample_incident, template_problems
from rollbackd.rules.evaluate import RuleEvaluator
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import KubernetesSettings, RollbackSettings, TargetLabels
from rollbackd.state.annotations import DeploymentState
from rollbackd.state.changes import ChangeTimes
from rollbackd.testing.clock import FakeClock
from tests.unit.test_cli import rollbackd
from tests.unit.test_decide import situation
from tests.unit.test_evaluate import WEB, rule
from tests.unit.test_settings import EXAMPLE, EXAMPLE_ENV

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def deployment(image: str, generation: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "web", "generation": generation},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
    }


def test_case_5_a_replayed_watch_does_not_re_date_a_change() -> None:
    """Case 5: a watch reconnect replays old events; the change at 12:00 keeps its time
    instead of becoming "now", and a relist (first sight) dates nothing."""
    times = ChangeTimes()
    v1, v2 = deployment("web:1", 1), deployment("web:2", 2)
    times.observe(None, v1, now=T0 - timedelta(hours=1))  # the first LIST
    assert times.changed_at(v1) is None  # first sight: unknown, never a reason to act
    times.observe(v1, v2, now=T0)
    later = T0 + timedelta(minutes=10)
    times.observe(None, v1, now=later)  # replayed: older generation
    times.observe(v1, v2, now=later)  # replayed change
    times.observe(v2, v2, now=later)  # a status update
    assert times.changed_at(v2) == T0
    v3 = deployment("web:1", 3)  # an old template put back: a real, new change
    times.observe(v2, v3, now=later)
    assert times.changed_at(v3) == later


def test_case_6_a_template_that_fails_to_render_falls_back(tmp_path: Path) -> None:
    """Case 6: an override that parses but fails to render ({{ i.owner_team }}) still gives
    a message, with the facts and ERR_NOTIFY_TEMPLATE, instead of raising."""
    (tmp_path / "breach.en.md.j2").write_text("### {{ i.owner_team }} broke {{ i.target }}\n")
    message = Renderer("en", str(tmp_path)).render(sample_incident(Event.BREACH))
    assert "ERR_NOTIFY_TEMPLATE" in message.problem
    assert "rb-20261127-153052-7f3a" in message.text
    assert "ERR_NOTIFY_TEMPLATE" in message.text
    assert "shop/web" in message.title


def test_case_6_check_config_renders_every_template(tmp_path: Path) -> None:
    """Case 6: check-config renders every template with a sample incident and reports the
    failing one with its file and line, exit 2."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "recovered.en.md.j2").write_text("### ok\n\nowner: {{ i.owner_team }}\n")
    config = tmp_path / "config.yaml"
    text = EXAMPLE.read_text().replace("language: zh", "language: en")
    config.write_text(text.replace('templates_dir: ""', f"templates_dir: {templates}"))
    assert template_problems("en", str(templates))[0][:2] == (
        str(templates / "recovered.en.md.j2"),
        3,
    )
    result = rollbackd("check-config", str(config), env=EXAMPLE_ENV)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{templates / 'recovered.en.md.j2'}:3: notifications.templates_dir:" in result.stderr
    assert "owner_team" in result.stderr
    assert "[ERR_NOTIFY_TEMPLATE]" in result.stderr


def test_built_in_templates_all_render() -> None:
    """Every built-in template renders with a full sample incident, in both languages."""
    assert template_problems("en", "") == []
    assert template_problems("zh", "") == []


def test_check_config_warns_of_triggers_without_pending_for(tmp_path: Path) -> None:
    """A rollback trigger without pending_for is valid but only notifies when Prometheus
    cannot date the breach: check-config warns with the trigger's line, and exits 0."""
    config = tmp_path / "config.yaml"
    config.write_text(EXAMPLE.read_text().replace("      pending_for: 2m", "      # none"))
    result = rollbackd("check-config", str(config), env=EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    assert ": alertmanager.triggers[0]: warning: no pending_for" in result.stderr
    line = int(result.stderr.split(":")[1])
    assert "- match: {alertname: HighErrorRate}" in config.read_text().splitlines()[line - 1]


def test_case_8_a_vanished_series_breaches_under_on_no_data_breach() -> None:
    """Case 8: a crash-looping release stops emitting metrics: with on_no_data: breach the
    managed workload that the rule saw before goes pending, then fires."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule(on_no_data="breach", **{"for": "4s"}))
    evaluator.evaluate(QueryResult({WEB: 0.0}), now=clock.now(), managed=lambda t: True)
    states = []
    for _ in range(3):
        clock.advance(2)
        verdicts = evaluator.evaluate(QueryResult({}), now=clock.now(), managed=lambda t: True)
        states.append([v.state for v in verdicts if v.target == WEB])
    assert states == [[RuleState.PENDING], [RuleState.PENDING], [RuleState.FIRING]]


def test_case_8_a_deleted_workload_is_forgotten() -> None:
    """Case 8: a workload no longer managed (deleted, opted out) whose series vanished
    is dropped, not judged breaching forever."""
    clock = FakeClock()
    evaluator = RuleEvaluator(rule(on_no_data="breach"))
    evaluator.evaluate(QueryResult({WEB: 0.0}), now=clock.now(), managed=lambda t: True)
    verdicts = evaluator.evaluate(QueryResult({}), now=clock.now(), managed=lambda t: False)
    assert verdicts == []


class _Source:
    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        return QueryResult({WEB: 0.5})

    async def query_range(
        self, expr: str, *, target_labels: TargetLabels, start: float, end: float, step: float
    ) -> list[tuple[float, QueryResult]]:
        return []  # no history: a hold starts at the tick that saw it

    async def check_syntax(self, expr: str) -> bool:
        return True


def test_case_9_sighup_keeps_the_hold_state_of_unchanged_rules() -> None:
    """Case 9: a reload in the middle of a hold window keeps the breach's start for rules it
    did not change (and starts afresh for a rule it changed)."""
    clock = FakeClock()
    kept, changed = rule(name="errors"), rule(name="latency")
    first = RuleRunner([kept, changed], source=_Source(), clock=clock, telemetry=Telemetry())
    began = asyncio.run(first.run())[0].began
    clock.advance(6)
    reloaded = [kept, rule(name="latency", threshold=0.1)]
    second = RuleRunner(
        reloaded, source=_Source(), clock=clock, telemetry=Telemetry(), previous=first
    )
    verdicts = {v.rule: v for v in asyncio.run(second.run())}
    assert verdicts["errors"].began == began
    assert verdicts["latency"].began == clock.now().wall


def test_case_20_force_passes_the_cooldown_only() -> None:
    """Case 20: a manual rollback within the cooldown is refused without --force and
    allowed with it; the opt-out still holds."""
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    cooling = situation(state=DeploymentState(cooldown_until=now + timedelta(minutes=5)))
    options: dict[str, Any] = {
        "breach_since": now,
        "action": "rollback",
        "kube": KubernetesSettings(),
        "rollback": RollbackSettings(),
        "budget_used": 0,
        "now": now,
        "manual": True,
    }
    assert decide(cooling, **options).reason is DecisionReason.COOLDOWN
    assert decide(cooling, **options, force=True).action is Choice.ROLLBACK
    opted_out = situation(
        annotations={"rollbackd.io/disabled": "true"},
        state=DeploymentState(cooldown_until=now + timedelta(minutes=5)),
    )
    assert decide(opted_out, **options, force=True).reason is DecisionReason.OPTED_OUT
