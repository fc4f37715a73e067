"""rollbackd's memory, kept on each Deployment as ``rollbackd.io/*`` annotations.

No database: a restarted process or a new leader reads these back and knows which
templates it rolled back from, when the last rollback happened and until when the
Deployment cools down. The annotations travel in the same PATCH as the rollback itself,
so a rollback and its record land together or not at all.

- ``rollbackd.io/last-rollback``: JSON of the latest rollback (incident, at, revisions,
  template hashes, rule, value, threshold, dry_run);
- ``rollbackd.io/bad-templates``: pod-template-hashes rolled back from, newest last;
- ``rollbackd.io/cooldown-until``: RFC 3339 UTC time before which no automatic rollback;
- ``rollbackd.io/recent-rollbacks``: times of the latest rollbacks, for the cluster budget.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

PREFIX = "rollbackd.io/"
ENABLED_LABEL = "rollbackd.io/enabled"
DISABLED = "rollbackd.io/disabled"
LAST_ROLLBACK = "rollbackd.io/last-rollback"
BAD_TEMPLATES = "rollbackd.io/bad-templates"
COOLDOWN_UNTIL = "rollbackd.io/cooldown-until"
RECENT_ROLLBACKS = "rollbackd.io/recent-rollbacks"

MAX_BAD_TEMPLATES = 20
MAX_RECENT = 10


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LastRollback:
    """What the latest rollback of a Deployment did, and why."""

    incident: str
    at: str
    from_revision: int
    to_revision: int
    from_hash: str
    to_hash: str
    rule: str
    value: float | None
    threshold: float | None
    dry_run: bool = False


@dataclass(frozen=True)
class DeploymentState:
    """Everything rollbackd remembers about one Deployment."""

    last_rollback: LastRollback | None = None
    bad_templates: tuple[str, ...] = ()
    cooldown_until: datetime | None = None
    recent_rollbacks: tuple[datetime, ...] = field(default_factory=tuple)
    problems: tuple[str, ...] = ()  # annotations that could not be read, for logs

    def cooling_down(self, now: datetime) -> bool:
        return self.cooldown_until is not None and now < self.cooldown_until

    def rollbacks_since(self, since: datetime) -> int:
        return sum(at >= since for at in self.recent_rollbacks)


def read_state(annotations: dict[str, str]) -> DeploymentState:
    """Read rollbackd's annotations; anything unreadable is reported, never fatal."""
    problems: list[str] = []
    last = None
    if LAST_ROLLBACK in annotations:
        try:
            data = json.loads(annotations[LAST_ROLLBACK])
            last = LastRollback(
                **{k: data[k] for k in LastRollback.__dataclass_fields__ if k in data}
            )
        except (ValueError, TypeError):
            problems.append(f"{LAST_ROLLBACK} is not valid JSON of a rollback")
    bad = tuple(h for h in annotations.get(BAD_TEMPLATES, "").split(",") if h)
    cooldown = None
    if COOLDOWN_UNTIL in annotations:
        cooldown = parse_time(annotations[COOLDOWN_UNTIL])
        if cooldown is None:
            problems.append(f"{COOLDOWN_UNTIL} is not an RFC 3339 time")
    recent = []
    for text in filter(None, annotations.get(RECENT_ROLLBACKS, "").split(",")):
        parsed = parse_time(text)
        if parsed is None:
            problems.append(f"{RECENT_ROLLBACKS} holds {text!r}, not a time")
        else:
            recent.append(parsed)
    return DeploymentState(last, bad, cooldown, tuple(recent), tuple(problems))


def after_rollback(
    state: DeploymentState,
    rollback: LastRollback,
    *,
    now: datetime,
    cooldown: timedelta,
    automatic: bool = True,
) -> dict[str, str]:
    """The annotations that record ``rollback``, to write with the rollback itself.

    Only automatic rollbacks count against the cluster budget.
    """
    bad = [h for h in state.bad_templates if h != rollback.from_hash] + [rollback.from_hash]
    recent = [*state.recent_rollbacks, *([now] if automatic else [])][-MAX_RECENT:]
    return {
        LAST_ROLLBACK: json.dumps(asdict(rollback), separators=(",", ":"), sort_keys=True),
        BAD_TEMPLATES: ",".join(bad[-MAX_BAD_TEMPLATES:]),
        COOLDOWN_UNTIL: format_time(now + cooldown),
        RECENT_ROLLBACKS: ",".join(format_time(at) for at in recent),
    }
