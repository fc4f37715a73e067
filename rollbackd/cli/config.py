"""``check-config`` and ``eval``: is the configuration right, and what do its rules say now."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from rollbackd.cli.common import (
    EXIT_BAD_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    echo,
    load_or_exit,
    output_option,
    render_table,
    to_stderr,
)
from rollbackd.errors import TemplateFailed
from rollbackd.notifications.render import template_problems
from rollbackd.runtime.operations import EVAL_COLUMNS, evaluate_once
from rollbackd.settings import key_line, redacted_yaml, render_path, warnings_of


@click.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--print", "print_", is_flag=True, help="show the effective configuration, redacted")
def check_config(file: str, print_: bool) -> None:
    """Validate FILE offline; print every problem as FILE:LINE: key.path: message."""
    settings = load_or_exit(file, quiet_logs=False)
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


@click.command("eval")
@config_option
@output_option
def eval_(config_file: str, output: str) -> None:
    """Evaluate every rule once against Prometheus: one row per (rule, target)."""
    settings = load_or_exit(config_file)
    rows, failed = asyncio.run(evaluate_once(settings, to_stderr))
    if output == "json":
        echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        echo(render_table(rows, EVAL_COLUMNS))
    sys.exit(EXIT_FAILED if failed else EXIT_OK)
