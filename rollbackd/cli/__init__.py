"""The ``rollbackd`` command line: one module per command group, each a thin layer that
parses arguments, calls a use case and prints.

Exit codes follow CONTRACT.md: 0 success, 1 a runtime failure, 2 a bad configuration or
bad usage. Errors are one line each, with their ``ERR_`` code; never a traceback.
"""

from __future__ import annotations

import click

from rollbackd import __version__
from rollbackd.cli.config import check_config, eval_
from rollbackd.cli.notify import notify_test
from rollbackd.cli.replay import replay_
from rollbackd.cli.run import demo, run
from rollbackd.cli.workloads import history, resume, rollback


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rollbackd")
def main() -> None:
    """rollbackd undoes a bad Deployment change when its metrics breach, and says why."""


for command in (run, check_config, eval_, replay_, history, rollback, resume, notify_test, demo):
    main.add_command(command)

__all__ = ["main"]
