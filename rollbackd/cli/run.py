"""``run`` (the daemon) and ``demo`` (the local sandbox)."""

from __future__ import annotations

import sys

import click

from rollbackd.cli.common import EXIT_FAILED, config_option, echo, load_or_exit
from rollbackd.errors import RollbackdError
from rollbackd.runtime.daemon import run_daemon


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


@click.command("demo")
def demo() -> None:
    """The local sandbox: a bad release is rolled back end to end, with a timeline."""
    from rollbackd.demo import run_demo  # noqa: PLC0415 - the sandbox loads test fakes: only here

    sys.exit(run_demo())
