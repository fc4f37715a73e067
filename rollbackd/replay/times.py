"""The times ``rollbackd replay`` accepts: RFC 3339, ``now``, and ``now`` less a duration
(``-24h``, ``now-90m``, ``-1h30m``, in Prometheus's duration grammar)."""

from __future__ import annotations

from datetime import datetime

from rollbackd.errors import ReplayBadArguments
from rollbackd.settings import parse_duration


def parse_when(text: str, *, now: datetime, name: str) -> datetime:
    """``text`` as an aware time; ``name`` is the option, for the error."""
    value = text.strip()
    if value == "now":
        return now
    relative = value.removeprefix("now")
    if relative.startswith("-"):
        try:
            return now - parse_duration(relative[1:])
        except ValueError as exc:
            raise ReplayBadArguments(f"{name} {text!r}: {exc}") from None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ReplayBadArguments(
            f"{name} {text!r} is not a time: use RFC 3339 (2026-12-01T08:00:00Z), now, "
            "or now less a duration (-24h)"
        ) from None
    if parsed.tzinfo is None:
        raise ReplayBadArguments(f"{name} {text!r} has no timezone: add Z or +08:00")
    return parsed


def parse_span(start: str, end: str, *, now: datetime) -> tuple[datetime, datetime]:
    """``--from`` and ``--to``; the span must be forwards and not in the future."""
    first = parse_when(start, now=now, name="--from")
    last = parse_when(end, now=now, name="--to")
    if first >= last:
        raise ReplayBadArguments(f"--from {start!r} is not before --to {end!r}")
    if last > now:
        raise ReplayBadArguments(f"--to {end!r} is in the future: history ends now")
    return first, last
