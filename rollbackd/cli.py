"""The ``rollbackd`` command line.

Exit codes follow CONTRACT.md: 0 success, 1 a runtime failure, 2 a bad configuration or
bad usage. Errors are one line each, with their ``ERR_`` code; never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys

import click

from rollbackd import __version__
from rollbackd.errors import ConfigError
from rollbackd.model import Verdict
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.evaluation import RuleRunner, check_rule_syntax
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import Settings, load_settings, redacted_yaml
from rollbackd.signals.prometheus import PrometheusSource

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2

config_option = click.option(
    "--config",
    "config_file",
    envvar="ROLLBACKD_CONFIG",
    required=True,
    type=click.Path(dir_okay=False),
    help="configuration file (or $ROLLBACKD_CONFIG)",
)


def load_or_exit(file: str) -> Settings:
    """Load the configuration, or print every problem and exit with status 2."""
    try:
        return load_settings(file)
    except ConfigError as exc:
        for line in exc.lines():
            click.echo(line, err=True)
        sys.exit(EXIT_BAD_CONFIG)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rollbackd")
def main() -> None:
    """rollbackd undoes a bad Deployment change when its metrics breach, and says why."""


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--print", "print_", is_flag=True, help="show the effective configuration, redacted")
def check_config(file: str, print_: bool) -> None:
    """Validate FILE offline; print every problem as FILE:LINE: key.path: message."""
    settings = load_or_exit(file)
    if print_:
        click.echo(redacted_yaml(settings), nl=False)
    else:
        rules = len(settings.rules)
        robots = len(settings.notifications.robots)
        click.echo(f"{file}: valid ({rules} rules, {robots} robots)")


@main.command("eval")
@config_option
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def eval_(config_file: str, output: str) -> None:
    """Evaluate every rule once against Prometheus: one row per (rule, target)."""
    settings = load_or_exit(config_file)
    configure_logging(
        level="warning", fmt="console", stream=sys.stderr, secrets=settings.secret_values()
    )
    rows, failed = asyncio.run(evaluate_once(settings))
    if output == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        click.echo(render_table(rows, EVAL_COLUMNS))
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


EVAL_COLUMNS = (
    "rule",
    "namespace",
    "deployment",
    "value",
    "op",
    "threshold",
    "breaching",
    "reason",
)


def _number(value: float | None) -> float | str | None:
    """JSON has no NaN or infinities: write them as Prometheus does."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def _verdict_row(verdict: Verdict) -> dict[str, object]:
    return {
        "rule": verdict.rule,
        "namespace": verdict.target.namespace,
        "deployment": verdict.target.deployment,
        "value": _number(verdict.value),
        "op": verdict.op,
        "threshold": verdict.threshold,
        "breaching": verdict.breaching,
        "reason": str(verdict.reason) or None,
    }


async def evaluate_once(settings: Settings) -> tuple[list[dict[str, object]], bool]:
    """Rows for ``rollbackd eval``, and whether any query failed."""
    source = PrometheusSource(settings.prometheus)
    try:
        problems = await check_rule_syntax(source, settings.rules)
        runner = RuleRunner(
            settings.rules, source=source, clock=SystemClock(), telemetry=Telemetry()
        )
        verdicts = await runner.run()
    finally:
        source.close()
    rows = [_verdict_row(v) for v in sorted(verdicts, key=lambda v: (v.rule, v.target))]
    judged = {verdict.rule for verdict in verdicts}
    for rule in settings.rules:
        failure = runner.failures.get(rule.name)
        if failure is None and rule.name in judged:
            continue
        # A rule without rows would be invisible: say why it has none.
        row = dict.fromkeys(EVAL_COLUMNS)
        row.update(rule=rule.name, op=rule.op, threshold=rule.threshold, reason="no_series")
        if failure is not None:
            row.update(reason=failure.code, error=failure.message)
        rows.append(row)
    for problem in problems:
        click.echo(problem, err=True)
    return rows, bool(runner.failures or problems)


def render_table(rows: list[dict[str, object]], columns: tuple[str, ...]) -> str:
    """A plain aligned table; errors are appended after the reason."""

    def cell(row: dict[str, object], column: str) -> str:
        value = row.get(column)
        if column == "reason" and row.get("error"):
            return f"{value}: {row['error']}"
        if isinstance(value, float):
            return f"{value:.6g}"
        return "-" if value is None else str(value)

    table = [list(columns)] + [[cell(row, c) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns) - 1)]
    return "\n".join(
        "  ".join([*(v.ljust(w) for v, w in zip(line, widths, strict=False)), line[-1]]).rstrip()
        for line in table
    )
