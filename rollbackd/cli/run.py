"""``run`` (the daemon) and ``demo`` (the local sandbox)."""

from __future__ import annotations

import asyncio
import sys

import click
import structlog

from rollbackd.cli.common import EXIT_FAILED, config_option, echo, load_or_exit
from rollbackd.errors import RollbackdError
from rollbackd.runtime.daemon import Daemon
from rollbackd.runtime.logs import configure_logging
from rollbackd.settings import Settings


@click.command("run")
@config_option
@click.option("--dry-run", is_flag=True, help="every step except writes to the cluster")
@click.option("--once", is_flag=True, help="run one evaluation cycle and exit")
def run(config_file: str, dry_run: bool, once: bool) -> None:
    """The daemon: evaluate rules, receive alerts, roll back bad changes, tell people."""
    settings = load_or_exit(config_file, quiet_logs=False)
    try:
        code = run_daemon(settings, config_file=config_file, once=once, dry_run=dry_run)
    except RollbackdError as exc:
        echo(f"rollbackd: fatal: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(code)


def run_daemon(settings: Settings, *, config_file: str, once: bool, dry_run: bool = False) -> int:
    """``rollbackd run``: configure logging and run until stopped."""
    configure_logging(
        level=settings.logging.level,
        fmt=settings.logging.format,
        secrets=settings.secret_values(),
        cluster=settings.kubernetes.cluster_name,
    )
    structlog.contextvars.clear_contextvars()
    daemon = Daemon(settings, config_file=config_file, once=once, force_dry_run=dry_run)
    return asyncio.run(daemon.run())


@click.command("demo")
def demo() -> None:
    """The local sandbox: a bad release is rolled back end to end, with a timeline."""
    from rollbackd.demo import run_demo  # noqa: PLC0415 - the sandbox loads test fakes: only here

    sys.exit(run_demo())
