"""The ``rollbackd`` command line.

Exit codes follow CONTRACT.md: 0 success, 1 a runtime failure, 2 a bad configuration or
bad usage. Errors are one line each, with their ``ERR_`` code; never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx

from rollbackd import __version__
from rollbackd.errors import (
    ConfigError,
    DingTalkError,
    PrometheusPartial,
    ReplayBadArguments,
    RollbackdError,
    TemplateFailed,
)
from rollbackd.incidents.decide import decide
from rollbackd.incidents.owners import next_step, policy
from rollbackd.model import Event, Incident, Target, Verdict, new_incident_id
from rollbackd.notifications.render import template_problems
from rollbackd.replay.history import replay_history
from rollbackd.replay.report import dumps, to_html, to_table
from rollbackd.replay.times import parse_span
from rollbackd.rollbacks.execute import Outcome, RollbackRequest, RollbackResult
from rollbackd.rollbacks.pauses import lift, pause_of, resumed_message
from rollbackd.rollbacks.plan import (
    owner_of_workload,
    rollout_history,
    selector_of,
    situation_of,
)
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.daemon import run_daemon
from rollbackd.runtime.evaluation import RuleRunner, check_rule_syntax
from rollbackd.runtime.logs import REDACTOR, configure_logging
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.runtime.wiring import Edges, renderer_for
from rollbackd.settings import (
    Settings,
    key_line,
    load_settings,
    redacted_yaml,
    render_path,
    warnings_of,
)
from rollbackd.state.annotations import read_state

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


def echo(text: str, *, err: bool = False, nl: bool = True) -> None:
    """Print for the operator, with every known secret masked (logs get the same)."""
    click.echo(REDACTOR.text(text), err=err, nl=nl)


def load_or_exit(file: str) -> Settings:
    """Load the configuration, or print every problem and exit with status 2.

    Whatever the file may hold as a secret is masked in what is printed, even when it
    was put in a key that is not secret (a token where a path belongs, say).
    """
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        REDACTOR.add(exc.secrets)
        for line in exc.lines():
            echo(line, err=True)
        sys.exit(EXIT_BAD_CONFIG)
    REDACTOR.add(settings.secret_values())  # the one redactor of logs and of output
    return settings


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
    for loc, message in warnings_of(settings):
        echo(f"{file}:{key_line(file, loc)}: {render_path(loc)}: warning: {message}", err=True)
    notifications = settings.notifications
    failed = template_problems(notifications.language, notifications.templates_dir)
    for template, line, problem in failed:
        echo(
            f"{template}:{line}: notifications.templates_dir: {problem} [{TemplateFailed.code}]",
            err=True,
        )
    if failed:
        sys.exit(EXIT_BAD_CONFIG)
    if print_:
        echo(redacted_yaml(settings), nl=False)
    else:
        rules = len(settings.rules)
        robots = len(settings.notifications.robots)
        echo(f"{file}: valid ({rules} rules, {robots} robots)")


@main.command("eval")
@config_option
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def eval_(config_file: str, output: str) -> None:
    """Evaluate every rule once against Prometheus: one row per (rule, target)."""
    settings = load_or_exit(config_file)
    configure_logging(level="warning", fmt="console", stream=sys.stderr)
    rows, failed = asyncio.run(evaluate_once(settings))
    if output == "json":
        echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        echo(render_table(rows, EVAL_COLUMNS))
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


async def evaluate_once(settings: Settings) -> tuple[list[dict[str, object]], bool]:
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
            echo(f"rule {rule.name!r}: {failure.message} [{failure.code}]", err=True)
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
        echo(problem, err=True)
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


def parse_target(value: str) -> Target:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise click.BadParameter(f"{value!r} is not NAMESPACE/NAME")
    return Target(namespace, name)


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


@main.command("history")
@click.argument("target", callback=lambda _c, _p, v: parse_target(v))
@config_option
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def history(target: Target, config_file: str, output: str) -> None:
    """Revisions of the Deployment NAMESPACE/NAME, with what rollbackd knows of each."""
    settings = load_or_exit(config_file)
    configure_logging(level="warning", fmt="console", stream=sys.stderr)
    try:
        rows = asyncio.run(history_rows(settings, target))
    except RollbackdError as exc:
        echo(f"{target}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if output == "json":
        echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        echo(render_table(rows, HISTORY_COLUMNS))


async def manual_rollback(
    settings: Settings,
    target: Target,
    *,
    to_revision: int | None,
    dry_run: bool,
    reason: str,
    force: bool = False,
) -> RollbackResult:
    with Edges(settings) as edges:
        return await _manual_rollback(
            edges, target, to_revision=to_revision, dry_run=dry_run, reason=reason, force=force
        )


async def _manual_rollback(
    edges: Edges,
    target: Target,
    *,
    to_revision: int | None,
    dry_run: bool,
    reason: str,
    force: bool,
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
        echo(f"{target}: owned by {situation.owner.label}: {step}", err=True)
    return await edges.executor().execute(replace(request, pause=decision.pause))


@main.command("rollback")
@click.argument("target", callback=lambda _c, _p, v: parse_target(v))
@config_option
@click.option("--to-revision", type=click.IntRange(min=1), help="revision to return to")
@click.option("--dry-run", is_flag=True, help="every step except the write")
@click.option("--reason", default="", help="why, recorded in the Event, record and messages")
@click.option("--force", is_flag=True, help="pass the cooldown (opt-out and precondition hold)")
def rollback(
    target: Target,
    config_file: str,
    *,
    to_revision: int | None,
    dry_run: bool,
    reason: str,
    force: bool,
) -> None:
    """Roll NAMESPACE/NAME back through rollbackd's executor and guards."""
    settings = load_or_exit(config_file)
    configure_logging(level="warning", fmt="console", stream=sys.stderr)
    try:
        result = asyncio.run(
            manual_rollback(
                settings,
                target,
                to_revision=to_revision,
                dry_run=dry_run or settings.rollback.dry_run,
                reason=reason,
                force=force,
            )
        )
    except RollbackdError as exc:
        echo(f"{target}: rollback failed: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    echo(f"{target}: {result.outcome}: {result.message} [{result.code}]")
    echo(f"incident {result.request.incident}")
    sys.exit(EXIT_FAILED if result.outcome is Outcome.FAILED else EXIT_OK)


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


@main.command("notify-test")
@config_option
@click.option("--robot", "robot_name", help="only this robot")
def notify_test(config_file: str, robot_name: str | None) -> None:
    """Send a test message to each robot and print what DingTalk answered."""
    settings = load_or_exit(config_file)
    configure_logging(level="warning", fmt="console", stream=sys.stderr)
    names = [r.name for r in settings.notifications.robots if robot_name in (None, r.name)]
    if not names:
        echo(
            f"{config_file}: no robot {'named ' + robot_name if robot_name else ''} configured",
            err=True,
        )
        sys.exit(EXIT_BAD_CONFIG)
    failed = False
    for name, error in asyncio.run(send_test_messages(settings, names)):
        kind = next(r.kind for r in settings.notifications.robots if r.name == name)
        if error:
            failed = True
            echo(f"{name}: failed: {error}")
        else:
            echo(f"{name}: ok{' (errcode 0)' if kind == 'webhook' else ''}")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


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


@main.command("resume")
@click.argument("target", callback=lambda _c, _p, v: parse_target(v))
@config_option
def resume(target: Target, config_file: str) -> None:
    """Lift the owner pause (Flux reconcile, Argo CD automated sync) a rollback set."""
    settings = load_or_exit(config_file)
    configure_logging(level="warning", fmt="console", stream=sys.stderr)
    try:
        said = asyncio.run(resume_owner(settings, target))
    except RollbackdError as exc:
        echo(f"{target}: resume failed: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    echo(f"{target}: {said}")
    sys.exit(EXIT_OK)


@main.command("run")
@config_option
@click.option("--dry-run", is_flag=True, help="every step except writes to the cluster")
@click.option("--once", is_flag=True, help="run one evaluation cycle and exit")
def run(config_file: str, dry_run: bool, once: bool) -> None:
    """The daemon: evaluate rules, receive alerts, roll back bad changes, tell people."""
    settings = load_or_exit(config_file)
    try:
        code = run_daemon(settings, config_file=config_file, once=once, dry_run=dry_run)
    except RollbackdError as exc:
        echo(f"rollbackd: fatal: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(code)


def _progress_bar(done: float, total: float) -> None:
    share = done / total if total else 1.0
    bar = "#" * int(share * 30)
    click.echo(f"\rreplay [{bar:<30}] {share:4.0%}", err=True, nl=share >= 1)


@main.command("replay")
@config_option
@click.option("--from", "start", required=True, help="RFC 3339, now, or now less a duration: -24h")
@click.option("--to", "end", default="now", show_default=True, help="as --from")
@click.option("--rule", "rule_names", multiple=True, help="only this rule (repeatable)")
@click.option(
    "--output", type=click.Choice(["table", "json", "html"]), default="table", show_default=True
)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="write here, not stdout")
@click.option("--no-cluster", is_flag=True, help="without the cluster's history: breaches only")
def replay_(
    *,
    config_file: str,
    start: str,
    end: str,
    rule_names: tuple[str, ...],
    output: str,
    out_file: str | None,
    no_cluster: bool,
) -> None:
    """What rollbackd would have done over a span of Prometheus history: every breach, and
    each decision with its reason."""
    settings = load_or_exit(config_file)
    configure_logging(level="warning", fmt="console", stream=sys.stderr)
    try:
        first, last = parse_span(start, end, now=datetime.now(UTC))
        unknown = [n for n in rule_names if n not in {r.name for r in settings.rules}]
        if unknown:
            raise ReplayBadArguments(f"--rule {', '.join(unknown)}: no such rule in {config_file}")
    except ReplayBadArguments as exc:
        echo(str(exc), err=True)  # the message ends with its code
        sys.exit(EXIT_BAD_CONFIG)
    rules = [r for r in settings.rules if not rule_names or r.name in rule_names]
    try:
        report = asyncio.run(
            replay_history(
                settings,
                start=first,
                end=last,
                rules=rules,
                cluster=not no_cluster,
                progress=_progress_bar if sys.stderr.isatty() else None,
            )
        )
    except RollbackdError as exc:
        echo(f"replay: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if output == "json":
        text = dumps(report) + "\n"
    elif output == "html":
        text = to_html(
            report,
            language=settings.notifications.language,
            cluster_name=settings.kubernetes.cluster_name,
        )
    else:
        text = to_table(report) + "\n"
    if out_file:
        Path(out_file).write_text(text, encoding="utf-8")
        echo(f"wrote {out_file}", err=True)
    else:
        echo(text, nl=False)
    for gap in report.gaps:
        if gap.kind == "error":
            echo(f"rule {gap.rule!r}: history from {gap.start} unreadable [{gap.code}]", err=True)
    sys.exit(EXIT_FAILED if report.failed else EXIT_OK)


@main.command("demo")
def demo() -> None:
    """The local sandbox: a bad release is rolled back end to end, with a timeline."""
    from rollbackd.demo import run_demo  # noqa: PLC0415 - the sandbox loads test fakes: only here

    sys.exit(run_demo())
