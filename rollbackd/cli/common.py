"""What every command shares: exit codes, options, printing with secrets masked, tables."""

from __future__ import annotations

import sys

import click

from rollbackd.errors import ConfigError
from rollbackd.model import Target
from rollbackd.runtime.logs import REDACTOR, configure_logging
from rollbackd.settings import Settings, load_settings

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

output_option = click.option(
    "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def parse_target(value: str) -> Target:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise click.BadParameter(f"{value!r} is not NAMESPACE/NAME")
    return Target(namespace, name)


target_argument = click.argument("target", callback=lambda _c, _p, v: parse_target(v))


def echo(text: str, *, err: bool = False, nl: bool = True) -> None:
    """Print for the operator, with every known secret masked (logs get the same)."""
    click.echo(REDACTOR.text(text), err=err, nl=nl)


def to_stderr(text: str) -> None:
    """What a use case says while it runs: a line on stderr, masked like all output."""
    echo(text, err=True)


def load_or_exit(file: str, *, quiet_logs: bool = True) -> Settings:
    """Load the configuration, or print every problem and exit with status 2.

    Whatever the file may hold as a secret is masked in what is printed, even when it
    was put in a key that is not secret (a token where a path belongs, say). A command
    that acts once logs warnings and worse only, to stderr, so its stdout stays its answer.
    """
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        REDACTOR.add(exc.secrets)
        for line in exc.lines():
            echo(line, err=True)
        sys.exit(EXIT_BAD_CONFIG)
    REDACTOR.add(settings.secret_values())  # the one redactor of logs and of output
    if quiet_logs:
        configure_logging(level="warning", fmt="console", stream=sys.stderr)
    return settings


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
