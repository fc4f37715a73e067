"""The use cases behind the commands that act once: eval, history, rollback, notify-test,
resume.

Each takes the loaded ``Settings``, builds its edges through ``runtime.wiring`` and returns
what happened; the CLI only parses arguments and prints. ``say`` receives what an operator
should read on stderr while the case runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx

from rollbackd.errors import DingTalkError, PrometheusPartial
from rollbackd.incidents.decide import decide
from rollbackd.incidents.owners import next_step, policy
from rollbackd.model import Event, Incident, Target, Verdict, new_incident_id
from rollbackd.rollbacks.pauses import lift, pause_of, resumed_message
from rollbackd.rollbacks.plan import owner_of_workload, rollout_history, selector_of, situation_of
from rollbackd.rollbacks.results import Outcome, RollbackRequest, RollbackResult
from rollbackd.rules.syntax import check_rule_syntax
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.runtime.wiring import Edges, renderer_for
from rollbackd.settings import Settings
from rollbackd.state.annotations import read_state

Say = Callable[[str], None]
"""Where a use case tells the operator something while it runs (the CLI: stderr)."""


EVAL_COLUMNS = (
    "rule",
    "namespace",
    "deployment",
    "value",
    "op",
    "threshold",
    "breaching",
    "reason",
    "owner",
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


async def evaluate_once(settings: Settings, say: Say) -> tuple[list[dict[str, object]], bool]:
    """Rows for ``rollbackd eval``, and whether any query failed."""
    with Edges(settings) as edges:
        source = edges.prometheus()
        try:
            problems = await check_rule_syntax(source, settings.rules)
            runner = RuleRunner(
                settings.rules, source=source, clock=SystemClock(), telemetry=Telemetry()
            )
            verdicts = await runner.run()
        finally:
            source.close()
        owners = owner_labels(await edges.managed_deployments() or [], settings)
    rows = [
        {**_verdict_row(v), "owner": owners.get(v.target)}
        for v in sorted(verdicts, key=lambda v: (v.rule, v.target))
    ]
    judged = {verdict.rule for verdict in verdicts}
    for rule in settings.rules:
        failure = runner.failures.get(rule.name)
        if isinstance(failure, PrometheusPartial):
            say(f"rule {rule.name!r}: {failure.message} [{failure.code}]")
            if rule.name in judged:
                continue  # its rows show the values, with reason partial_response
        elif failure is None and rule.name in judged:
            continue
        # A rule without rows would be invisible: say why it has none.
        row = dict.fromkeys(EVAL_COLUMNS)
        row.update(rule=rule.name, op=rule.op, threshold=rule.threshold, reason="no_series")
        if failure is not None:
            row.update(reason=failure.code, error=failure.message)
        rows.append(row)
    for problem in problems:
        say(problem)
    return rows, bool(runner.failures or problems)


def owner_labels(deployments: list[dict[str, Any]], settings: Settings) -> dict[Target, str]:
    """Who re-applies each managed Deployment, as messages name it."""
    labels = {}
    for deployment in deployments:
        meta = deployment["metadata"]
        namespace = settings.rollback.owners.argocd_namespace
        owner = owner_of_workload(deployment, argocd_namespace=namespace)
        if owner is not None:
            labels[Target(meta["namespace"], meta["name"])] = owner.label
    return labels


HISTORY_COLUMNS = (
    "cluster",
    "revision",
    "images",
    "created",
    "change_cause",
    "current",
    "known_bad",
    "incidents",
    "owner",
)


async def history_rows(settings: Settings, target: Target) -> list[dict[str, object]]:
    """Rows for ``rollbackd history``: each revision with what rollbackd knows of it."""
    with Edges(settings) as edges:
        deployment = await edges.workloads.get_deployment(*target)
        replicasets = await edges.workloads.list_replicasets(
            target.namespace, selector_of(deployment)
        )
    history = rollout_history(deployment, replicasets)
    state = read_state(deployment["metadata"].get("annotations") or {})
    last = state.last_rollback
    owner = owner_of_workload(
        deployment, argocd_namespace=settings.rollback.owners.argocd_namespace
    )
    pause = pause_of(deployment)
    owned = owner.label if owner else None
    if owned and pause is not None:
        owned += f" (re-apply paused by {pause.record.incident or 'rollbackd'})"
    rows: list[dict[str, object]] = []
    for revision in history.revisions:
        incidents = []
        if last is not None and revision.template_hash in (last.from_hash, last.to_hash):
            side = "from" if revision.template_hash == last.from_hash else "to"
            incidents.append(f"{last.incident} ({side}{', dry-run' if last.dry_run else ''})")
        rows.append(
            {
                "cluster": settings.kubernetes.cluster_name or None,
                "revision": revision.number,
                "images": ",".join(revision.images),
                "created": revision.created,
                "change_cause": revision.change_cause or None,
                "current": revision is history.current,
                "known_bad": revision.template_hash in state.bad_templates,
                "incidents": ";".join(incidents) or None,
                "owner": owned,
            }
        )
    return rows


async def manual_rollback(
    settings: Settings,
    target: Target,
    *,
    to_revision: int | None,
    dry_run: bool,
    reason: str,
    say: Say,
    force: bool = False,
) -> RollbackResult:
    """``rollbackd rollback``: one undo through the executor and every guard a person keeps."""
    with Edges(settings) as edges:
        return await _manual_rollback(
            edges,
            target,
            to_revision=to_revision,
            dry_run=dry_run,
            reason=reason,
            force=force,
            say=say,
        )


async def _manual_rollback(
    edges: Edges,
    target: Target,
    *,
    to_revision: int | None,
    dry_run: bool,
    reason: str,
    force: bool,
    say: Say,
) -> RollbackResult:
    settings, workloads = edges.settings, edges.workloads
    deployment = await workloads.get_deployment(*target)
    replicasets = await workloads.list_replicasets(target.namespace, selector_of(deployment))
    now = datetime.now(UTC)
    request = RollbackRequest(
        target=target,
        incident=new_incident_id(now),
        rule="manual",
        dry_run=dry_run,
        to_revision=to_revision,
        manual=True,
        note=reason,
        by=f"{settings.leader_election.namespace}/{settings.leader_election.lease_name}",
    )
    situation = situation_of(
        deployment,
        replicasets,
        to_revision=to_revision,
        argocd_namespace=settings.rollback.owners.argocd_namespace,
    )
    decision = decide(
        situation,
        breach_since=now,
        action="rollback",
        kube=settings.kubernetes,
        rollback=settings.rollback,
        budget_used=0,
        now=now,
        manual=True,
        force=force,
    )
    if not decision.acts:
        return RollbackResult(request, Outcome.SKIPPED, decision.reason, decision.message)
    if situation.owner is not None:
        action = policy(situation.owner, settings.rollback.owners)
        step = next_step(situation.owner, action, str(target))
        say(f"{target}: owned by {situation.owner.label}: {step}")
    return await edges.executor().execute(replace(request, pause=decision.pause))


async def send_test_messages(settings: Settings, names: list[str]) -> list[tuple[str, str]]:
    """One test message per robot, sent directly (no outbox); (name, error or "") each."""
    now = datetime.now(UTC)
    incident = Incident(
        id=new_incident_id(now),
        event=Event.BREACH,
        target=Target("rollbackd", "notify-test"),
        rule="notify-test",
        since=now,
        reason="a test message from `rollbackd notify-test`; nothing is wrong",
    )
    renderer = renderer_for(settings)
    message = renderer.render(incident)
    results = []
    async with httpx.AsyncClient() as client:
        for robot in settings.notifications.robots:
            if robot.name not in names:
                continue
            try:
                await Edges.sender(robot, client).send(message, at_all=False)
            except DingTalkError as exc:
                results.append((robot.name, f"{exc.code}: {exc.message}"))
            else:
                results.append((robot.name, ""))
    return results


async def resume_owner(settings: Settings, target: Target) -> str:
    """Lift the owner pause a rollback set on ``target``; what was done, for the operator."""
    with Edges(settings) as edges:
        deployment = await edges.workloads.get_deployment(*target)
        pause = pause_of(deployment)
        if pause is None:
            return "no owner pause set by rollbackd; nothing to resume"
        await lift(pause, workloads=edges.workloads, owners=edges.workloads)
    message = resumed_message(pause, "resumed by an operator (`rollbackd resume`)")
    failures = await send_message(settings, message)
    said = "; ".join(f"{name}: {error}" for name, error in failures)
    return f"resumed {pause.owner} (incident {pause.record.incident or '-'})" + (
        f"; the message failed: {said}" if said else ""
    )


async def send_message(settings: Settings, incident: Incident) -> list[tuple[str, str]]:
    """``incident`` to every robot that takes its event, directly; (name, error) failures."""
    renderer = renderer_for(settings)
    message = renderer.render(incident)
    failures = []
    async with httpx.AsyncClient() as client:
        for robot in settings.notifications.robots:
            events = robot.events or settings.notifications.events
            if str(incident.event) not in events:
                continue
            try:
                await Edges.sender(robot, client).send(message, at_all=False)
            except DingTalkError as exc:
                failures.append((robot.name, f"{exc.code}: {exc.message}"))
    return failures
