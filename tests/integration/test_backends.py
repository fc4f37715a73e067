"""Prometheus-compatible backends for real: VictoriaMetrics answering `eval` as Prometheus
does, and a Mimir-style front end (a path prefix, a tenant header, partial answers) in
front of the real Prometheus."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rollbackd.model import Reason, RuleState, Target
from rollbackd.rules.syntax import check_rule_syntax
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import PrometheusSettings, RuleSettings
from rollbackd.signals.prometheus import PrometheusSource
from rollbackd.testing.app import SampleApp, set_traffic
from rollbackd.testing.backend_proxy import TENANT_HEADER, BackendProxy
from rollbackd.testing.sandbox import RULE_EXPR, wait_until
from rollbackd.testing.services import (
    PROMETHEUS_BINARIES,
    VICTORIAMETRICS_BINARIES,
    Prometheus,
    VictoriaMetrics,
)
from tests.conftest import require_binary

pytestmark = pytest.mark.integration

TRAFFIC = "sum by (namespace, deployment) (rate(http_requests_total[5s]))"
RULES = f"""\
rules:
  - name: errors
    expr: '{RULE_EXPR}'
    threshold: 0.05
    min_traffic: {{expr: '{TRAFFIC}', threshold: 1}}
  - name: traffic
    expr: '{TRAFFIC}'
    op: "<"
    threshold: 0.5
"""
WEB, QUIET = Target("shop", "web"), Target("shop", "quiet")
TOLERANCE = {"errors": 0.02, "traffic": 2.5}
"""How far VictoriaMetrics's value may sit from Prometheus's for shop/web (50 requests a
second, 30 % failing), per rule: MetricsQL's ``rate`` takes the sample just before the
window too where Prometheus's extrapolates, and the two scrape at different instants; the
ratio lands within 0.02, the rate within 2.5 requests a second (5 %). shop/quiet (one
request in 5 s) is compared by verdict only: over a 5 s window its rate is one sample's
worth, and Prometheus's extrapolation moves it by tens of percent."""


@dataclass
class Backends:
    app: SampleApp
    prometheus: Prometheus
    victoria: VictoriaMetrics


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    """One sample app scraped every second by a real Prometheus and a real VictoriaMetrics,
    with shop/web failing 30 % of 50 requests a second and shop/quiet nearly idle."""
    require_binary(PROMETHEUS_BINARIES)
    require_binary(VICTORIAMETRICS_BINARIES)
    with SampleApp() as app:
        set_traffic(app.url, "shop", "web", rps=50, error_ratio=0.3)
        set_traffic(app.url, "shop", "quiet", rps=0.2, error_ratio=1.0)
        with (
            Prometheus(scrape_targets=[app.address]) as prometheus,
            VictoriaMetrics(scrape_targets=[app.address]) as victoria,
        ):
            prometheus.wait_until_scraped()
            victoria.wait_until_scraped()
            yield Backends(app, prometheus, victoria)


def eval_command(
    tmp_path: Path,
    prometheus: dict[str, Any],
    rules: str = RULES,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"prometheus": {"timeout": "3s", **prometheus}}) + "\n")
    config.write_text("prometheus: " + json.dumps({"timeout": "3s", **prometheus}) + "\n" + rules)
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "eval", "--config", str(config), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def values(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, Target], Any]:
    rows = json.loads(result.stdout)
    return {(r["rule"], Target(r["namespace"], r["deployment"])): r for r in rows if r["namespace"]}


def history_seconds(url: str) -> int:
    """How many one-second samples of the app the backend holds in its last 10 s."""
    query = urllib.parse.quote("count_over_time(up[10s])")
    with urllib.request.urlopen(f"{url}/api/v1/query?query={query}", timeout=5) as answer:  # noqa: S310
        result = json.load(answer)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def settled(tmp_path: Path, url: str) -> dict[tuple[str, Target], Any]:
    """eval's rows once the backend holds more than a 5 s window of samples (a rate over a
    window the series only began in is extrapolated to its start: too low) and both
    targets show in both rules."""
    assert wait_until(lambda: history_seconds(url) >= 8, 30, 0.5)
    rows: dict[tuple[str, Target], Any] = {}

    def full() -> bool:
        nonlocal rows
        result = eval_command(tmp_path, {"url": url})
        rows = values(result) if result.returncode == 0 else {}
        return len(rows) == 4 and all(row["value"] is not None for row in rows.values())

    assert wait_until(full, 30, 0.5), rows
    return rows


