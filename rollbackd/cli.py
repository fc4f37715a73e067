"""The ``rollbackd`` command line.

Exit codes follow CONTRACT.md: 0 success, 1 a runtime failure, 2 a bad configuration or
bad usage. Errors are one line each, with their ``ERR_`` code; never a traceback.
"""

from __future__ import annotations

import sys

import click

from rollbackd import __version__
from rollbackd.errors import ConfigError
from rollbackd.settings import Settings, load_settings, redacted_yaml

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


def load_or_exit(file: str) -> Settings:
    """Load the configuration, or print every problem and exit with status 2."""
    try:
        return load_settings(file)
    except ConfigError as exc:
        for line in exc.lines():
            click.echo(line, err=True)
        sys.exit(EXIT_BAD_CONFIG)


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
    if print_:
        click.echo(redacted_yaml(settings), nl=False)
    else:
        rules = len(settings.rules)
        robots = len(settings.notifications.robots)
        click.echo(f"{file}: valid ({rules} rules, {robots} robots)")
