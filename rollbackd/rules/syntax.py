"""Whether the query backend parses each rule's PromQL, checked once at start and reload."""

from __future__ import annotations

from collections.abc import Sequence

from rollbackd.errors import PrometheusBadQuery, PrometheusError
from rollbackd.ports import MetricsSource
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import RuleSettings

log = get_logger(__name__)


async def check_rule_syntax(source: MetricsSource, rules: Sequence[RuleSettings]) -> list[str]:
    """Every rule whose PromQL the backend refuses to parse, with the backend's message.

    When the backend cannot be reached the check is skipped (logged): start-up must not
    depend on it being up, and the first tick reports the outage anyway. Where it has no
    syntax check (VictoriaMetrics, Prometheus before 2.38) that is said once and start-up
    goes on: the first tick names a rule the backend refuses.
    """
    problems: list[str] = []
    for rule in rules:
        exprs = {"expr": rule.expr}
        if rule.min_traffic is not None:
            exprs["min_traffic.expr"] = rule.min_traffic.expr
        for key, expr in exprs.items():
            try:
                checked = await source.check_syntax(expr)
            except PrometheusBadQuery as exc:
                problems.append(f"rule {rule.name!r} {key}: {exc.message} [{exc.code}]")
                continue
            except PrometheusError as exc:
                log.warning("rule_syntax_check_skipped", code=exc.code, error=exc.message)
                return problems
            if not checked:
                log.warning(
                    "rule_syntax_check_unavailable",
                    why="the query backend has no /api/v1/format_query; rules are checked"
                    " by their first evaluation",
                )
                return problems
    return problems