def test_eval_through_victoriametrics_equals_prometheus(backends: Backends, tmp_path: Path) -> None:
    """The same rules over the same workload: VictoriaMetrics gives every target the same
    verdict and values within the stated TOLERANCE of Prometheus's, and start-up says once
    that it cannot check syntax there instead of refusing to start."""
    from_victoria = settled(tmp_path, backends.victoria.url)
    from_prometheus = settled(tmp_path, backends.prometheus.url)
    assert from_victoria.keys() == from_prometheus.keys()
    for key, row in from_prometheus.items():
        other = from_victoria[key]
        assert (other["breaching"], other["reason"]) == (row["breaching"], row["reason"]), key
    for rule, tolerance in TOLERANCE.items():
        value = from_prometheus[(rule, WEB)]["value"]
        assert from_victoria[(rule, WEB)]["value"] == pytest.approx(value, abs=tolerance), rule
    assert from_victoria[("errors", WEB)]["breaching"] is True
    assert from_victoria[("errors", QUIET)]["reason"] == "low_traffic"

    result = eval_command(tmp_path, {"url": backends.victoria.url})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("rule_syntax_check_unavailable") == 1
    assert "Traceback" not in result.stderr


def test_a_syntax_error_names_the_rule_and_the_backends_message(
    backends: Backends, tmp_path: Path
) -> None:
    """A typo in a rule: Prometheus's format_query names it at start-up; VictoriaMetrics,
    which has no syntax check, names it at the first evaluation, with its own message and
    ERR_PROM_BAD_QUERY (before: ERR_PROM_BAD_RESPONSE)."""
    broken = (
        "rules:\n  - name: typo\n    expr: 'sum(rate(http_requests_total[5s]'\n    threshold: 1\n"
    )
    on_prometheus = eval_command(tmp_path, {"url": backends.prometheus.url}, broken)
    assert on_prometheus.returncode == 1
    assert "rule 'typo' expr:" in on_prometheus.stderr
    assert "ERR_PROM_BAD_QUERY" in on_prometheus.stderr

    on_victoria = eval_command(tmp_path, {"url": backends.victoria.url}, broken)
    assert on_victoria.returncode == 1
    (row,) = json.loads(on_victoria.stdout)
    assert (row["rule"], row["reason"]) == ("typo", "ERR_PROM_BAD_QUERY")
    assert "unparsed data" in row["error"] or "unexpected" in row["error"]
    assert "Traceback" not in on_victoria.stderr


@pytest.fixture
def front(backends: Backends) -> Iterator[BackendProxy]:
    """Mimir's shape in front of the real Prometheus: /prometheus, tenant `team-a`."""
    with BackendProxy(backends.prometheus.url, prefix="/prometheus", tenant="team-a") as proxy:
        yield proxy


