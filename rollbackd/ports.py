"""The small interfaces between rollbackd's pure stages and the outside world.

Each port is shaped by what rollbackd needs, not by an SDK. Edge modules implement them;
``rollbackd.testing`` and the tests provide fakes.
"""

from __future__ import annotations

from typing import Protocol

from rollbackd.model import Instant, QueryResult
from rollbackd.settings import TargetLabels


class Clock(Protocol):
    """Where time comes from: the system in production, a fake in tests."""

    def now(self) -> Instant: ...


class MetricsSource(Protocol):
    """Answers PromQL instant queries as values per target."""

    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        """One instant query; raises ``PrometheusError`` subclasses on failure."""
        ...

    async def check_syntax(self, expr: str) -> None:
        """Raises ``PrometheusBadQuery`` naming the problem when ``expr`` does not parse."""
        ...
