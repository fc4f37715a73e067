"""``history``, ``rollback`` and ``resume``: one workload's revisions, an undo, a lifted pause."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from rollbackd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    echo,
    load_or_exit,
    output_option,
    render_table,
    target_argument,
    to_stderr,
)
from rollbackd.errors import RollbackdError
from rollbackd.model import Target
from rollbackd.rollbacks.results import Outcome
from rollbackd.runtime.operations import (
    HISTORY_COLUMNS,
    history_rows,
    manual_rollback,
    resume_owner,
)


@click.command("history")
@target_argument
@config_option
@output_option
def history(target: Target, config_file: str, output: str) -> None:
    """Revisions of the Deployment NAMESPACE/NAME, with what rollbackd knows of each."""
    settings = load_or_exit(config_file)
    try:
        rows = asyncio.run(history_rows(settings, target))
    except RollbackdError as exc:
        echo(f"{target}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if output == "json":
        echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        echo(render_table(rows, HISTORY_COLUMNS))


@click.command("rollback")
@target_argument
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
    try:
        result = asyncio.run(
            manual_rollback(
                settings,
                target,
                to_revision=to_revision,
                dry_run=dry_run or settings.rollback.dry_run,
                reason=reason,
                force=force,
                say=to_stderr,
            )
        )
    except RollbackdError as exc:
        echo(f"{target}: rollback failed: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    echo(f"{target}: {result.outcome}: {result.message} [{result.code}]")
    echo(f"incident {result.request.incident}")
    sys.exit(EXIT_FAILED if result.outcome is Outcome.FAILED else EXIT_OK)


@click.command("resume")
@target_argument
@config_option
def resume(target: Target, config_file: str) -> None:
    """Lift the owner pause (Flux reconcile, Argo CD automated sync) a rollback set."""
    settings = load_or_exit(config_file)
    try:
        said = asyncio.run(resume_owner(settings, target))
    except RollbackdError as exc:
        echo(f"{target}: resume failed: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    echo(f"{target}: {said}")
    sys.exit(EXIT_OK)
