"""Recorded history as a ``MetricsSource``: instant queries answered from range queries.

A range query at ``step`` = the rule's interval returns, column by column, what each
evaluation would have seen. ``record`` keeps the columns of one span (a chunk under
Prometheus's 11,000 points per series); ``query`` answers the column at ``at``, so the
daemon's ``RuleRunner`` runs over history unchanged. A span whose query failed answers
that failure at each of its times (judged by the rule's ``on_error``), and a time without
any series answers an empty vector (judged by ``on_no_data``), as the live query would
have. Range queries (the onset of a breach, at a finer step) go to the live source.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from rollbackd.errors import PrometheusError, PrometheusUnreachable
from rollbackd.model import QueryResult
from rollbackd.ports import MetricsSource
from rollbackd.settings import TargetLabels

MAX_POINTS = 11_000
"""Prometheus refuses a range query of more points per series than this."""

EMPTY = QueryResult(values={})

T = TypeVar("T")


def stamp_key(stamp: float) -> float:
    """A column's time as a key: to the millisecond, as range queries are sent."""
    return round(stamp, 3)


def grid(start: float, end: float, step: float) -> list[float]:
    """The evaluation times from ``start`` to ``end`` (both included) every ``step``, as
    Prometheus computes a range query's: in whole milliseconds."""
    first, last, every = round(start * 1000), round(end * 1000), max(round(step * 1000), 1)
    return [at / 1000 for at in range(first, last + 1, every)]


def ticks(grids: Iterable[tuple[T, Iterable[float]]]) -> list[tuple[float, list[T]]]:
    """Merge each item's times into one timeline: every time with the items due then, in
    the order given (rules of one interval are evaluated together, as the daemon does)."""
    due: dict[float, list[T]] = {}
    for item, stamps in grids:
        for stamp in stamps:
            due.setdefault(stamp, []).append(item)
    return sorted(due.items())


@dataclass(frozen=True)
class Span:
    """What one recorded range query saw: its times and, if it failed, the failure."""

    expr: str
    start: float
    end: float
    step: float
    failure: PrometheusError | None = None


class Recorded:
    """Answers ``query(expr)`` with the recorded column of ``expr`` at ``at``."""

    def __init__(self, live: MetricsSource | None = None) -> None:
        self._live = live
        self._columns: dict[str, dict[float, QueryResult]] = {}
        self._failures: dict[str, PrometheusError] = {}
        self.at = 0.0

    async def record(
        self, expr: str, *, target_labels: TargetLabels, start: float, end: float, step: float
    ) -> Span:
        """Read ``expr`` over ``[start, end]`` from the live source, replacing what was
        recorded of it before (one span at a time: memory stays one chunk)."""
        if self._live is None:
            raise PrometheusUnreachable("no source to record history from")
        try:
            answer = await self._live.query_range(
                expr, target_labels=target_labels, start=start, end=end, step=step
            )
        except PrometheusError as exc:
            self._columns[expr] = {}
            self._failures[expr] = exc
            return Span(expr, start, end, step, exc)
        self._columns[expr] = {stamp_key(stamp): result for stamp, result in answer}
        self._failures.pop(expr, None)
        return Span(expr, start, end, step)

    def column(self, expr: str, stamp: float) -> QueryResult | PrometheusError:
        """What an instant query of ``expr`` at ``stamp`` would have answered."""
        failure = self._failures.get(expr)
        if failure is not None:
            return failure
        return self._columns.get(expr, {}).get(stamp_key(stamp), EMPTY)

    def seen(self, expr: str) -> Iterable[float]:
        """The times at which ``expr`` had at least one series."""
        return self._columns.get(expr, {}).keys()

    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        answer = self.column(expr, self.at)
        if isinstance(answer, PrometheusError):
            raise answer
        return answer

    async def query_range(
        self, expr: str, *, target_labels: TargetLabels, start: float, end: float, step: float
    ) -> list[tuple[float, QueryResult]]:
        if self._live is None:
            raise PrometheusUnreachable("no source for range queries")
        return await self._live.query_range(
            expr, target_labels=target_labels, start=start, end=end, step=step
        )

    async def check_syntax(self, expr: str) -> bool:
        return False