def test_a_tenant_front_end_with_a_prefix_is_queried_everywhere(
    backends: Backends, front: BackendProxy, tmp_path: Path
) -> None:
    """With `url: …/prometheus`, `headers: {X-Scope-OrgID: ${TENANT}}` and `params`, every
    request rollbackd makes (the syntax check, the hold-state seed, each tick's queries)
    reaches the tenant under the prefix with the header and the parameters; eval shows the
    values; without the header the front end's 401 is a clear error, never a clean answer."""
    settled(tmp_path, backends.prometheus.url)
    configured = {
        "url": front.base_url,
        "headers": {TENANT_HEADER: "${TENANT}"},
        "params": {"dedup": "true", "extra_filters[]": ["{job='app'}"]},
    }
    result = eval_command(tmp_path, configured, env={"TENANT": "team-a"})
    assert result.returncode == 0, result.stderr
    rows = values(result)
    assert rows[("errors", WEB)]["value"] == pytest.approx(0.3, abs=0.05)
    assert rows[("errors", WEB)]["breaching"] is True

    settings = PrometheusSettings.model_validate(
        {**configured, "headers": {TENANT_HEADER: "team-a"}, "timeout": "3s"}
    )
    rule = RuleSettings.model_validate(
        {"name": "errors", "expr": RULE_EXPR, "threshold": 0.05, "for": "3s", "interval": "1s"}
    )
    source = PrometheusSource(settings)
    runner = RuleRunner([rule], source=source, clock=SystemClock(), telemetry=Telemetry())

    async def daemon_like() -> None:
        assert await check_rule_syntax(source, [rule]) == []
        assert await runner.seed() == 1
        await runner.run()

    asyncio.run(daemon_like())
    source.close()
    served = {seen.path: seen for seen in front.seen}
    for endpoint in ("format_query", "query_range", "query"):
        seen = served[f"/prometheus/api/v1/{endpoint}"]
        assert seen.headers[TENANT_HEADER] == "team-a", endpoint
        assert ("dedup", "true") in seen.params, endpoint
        assert ("extra_filters[]", "{job='app'}") in seen.params, endpoint

    refused = eval_command(tmp_path, {"url": front.base_url})
    assert refused.returncode == 1
    assert {row["reason"] for row in json.loads(refused.stdout)} == {"ERR_PROM_BAD_RESPONSE"}
    assert "HTTP 401" in refused.stdout
    assert "Traceback" not in refused.stderr


def test_warnings_make_an_answer_partial(
    backends: Backends, front: BackendProxy, tmp_path: Path
) -> None:
    """A front end that answers with `warnings` (a store down): eval shows the values with
    reason partial_response and exits 1; the daemon's evaluation never fires on it (on_error:
    hold), counts it as partial_response, logs it once for the whole episode, and uses the
    first whole answer at once (before: a partial answer was used as a clean one)."""
    settled(tmp_path, backends.prometheus.url)
    front.partial("store-b is unavailable")
    configured = {"url": front.base_url, "headers": {TENANT_HEADER: "team-a"}}
    result = eval_command(tmp_path, configured)
    assert result.returncode == 1
    web = values(result)[("errors", WEB)]
    assert web["reason"] == "partial_response"
    assert web["breaching"] is None
    assert web["value"] == pytest.approx(0.3, abs=0.05)
    assert "store-b is unavailable" in result.stderr

    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    telemetry = Telemetry()
    rule = RuleSettings.model_validate(
        {"name": "errors", "expr": RULE_EXPR, "threshold": 0.05, "for": "0s", "interval": "1s"}
    )
    source = PrometheusSource(PrometheusSettings.model_validate({**configured, "timeout": "3s"}))
    runner = RuleRunner([rule], source=source, clock=SystemClock(), telemetry=telemetry)
    partial = [asyncio.run(runner.run()) for _ in range(3)]
    front.partial()
    whole = {v.target: v for v in asyncio.run(runner.run())}[WEB]
    source.close()
    assert all(
        (v.state, v.reason) == (RuleState.INACTIVE, Reason.PARTIAL_RESPONSE)
        for batch in partial
        for v in batch
    )
    assert whole.state is RuleState.FIRING
    counted = {"rule": "errors", "result": "partial_response"}
    assert telemetry.value("rollbackd_rule_evaluations_total", counted) == 3
    logged = [json.loads(line) for line in out.getvalue().splitlines()]
    episodes = [line for line in logged if line["event"] == "prometheus_partial_response"]
    assert len(episodes) == 1
    assert episodes[0]["reason"] == "partial_response"
    assert episodes[0]["warnings"] == ["store-b is unavailable"]
    assert [line["event"] for line in logged].count("prometheus_query_recovered") == 1
