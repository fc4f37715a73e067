"""``notify-test``: one test message to each robot, and what DingTalk answered."""

from __future__ import annotations

import asyncio
import sys

import click

from rollbackd.cli.common import (
    EXIT_BAD_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    echo,
    load_or_exit,
)
from rollbackd.runtime.operations import send_test_messages


@click.command("notify-test")
@config_option
@click.option("--robot", "robot_name", help="only this robot")
def notify_test(config_file: str, robot_name: str | None) -> None:
    """Send a test message to each robot and print what DingTalk answered."""
    settings = load_or_exit(config_file)
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
