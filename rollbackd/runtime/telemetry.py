"""rollbackd's own metrics, all in one registry that tests can inspect.

Names follow CONTRACT.md with the ``rollbackd_`` prefix. Label values are bounded: rule
names, results and ERR_ codes; never alert fingerprints or other unbounded values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rollbackd import __version__

_EVALUATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Telemetry:
    """The metric families rollbackd updates, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "rollbackd_build_info", "rollbackd's version.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)
        self.rule_evaluations = Counter(
            "rollbackd_rule_evaluations",
            "Rule evaluations, by result: ok, partial_response (an answer with warnings) or the"
            " ERR_ code of the failure.",
            ["rule", "result"],
            registry=r,
        )
        self.rule_evaluation_seconds = Histogram(
            "rollbackd_rule_evaluation_seconds",
            "Time to query and judge one rule.",
            ["rule"],
            buckets=_EVALUATION_BUCKETS,
            registry=r,
        )
        self.rules_firing = Gauge(
            "rollbackd_rules_firing", "Targets for which a rule is firing.", ["rule"], registry=r
        )
        self.series_ignored = Counter(
            "rollbackd_rule_series_ignored",
            "Series a rule's query returned without the target labels.",
            ["rule"],
            registry=r,
        )
        self.evaluation_overruns = Counter(
            "rollbackd_evaluation_overruns",
            "Evaluation ticks skipped because the previous one was still running or late.",
            ["interval"],
            registry=r,
        )

        self.alertmanager_alerts = Counter(
            "rollbackd_alertmanager_alerts",
            "Alerts received from Alertmanager, by status and what was done: rollback, "
            "notify, duplicate, no_trigger, no_target.",
            ["status", "action"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "rollbackd_webhook_requests",
            "Webhook requests answered, by HTTP status.",
            ["code"],
            registry=r,
        )

        self.notifications = Counter(
            "rollbackd_notifications",
            "Notification deliveries, by robot and result: ok or the ERR_ code.",
            ["robot", "result"],
            registry=r,
        )
        self.notification_queue_depth = Gauge(
            "rollbackd_notification_queue_depth",
            "Messages waiting in a robot's outbox.",
            ["robot"],
            registry=r,
        )

        self.decisions = Counter(
            "rollbackd_decisions",
            "Decisions on firing signals, by decision and reason code.",
            ["decision", "reason"],
            registry=r,
        )
        self.rollbacks = Counter(
            "rollbackd_rollbacks",
            "Rollbacks carried out, by result: succeeded, failed, dry_run, skipped.",
            ["result"],
            registry=r,
        )
        self.rollback_seconds = Histogram(
            "rollbackd_rollback_seconds",
            "Time from the decision to a finished (or failed) rollback.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.approvals = Counter(
            "rollbackd_approvals",
            "Answers to approval links, by answer: rollback, hold, or refused (the status).",
            ["answer"],
            registry=r,
        )
        self.leader = Gauge("rollbackd_leader", "1 while this replica holds the Lease.", registry=r)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of one sample, 0 when absent (for tests and the demo)."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else found
