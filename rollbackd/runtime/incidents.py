"""Incidents: from a firing verdict to a recovered (or escalated) Deployment, one id throughout.

::

    firing verdict --decide--> skip (not managed / opted out): counted, nothing said
                          \\--> notify: breach + skipped (with the reason), then recovered
                           \\-> rollback: breach, rollback_started, rollback_succeeded|failed,
                                then verifying for ``verify_window``: recovered, or escalated
                                (no further automatic action)

One incident per Deployment at a time; every rule or alert firing for it joins it.
Rollbacks run as tasks, so a rollout that takes minutes never holds up evaluation.
A new leader adopts the incident of a Deployment that rollbackd rolled back recently (read
from ``rollbackd.io/last-rollback``), so it finishes that incident's messages without
rolling back again.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from rollbackd.decisions.decide import Action, Decision, budget_used, decide
from rollbackd.errors import RollbackdError
from rollbackd.model import Event, Incident, RuleState, Target, Transition, Verdict, new_incident_id
from rollbackd.notifications.render import graph_url
from rollbackd.ports import Clock, Workloads
from rollbackd.rollbacks.execute import Outcome, RollbackExecutor, RollbackRequest, RollbackResult
from rollbackd.rollbacks.plan import selector_of, situation_of
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import Settings
from rollbackd.state.annotations import parse_time, read_state

log = get_logger(__name__)

Obj = dict[str, Any]


class DeploymentView(Protocol):
    """The watch cache, as incidents read it."""

    def get(self, namespace: str, name: str) -> Obj | None: ...

    def all(self) -> list[Obj]: ...


class Notify(Protocol):
    def notify(self, incident: Incident) -> list[str]: ...


@dataclass
class OpenIncident:
    id: str
    target: Target
    verdict: Verdict
    phase: str  # deciding | rolling_back | verifying | notified | escalated
    verify_until: datetime | None = None
    facts: Incident | None = None  # the latest message's facts, reused for later events


class IncidentManager:
    """Turns verdicts into decisions, rollbacks and messages."""

    def __init__(
        self,
        settings: Settings,
        *,
        deployments: DeploymentView,
        workloads: Workloads,
        executor: RollbackExecutor,
        notifications: Notify,
        telemetry: Telemetry,
        clock: Clock,
        is_leader: Callable[[], bool] = lambda: True,
        observed_changes: dict[tuple[str, str], datetime] | None = None,
        open_incidents: dict[Target, OpenIncident] | None = None,
        tasks: set[asyncio.Task[None]] | None = None,
    ) -> None:
        self.settings = settings
        self._deployments = deployments
        self._workloads = workloads
        self._executor = executor
        self._notifications = notifications
        self._telemetry = telemetry
        self._clock = clock
        self._is_leader = is_leader
        self._observed = observed_changes if observed_changes is not None else {}
        self.open: dict[Target, OpenIncident] = {} if open_incidents is None else open_incidents
        # Shared with the daemon, so a reload's new manager still waits for these rollbacks.
        self._tasks: set[asyncio.Task[None]] = set() if tasks is None else tasks
        self._prometheus_url = settings.prometheus.external_url or settings.prometheus.url
        self._exprs = {rule.name: rule.expr for rule in settings.rules}

    def _now(self) -> datetime:
        return self._clock.now().wall

    # --- intake ---------------------------------------------------------------------------

    async def handle(self, verdicts: list[Verdict]) -> None:
        """Act on one batch of verdicts (an evaluation cycle, or one webhook payload)."""
        by_target: dict[Target, list[Verdict]] = {}
        for verdict in verdicts:
            by_target.setdefault(verdict.target, []).append(verdict)
        for target, batch in by_target.items():
            incident = self.open.get(target)
            firing = [v for v in batch if v.state is RuleState.FIRING]
            if incident is None:
                if firing:
                    await self._open(firing[0])
            elif incident.phase in ("verifying", "notified", "escalated") and _recovered(batch):
                self._close(incident, batch)
        self._check_deadlines()

    def adopt_recent_rollbacks(self) -> int:
        """Take over incidents a previous leader rolled back and had not finished."""
        window = self.settings.rollback.verify_window
        now, adopted = self._now(), 0
        for deployment in self._deployments.all():
            meta = deployment["metadata"]
            last = read_state(meta.get("annotations") or {}).last_rollback
            if last is None or last.dry_run:
                continue
            at = parse_time(last.at)
            target = Target(meta["namespace"], meta["name"])
            if at is None or now - at > window or target in self.open:
                continue
            facts = Incident(
                id=last.incident,
                event=Event.ROLLBACK_SUCCEEDED,
                target=target,
                rule=last.rule,
                value=last.value,
                threshold=last.threshold,
                from_revision=last.from_revision,
                to_revision=last.to_revision,
            )
            verdict = Verdict(
                rule=last.rule,
                target=target,
                value=last.value,
                op="",
                threshold=last.threshold or 0.0,
                state=RuleState.FIRING,
                since=self._clock.now(),
            )
            self.open[target] = OpenIncident(
                last.incident, target, verdict, "verifying", at + window, facts
            )
            adopted += 1
            log.info("incident_adopted", incident_id=last.incident, target=str(target))
        return adopted

    async def idle(self, deadline: float) -> bool:
        """Wait for running rollbacks to finish, at most ``deadline`` seconds."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=deadline)
        return not pending

    # --- steps ------------------------------------------------------------------------------

    async def _open(self, verdict: Verdict) -> None:
        target = verdict.target
        deployment = self._deployments.get(*target)
        if deployment is None:  # not managed: not in the cache of opted-in Deployments
            self._telemetry.decisions.labels("skip", "not_opted_in").inc()
            return
        incident = OpenIncident(new_incident_id(self._now()), target, verdict, "deciding")
        self.open[target] = incident
        with structlog.contextvars.bound_contextvars(
            incident_id=incident.id,
            namespace=target.namespace,
            deployment=target.deployment,
            rule=verdict.rule,
        ):
            try:
                decision, situation_hash = await self._decide(deployment, verdict)
            except RollbackdError as exc:
                log.error("decision_failed", code=exc.code, error=exc.message)
                del self.open[target]
                return
            self._telemetry.decisions.labels(str(decision.action), str(decision.reason)).inc()
            log.info(
                "decision",
                decision=str(decision.action),
                reason=str(decision.reason),
                message=decision.message,
                dry_run=decision.dry_run,
            )
            if decision.action is Action.SKIP:
                del self.open[target]
                return
            incident.facts = self._facts(incident, Event.BREACH, decision)
            self._say(incident.facts)
            if decision.action is Action.NOTIFY:
                incident.phase = "notified"
                self._say(replace(incident.facts, event=Event.SKIPPED))
                return
            incident.phase = "rolling_back"
            self._say(replace(incident.facts, event=Event.ROLLBACK_STARTED))
            task = asyncio.create_task(self._rollback(incident, decision, situation_hash))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _decide(self, deployment: Obj, verdict: Verdict) -> tuple[Decision, str]:
        meta = deployment["metadata"]
        replicasets = await self._workloads.list_replicasets(
            meta["namespace"], selector_of(deployment)
        )
        observed = self._observed.get((meta["namespace"], meta["name"]))
        situation = situation_of(deployment, replicasets, observed_change=observed)
        now = self._now()
        states = [
            read_state(d["metadata"].get("annotations") or {}) for d in self._deployments.all()
        ]
        decision = decide(
            situation,
            breach_since=verdict.began or verdict.since.wall,
            action=verdict.action,
            kube=self.settings.kubernetes,
            rollback=self.settings.rollback,
            budget_used=budget_used(states, now=now, per=self.settings.rollback.budget.per),
            now=now,
        )
        return decision, situation.current_hash

    async def _rollback(self, incident: OpenIncident, decision: Decision, expected: str) -> None:
        verdict = incident.verdict
        request = RollbackRequest(
            target=incident.target,
            incident=incident.id,
            rule=verdict.rule,
            value=verdict.value,
            threshold=verdict.threshold if verdict.source == "prometheus" else None,
            dry_run=decision.dry_run,
            expected_hash=expected,
        )

        async def redecide(deployment: Obj) -> Decision:
            again, _ = await self._decide(deployment, verdict)
            return again

        with structlog.contextvars.bound_contextvars(incident_id=incident.id):
            try:
                result = await self._executor.execute(request, redecide=redecide)
            except RollbackdError as exc:
                result = RollbackResult(request, Outcome.FAILED, exc.code, exc.message)
            self._telemetry.rollbacks.labels(str(result.outcome)).inc()
            self._telemetry.rollback_seconds.observe(result.seconds)
            log.info(
                "rollback_result",
                outcome=str(result.outcome),
                code=result.code,
                message=result.message,
                seconds=result.seconds,
            )
        facts = replace(
            incident.facts or self._facts(incident, Event.BREACH, decision),
            from_revision=result.from_revision,
            to_revision=result.to_revision,
            from_images=result.from_images,
            to_images=result.to_images,
            reason=result.message,
            reason_code=result.code,
            dry_run=result.outcome is Outcome.DRY_RUN,
        )
        incident.facts = facts
        if result.outcome in (Outcome.SUCCEEDED, Outcome.DRY_RUN):
            self._say(replace(facts, event=Event.ROLLBACK_SUCCEEDED))
            incident.phase = "verifying"
            incident.verify_until = self._now() + self.settings.rollback.verify_window
        elif result.outcome is Outcome.SKIPPED:
            self._say(replace(facts, event=Event.SKIPPED))
            incident.phase = "notified"
        else:
            self._say(replace(facts, event=Event.ROLLBACK_FAILED))
            incident.phase = "escalated"  # a person must act; watch for recovery only

    def _close(self, incident: OpenIncident, batch: list[Verdict]) -> None:
        note = next((v.note for v in batch if v.note), "")
        facts = incident.facts or Incident(incident.id, Event.RECOVERED, incident.target)
        self._say(replace(facts, event=Event.RECOVERED, note=note or facts.note))
        del self.open[incident.target]
        log.info("incident_closed", incident_id=incident.id, target=str(incident.target))

    def _check_deadlines(self) -> None:
        now = self._now()
        for incident in list(self.open.values()):
            if (
                incident.phase == "verifying"
                and incident.verify_until
                and now > incident.verify_until
            ):
                incident.phase = "escalated"
                facts = incident.facts or Incident(incident.id, Event.ESCALATED, incident.target)
                window = self.settings.rollback.verify_window
                self._say(
                    replace(
                        facts,
                        event=Event.ESCALATED,
                        reason=f"still breaching {_minutes(window)} after the rollback; "
                        "no further automatic action",
                    )
                )

    # --- messages ---------------------------------------------------------------------------

    def _facts(self, incident: OpenIncident, event: Event, decision: Decision) -> Incident:
        verdict = incident.verdict
        expr = self._exprs.get(verdict.rule, "")
        value = verdict.value
        return Incident(
            id=incident.id,
            event=event,
            target=incident.target,
            rule=verdict.rule,
            value=None if value is None or math.isnan(value) else value,
            op=verdict.op,
            threshold=verdict.threshold if verdict.op else None,
            since=verdict.began or verdict.since.wall,
            reason=decision.message,
            reason_code=str(decision.reason),
            dry_run=decision.dry_run,
            graph_url=graph_url(self._prometheus_url, expr) if expr else "",
            labels=dict(verdict.labels),
        )

    def _say(self, incident: Incident) -> None:
        if not self._is_leader():
            log.warning("notification_withheld", reason="not the leader", kind=str(incident.event))
            return
        self._notifications.notify(incident)


def _recovered(batch: list[Verdict]) -> bool:
    """No rule pending or firing for the Deployment, and at least one says it is fine."""
    breaching = any(v.state in (RuleState.PENDING, RuleState.FIRING) for v in batch)
    fine = any(v.breaching is False or v.transition is Transition.RESOLVED for v in batch)
    return fine and not breaching


def _minutes(value: timedelta) -> str:
    return (
        f"{int(value.total_seconds() // 60)}m"
        if value >= timedelta(minutes=1)
        else (f"{int(value.total_seconds())}s")
    )
