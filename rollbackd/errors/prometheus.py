"""Errors of the query backend edge (Prometheus and compatible backends)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollbackd.errors.base import RollbackdError

if TYPE_CHECKING:
    from rollbackd.model import QueryResult


class PrometheusError(RollbackdError, code="ERR_PROM_FAILED"):
    """A query against Prometheus did not produce a usable answer."""

    def __init__(self, message: str, *, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type


class PrometheusUnreachable(PrometheusError, code="ERR_PROM_UNREACHABLE", transient=True):
    """No connection to Prometheus, or it answered 5xx: check prometheus.url and the network."""


class PrometheusTimeout(PrometheusError, code="ERR_PROM_TIMEOUT", transient=True):
    """Prometheus did not answer within prometheus.timeout: a slow query or an overloaded server."""


class PrometheusBadQuery(PrometheusError, code="ERR_PROM_BAD_QUERY"):
    """Prometheus refused the rule's PromQL (bad_data): fix the expression."""


class PrometheusExecution(PrometheusError, code="ERR_PROM_EXECUTION", transient=True):
    """The query failed while running (execution), e.g. many-to-many matching."""


class PrometheusBadResponse(PrometheusError, code="ERR_PROM_BAD_RESPONSE", transient=True):
    """Prometheus answered something rollbackd cannot read (4xx, not JSON, no result)."""


class PrometheusPartial(PrometheusError, code="ERR_PROM_PARTIAL", transient=True):
    """The answer carried ``warnings`` (partial data, e.g. a Thanos store or a
    VictoriaMetrics node was down): judged by the rule's on_error, never as a clean answer."""

    def __init__(
        self, message: str, *, warnings: tuple[str, ...], partial: QueryResult | None = None
    ) -> None:
        super().__init__(message, error_type="warnings")
        self.warnings = warnings
        self.partial = partial
        """What the answer did hold: shown (in ``eval``), never judged as clean."""


class PrometheusCredentials(PrometheusError, code="ERR_PROM_CREDENTIALS", transient=True):
    """The bearer token or password file for Prometheus is missing or empty at runtime:
    restore the mounted Secret; the next tick reads it again."""
