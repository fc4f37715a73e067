"""``replay``: what rollbackd would have done over a span of Prometheus history."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from rollbackd.cli.common import (
    EXIT_BAD_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    echo,
    load_or_exit,
)
from rollbackd.errors import ReplayBadArguments, RollbackdError
from rollbackd.replay.history import replay_history
from rollbackd.replay.report import dumps, to_html, to_table
from rollbackd.replay.times import parse_span


def _progress_bar(done: float, total: float) -> None:
    share = done / total if total else 1.0
    bar = "#" * int(share * 30)
    click.echo(f"\rreplay [{bar:<30}] {share:4.0%}", err=True, nl=share >= 1)


@click.command("replay")
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
