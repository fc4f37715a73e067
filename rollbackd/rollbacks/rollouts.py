"""Releases as the watch sees them: deploy-status messages and stalled rollouts (pure).

Every watch event of a managed Deployment goes through ``Rollouts.observe``, which answers
what people should hear and what the incident core should judge:

- A template change (a higher ``metadata.generation`` with another template) begins a
  release, told as ``deploy_started`` once the controller observed it (the
  ``deployment.kubernetes.io/revision`` annotation is then the new one). It ends, by
  ``kubectl rollout status``'s rules, as ``deploy_succeeded`` or, when its Progressing
  condition says ``ProgressDeadlineExceeded``, ``deploy_failed``. A workload first seen
  in a LIST has no release (its start is unknown), and rollbackd's own undo (the patch
  that also writes ``rollbackd.io/last-rollback``) is told by its incident, not here.
- A stall (``ProgressDeadlineExceeded`` on the current generation) is a firing verdict of
  the built-in rule ``progress-deadline``, unless ``rollback.on_progress_deadline`` is
  ignore, dated when the watch saw it turn (a stall found already there: when its condition
  turned, by the API server's clock, never later than now); the finished rollout
  that follows (or the workload's deletion) resolves it. The core then judges it like any
  breach, through every guard: the change window included. A stall seen first in a LIST
  counts too, and ``stalls`` gives a new leader the ones going on: an incident core that
  forgot a stall could take a later change for the cause of a later breach, and undo it
  back to the stalled template.
- ``thread`` names, on each message of an incident, the release of the revision it is
  about, so that a group reads the breach under the deploy that caused it; only a release
  a group ``heard`` of: nobody is pointed at a deploy they were not told.

Called from the watch thread; the caller passes ``now`` and hands the answers to the loop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rollbackd.model import (
    DEPLOY_EVENTS,
    Event,
    Incident,
    Instant,
    Obj,
    RuleState,
    Target,
    Transition,
    Verdict,
    new_incident_id,
)
from rollbackd.rollbacks.plan import CHANGE_CAUSE, REVISION, owner_of_workload, template_images
from rollbackd.rollbacks.status import progressing, rollout_status
from rollbackd.settings import RollbackSettings
from rollbackd.settings.rules import BUILT_IN_RULE
from rollbackd.state.annotations import LAST_ROLLBACK, parse_time
from rollbackd.state.changes import workload_digest

PROGRESS_DEADLINE = BUILT_IN_RULE
"""The built-in rule a stalled rollout breaches."""

MAX_THREADS = 2000  # incidents remembered with their release; the oldest are forgotten


@dataclass(frozen=True, slots=True)
class Release:
    """One rollout of one template, from its change to its end."""

    id: str
    digest: str
    from_revision: int | None
    from_images: tuple[str, ...]
    since: datetime
    quiet: bool = False  # rollbackd's own undo: its incident tells it
    started: bool = False  # deploy_started is due no more


@dataclass(frozen=True, slots=True)
class _Latest:
    """The last release of a workload that began, and whether a group heard of it."""

    id: str
    digest: str
    heard: bool = False


@dataclass(frozen=True, slots=True)
class Observed:
    """What one watch event means: messages to send and verdicts for the core."""

    messages: tuple[Incident, ...] = ()
    verdicts: tuple[Verdict, ...] = ()


def revision_of(obj: Obj) -> int | None:
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, "")
    return int(text) if str(text).isdigit() else None


def images_of(obj: Obj) -> tuple[str, ...]:
    return template_images((obj.get("spec") or {}).get("template") or {})


def observed(obj: Obj) -> bool:
    """The controller has seen the current spec (``kubectl rollout status``'s first rule)."""
    return int((obj.get("status") or {}).get("observedGeneration") or 0) >= _generation(obj)


def stall_of(obj: Obj) -> str:
    """The Progressing condition's message when the current rollout stalled (kubectl's
    failed rollout), else ''."""
    if not rollout_status(obj).failed:
        return ""
    return str(progressing(obj).get("message") or "ProgressDeadlineExceeded")


class Rollouts:
    """The release in flight of every managed Deployment, and the stalls being reported."""

    def __init__(self, rollback: Callable[[], RollbackSettings] = RollbackSettings) -> None:
        self._rollback = rollback  # read at each event: a reload changes it live
        self._lock = threading.Lock()
        self._releases: dict[Target, Release] = {}
        self._current: dict[Target, str] = {}  # the template digest since its last change
        self._stalled: dict[Target, Verdict] = {}  # the stalls going on, as reported
        self._latest: dict[Target, _Latest] = {}
        self._threads: OrderedDict[str, str] = OrderedDict()  # incident -> release

    def observe(self, old: Obj | None, new: Obj | None, *, now: Instant) -> Observed:
        obj = new or old
        if obj is None:
            return Observed()
        target = Target(obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._lock:
            if new is None:
                self._releases.pop(target, None)
                self._current.pop(target, None)
                self._latest.pop(target, None)
                return Observed(verdicts=self._resolved(target, now, "the Deployment was deleted"))
            if old is not None and _generation(new) > _generation(old):  # the spec changed
                digest = self._current[target] = workload_digest(new)
                if workload_digest(old) != digest:  # ... and with it the template
                    self._releases[target] = Release(
                        new_incident_id(now.wall, seed=f"{target}@{_generation(new)}"),
                        digest,
                        revision_of(old),
                        images_of(old),
                        now.wall,
                        quiet=_own_undo(old, new),
                    )
            messages = self._progress(target, new)
            return Observed(messages, self._stall(target, old, new, now))

    def _progress(self, target: Target, new: Obj) -> tuple[Incident, ...]:
        """The release's messages this event makes due, in the order they happened."""
        release = self._releases.get(target)
        if release is None or release.digest != self._current[target] or not observed(new):
            return ()
        due: list[Event] = []
        if not release.started:
            due.append(Event.DEPLOY_STARTED)
            if not release.quiet:
                self._latest[target] = _Latest(release.id, release.digest)
        status = rollout_status(new)
        if status.done:
            due.append(Event.DEPLOY_FAILED if status.failed else Event.DEPLOY_SUCCEEDED)
            del self._releases[target]
        else:
            self._releases[target] = replace(release, started=True)
        if release.quiet:
            return ()
        return tuple(
            self._message(
                release,
                new,
                event,
                reason="" if event is Event.DEPLOY_STARTED else status.message,
                note=stall_of(new) if event is Event.DEPLOY_FAILED else "",
            )
            for event in due
        )

    def _message(
        self, release: Release, new: Obj, event: Event, *, reason: str, note: str
    ) -> Incident:
        annotations = new["metadata"].get("annotations") or {}
        owner = owner_of_workload(new, argocd_namespace=self._rollback().owners.argocd_namespace)
        return Incident(
            id=release.id,
            event=event,
            target=Target(new["metadata"]["namespace"], new["metadata"]["name"]),
            since=release.since,
            reason=reason,
            note=note,
            from_revision=release.from_revision,
            to_revision=revision_of(new),
            from_images=release.from_images,
            to_images=images_of(new),
            owner=owner.label if owner is not None else "",
            change_cause=str(annotations.get(CHANGE_CAUSE, "")),
        )

    def _stall(
        self, target: Target, old: Obj | None, new: Obj, now: Instant
    ) -> tuple[Verdict, ...]:
        if target in self._stalled:
            status = rollout_status(new)
            if status.done and not status.failed:
                return self._resolved(target, now, status.message)
            return ()
        stalled, action = stall_of(new), self._rollback().on_progress_deadline
        if not stalled or action == "ignore":
            return ()
        seconds = int((new.get("spec") or {}).get("progressDeadlineSeconds") or 600)
        began = now.wall  # seen turning now; a stall found already there dates itself
        if old is None or stall_of(old):
            began = min(began, _stalled_since(new) or began)
        verdict = _verdict(
            target,
            now,
            began=began,
            action=action,
            threshold=float(seconds),
            note=f"the rollout stalled: no progress for {seconds}s "
            f"(ProgressDeadlineExceeded: {stalled})",
        )
        self._stalled[target] = verdict
        return (verdict,)

    def _resolved(self, target: Target, now: Instant, note: str) -> tuple[Verdict, ...]:
        if self._stalled.pop(target, None) is None:
            return ()
        return (_verdict(target, now, began=None, action="", threshold=0.0, note=note),)

    def stalls(self) -> tuple[Verdict, ...]:
        """The stalls going on, as first reported: a new leader's incident core hears them
        again, so that it never judges a later change as if nothing had stalled before."""
        with self._lock:
            return tuple(self._stalled.values())

    def heard(self, release: Incident) -> None:
        """A group was given this release's message: incidents about it may name it."""
        with self._lock:
            latest = self._latest.get(release.target)
            if latest is not None and latest.id == release.id:
                self._latest[release.target] = replace(latest, heard=True)

    def thread(self, facts: Incident) -> Incident:
        """``facts`` with the release of the revision its incident is about, if a group
        heard of it: the release the workload runs when the incident first speaks."""
        if facts.event in DEPLOY_EVENTS:
            return facts
        with self._lock:
            release = self._threads.get(facts.id)
            if release is None:
                found = self._latest.get(facts.target)
                if found is None or not found.heard:
                    return facts
                if found.digest != self._current.get(facts.target):
                    return facts
                release = self._threads[facts.id] = found.id
                while len(self._threads) > MAX_THREADS:
                    self._threads.popitem(last=False)
        return replace(facts, release=release)


def _generation(obj: Obj) -> int:
    return int(obj["metadata"].get("generation") or 0)


def _own_undo(old: Obj, new: Obj) -> bool:
    """The change is rollbackd's undo: its record came with it, in the same request."""
    before: dict[str, Any] = old["metadata"].get("annotations") or {}
    after: dict[str, Any] = new["metadata"].get("annotations") or {}
    return bool(after.get(LAST_ROLLBACK)) and before.get(LAST_ROLLBACK) != after.get(LAST_ROLLBACK)


def _stalled_since(obj: Obj) -> datetime | None:
    """When the Progressing condition turned, by the API server's clock."""
    return parse_time(str(progressing(obj).get("lastTransitionTime") or ""))


def _verdict(
    target: Target,
    now: Instant,
    *,
    began: datetime | None,
    action: str,
    threshold: float,
    note: str,
) -> Verdict:
    """A verdict of progress-deadline: firing since ``began``, or (None) resolved."""
    firing = began is not None
    return Verdict(
        rule=PROGRESS_DEADLINE,
        target=target,
        value=None,
        op="",
        threshold=threshold,
        state=RuleState.FIRING if firing else RuleState.INACTIVE,
        since=now,
        transition=Transition.FIRING if firing else Transition.RESOLVED,
        breaching=firing,
        source="kubernetes",
        action=action or "notify",
        note=note,
        began=began,
    )
