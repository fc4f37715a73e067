"""`rollbackd eval` against the real Prometheus: one row per (rule, target)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rollbackd.testing.app import SampleApp, set_traffic
from rollbackd.testing.services import Prometheus, free_port

pytestmark = pytest.mark.integration

RULES = """\
rules:
  - name: errors
    expr: >-
      sum by (namespace, deployment) (rate(http_requests_total{code="500"}[5s]))
      / sum by (namespace, deployment) (rate(http_requests_total[5s]))
    threshold: 0.05
    min_traffic:
      expr: sum by (namespace, deployment) (rate(http_requests_total[5s]))
      threshold: 1
  - name: empty
    expr: absent_metric_for_rollbackd
    threshold: 1
"""


def eval_command(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(f"prometheus: {{url: '{url}', timeout: 2s}}\n" + textwrap.dedent(RULES))
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "eval", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_eval_json_lists_each_target(
    prometheus: Prometheus, sample_app: SampleApp, tmp_path: Path
) -> None:
    """An operator sees every Deployment's value, whether it breaches, and why not."""
    set_traffic(sample_app.url, "shop", "web", rps=50, error_ratio=0.3)
    set_traffic(sample_app.url, "shop", "quiet", rps=0.2, error_ratio=1.0)
    prometheus.wait_until_scraped()
    prometheus_rows: list[dict[str, object]] = []
    for _ in range(20):
        result = eval_command(tmp_path, prometheus.url, "--output", "json")
        assert result.returncode == 0, result.stderr
        prometheus_rows = json.loads(result.stdout)
        if len([r for r in prometheus_rows if r["rule"] == "errors"]) == 2:
            break
    rows = {(r["rule"], r["deployment"]): r for r in prometheus_rows}
    web = rows[("errors", "web")]
    assert web["namespace"] == "shop"
    assert web["op"] == ">"
    assert web["threshold"] == 0.05
    assert web["breaching"] is True
    assert web["value"] == pytest.approx(0.3, abs=0.05)
    assert rows[("errors", "quiet")]["reason"] == "low_traffic"
    assert rows[("errors", "quiet")]["breaching"] is False
    assert rows[("empty", None)]["reason"] == "no_series"

    table = eval_command(tmp_path, prometheus.url)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "rule",
        "namespace",
        "deployment",
        "value",
        "op",
        "threshold",
        "breaching",
        "reason",
        "owner",
    ]


def test_eval_exits_1_when_prometheus_is_down(tmp_path: Path) -> None:
    """No Prometheus: each rule's row carries ERR_PROM_UNREACHABLE and the exit status is 1."""
    result = eval_command(tmp_path, f"http://127.0.0.1:{free_port()}", "--output", "json")
    assert result.returncode == 1
    rows = json.loads(result.stdout)
    assert {row["reason"] for row in rows} == {"ERR_PROM_UNREACHABLE"}
    assert "Traceback" not in result.stderr
