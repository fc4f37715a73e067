"""When an Alertmanager alert's breach began: its rule's pending start, from Prometheus."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime

from rollbackd.errors import PrometheusError
from rollbackd.model import RuleState, Target, Verdict
from rollbackd.ports import MetricsSource
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import AlertmanagerSettings

log = get_logger(__name__)


async def with_breach_starts(
    verdicts: list[Verdict], *, source: MetricsSource, settings: AlertmanagerSettings
) -> list[Verdict]:
    """Alertmanager verdicts dated from ``ALERTS_FOR_STATE`` (the alert's activeAt).

    ``startsAt`` is when the alert began *firing*; the breach began its rule's ``for``
    earlier. Prometheus's ``ALERTS_FOR_STATE`` holds the pending start; when it cannot be
    read, the trigger's ``pending_for`` (already applied) stands, else the start is unknown.
    """
    names = {
        v.labels.get("alertname", "")
        for v in verdicts
        if v.source == "alertmanager" and v.state is RuleState.FIRING
    }
    starts: dict[tuple[str, Target], datetime] = {}
    for name in sorted(n for n in names if n):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        labels = settings.target_labels
        expr = (
            f"min by ({labels.namespace}, {labels.deployment}) "
            f'(ALERTS_FOR_STATE{{alertname="{escaped}"}})'
        )
        try:
            result = await source.query(expr, target_labels=labels)
        except PrometheusError as exc:
            log.warning("breach_start_unknown", alertname=name, code=exc.code)
            continue
        for target, value in result.values.items():
            with contextlib.suppress(ValueError, OverflowError, OSError):
                starts[(name, target)] = datetime.fromtimestamp(value, UTC)
    if not starts:
        return verdicts
    dated = []
    for verdict in verdicts:
        began = starts.get((verdict.labels.get("alertname", ""), verdict.target))
        if began is not None and verdict.state is RuleState.FIRING:
            dated.append(replace(verdict, began=min(began, verdict.since.wall)))
        else:
            dated.append(verdict)
    return dated
