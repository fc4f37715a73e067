"""rollbackd's memory, kept on each Deployment as ``rollbackd.io/*`` annotations.

No database: a restarted process or a new leader reads these back and knows which
templates it rolled back from, when the last rollback happened and until when the
Deployment cools down. The annotations travel in the same PATCH as the rollback itself,
so a rollback and its record land together or not at all.

- ``rollbackd.io/last-rollback``: JSON of the latest rollback (incident, at, revisions,
  template hashes, rule, value, threshold, dry_run);
- ``rollbackd.io/bad-templates``: pod-template-hashes rolled back from, newest last;
- ``rollbackd.io/cooldown-until``: RFC 3339 UTC time before which no automatic rollback;
- ``rollbackd.io/recent-rollbacks``: times of the latest rollbacks, for the cluster budget;
- ``rollbackd.io/messages``: which messages of the latest rollback's incident were delivered
  (``<incident> <event>,<event>``), so a new leader sends the missing ones, once;
- ``rollbackd.io/paused-owner``: JSON of the owner pause a rollback set (incident, at, owner,
  lever, the owner's revision then, what to restore), read from the Deployment alone: the
  copy the controller leaves on a ReplicaSet says nothing about the pause now.

Read fail-closed: anything unreadable is a *problem*, and a Deployment with problems gets no
automatic rollback (``state_unreadable``). The deployment controller copies these
annotations onto the current ReplicaSet, and a person's ``kubectl rollout undo`` copies an
old ReplicaSet's annotations back: ``state_of`` therefore merges every copy, so an old copy
can never make rollbackd forget a bad template, a cooldown or a rollback it made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

PREFIX = "rollbackd.io/"
ENABLED_LABEL = "rollbackd.io/enabled"
DISABLED = "rollbackd.io/disabled"
LAST_ROLLBACK = "rollbackd.io/last-rollback"
BAD_TEMPLATES = "rollbackd.io/bad-templates"
COOLDOWN_UNTIL = "rollbackd.io/cooldown-until"
RECENT_ROLLBACKS = "rollbackd.io/recent-rollbacks"
MESSAGES = "rollbackd.io/messages"
PAUSED_OWNER = "rollbackd.io/paused-owner"

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
    op: str = ""
    from_images: tuple[str, ...] = ()
    to_images: tuple[str, ...] = ()
    manual: bool = False
    note: str = ""  # an operator's --reason
    by: str = ""  # the installation (Lease namespace/name) that made it


_TYPES: dict[str, tuple[type, ...]] = {
    "incident": (str,),
    "at": (str,),
    "from_revision": (int,),
    "to_revision": (int,),
    "from_hash": (str,),
    "to_hash": (str,),
    "rule": (str,),
    "value": (int, float, type(None)),
    "threshold": (int, float, type(None)),
    "dry_run": (bool,),
    "op": (str,),
    "from_images": (list,),
    "to_images": (list,),
    "manual": (bool,),
    "note": (str,),
    "by": (str,),
}
_REQUIRED = ("incident", "at", "from_revision", "to_revision", "from_hash", "to_hash")
_HASH = re.compile(r"^[a-z0-9]{1,20}$")


def _last_rollback(text: str) -> LastRollback:
    """Parse the record strictly: a wrong type is as unreadable as broken JSON."""
    data = json.loads(text)
    if not isinstance(data, dict) or any(k not in data for k in _REQUIRED):
        raise ValueError("not a rollback record")
    values: dict[str, Any] = {}
    for f in fields(LastRollback):
        if f.name not in data:
            continue
        value = data[f.name]
        if not isinstance(value, _TYPES[f.name]) or (
            isinstance(value, bool) and bool not in _TYPES[f.name]
        ):
            raise ValueError(f"{f.name} has the wrong type")
        values[f.name] = tuple(str(v) for v in value) if isinstance(value, list) else value
    if parse_time(values["at"]) is None:
        raise ValueError("at is not a time")
    return LastRollback(**values)


def _record_time(record: LastRollback) -> datetime:
    return parse_time(record.at) or datetime.min.replace(tzinfo=UTC)


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
    """Read rollbackd's annotations; anything unreadable is a problem, never ignored."""
    problems: list[str] = []
    last = None
    if LAST_ROLLBACK in annotations:
        try:
            last = _last_rollback(annotations[LAST_ROLLBACK])
        except (ValueError, TypeError):
            problems.append(f"{LAST_ROLLBACK} is not valid JSON of a rollback")
    bad = tuple(h for h in annotations.get(BAD_TEMPLATES, "").split(",") if h)
    if not all(_HASH.match(h) for h in bad):
        problems.append(f"{BAD_TEMPLATES} holds something that is not a template hash")
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


def merge_states(own: DeploymentState, copies: Iterable[DeploymentState]) -> DeploymentState:
    """The Deployment's state, never older than any copy of it.

    Copies on ReplicaSets are older or equal; one that is newer came back from a person's
    undo of an older revision, which must not make rollbackd forget what it knew. Copies
    that cannot be read are ignored: only the Deployment's own problems fail closed.
    """
    state = own
    for copy in copies:
        if copy.problems:
            continue
        records = [s.last_rollback for s in (state, copy) if s.last_rollback is not None]
        last = max(records, key=_record_time) if records else None
        cooldown = max(
            (t for t in (state.cooldown_until, copy.cooldown_until) if t is not None),
            default=None,
        )
        bad = tuple(dict.fromkeys([*copy.bad_templates, *state.bad_templates]))
        recent = tuple(sorted({*state.recent_rollbacks, *copy.recent_rollbacks}))
        state = DeploymentState(last, bad, cooldown, recent[-MAX_RECENT:], state.problems)
    return state


def state_of(annotations: dict[str, str], copies: Iterable[dict[str, str]] = ()) -> DeploymentState:
    """Read the Deployment's state merged with the copies on its ReplicaSets."""
    own = read_state(annotations)
    return merge_states(
        own, (read_state(c) for c in copies if any(k.startswith(PREFIX) for k in c))
    )


def format_messages(incident: str, events: Iterable[str]) -> str:
    return f"{incident} {','.join(events)}"


def parse_messages(text: str) -> tuple[str, tuple[str, ...]]:
    """``rollbackd.io/messages``: the incident and its delivered events (empty if garbage)."""
    incident, _, events = text.strip().partition(" ")
    return incident, tuple(e for e in events.split(",") if e)


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


@dataclass(frozen=True)
class PausedOwner:
    """A pause of the owner's re-apply that a rollback set, and how to lift it."""

    incident: str
    at: str
    tool: str  # argocd | flux
    kind: str  # Application | Kustomization
    name: str
    namespace: str
    lever: str  # reconcile-annotation | automated-sync
    revision: str = ""  # the owner's source revision when it was paused
    restore: dict[str, Any] = field(default_factory=dict)  # Argo CD: the automated policy

    @property
    def at_time(self) -> datetime | None:
        return parse_time(self.at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)


def parse_paused_owner(text: str) -> PausedOwner | None:
    """``rollbackd.io/paused-owner``; None when empty or not rollbackd's record."""
    try:
        data = json.loads(text)
        known = {f.name for f in fields(PausedOwner)}
        return PausedOwner(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError, AttributeError):
        return None
