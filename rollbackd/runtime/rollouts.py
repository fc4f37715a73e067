"""The release desk: what the watch saw of releases, carried from its thread to the loop.

Every replica keeps the releases in flight (``rollbacks/rollouts.py``), so that a new leader
knows them; only the leader speaks and judges. Deploy-status messages go out through the
incident runner's voice (the leader check, the routing, the rate limit and the digests of
every message); a stall's verdicts go into the incident core like a webhook's. An incident
names its release only when a robot was given that release's messages: a group is never
pointed at a deploy it did not hear of.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from rollbackd.model import Obj, Verdict
from rollbackd.ports import Clock
from rollbackd.rollbacks.rollouts import Observed, Rollouts
from rollbackd.runtime.incidents import IncidentRunner
from rollbackd.runtime.logs import get_logger

log = get_logger(__name__)


class ReleaseDesk:
    """Takes watch events on the watch thread and acts on them in the daemon's loop."""

    def __init__(
        self,
        rollouts: Rollouts,
        *,
        clock: Clock,
        leading: Callable[[], bool],
        judge: Callable[[list[Verdict]], Coroutine[Any, Any, None]],
    ) -> None:
        self.rollouts = rollouts
        self._clock = clock
        self._leading = leading
        self._judge = judge
        self._loop: asyncio.AbstractEventLoop | None = None
        self._incidents: IncidentRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def open(self, incidents: IncidentRunner) -> None:
        """From now on, in the running loop: messages through ``incidents``, whose messages
        are threaded with their releases."""
        self._loop = asyncio.get_running_loop()
        self._incidents = incidents
        incidents.threads = self.rollouts.thread

    def observe(self, old: Obj | None, new: Obj | None) -> None:
        """One watch event (the watch thread)."""
        seen = self.rollouts.observe(old, new, now=self._clock.now())
        if (seen.messages or seen.verdicts) and self._loop is not None:
            self._loop.call_soon_threadsafe(self._carry, seen)

    def _carry(self, seen: Observed) -> None:
        if self._incidents is None or not self._leading():
            return
        for facts in seen.messages:
            log.info(
                "release_observed",
                release=facts.id,
                kind=str(facts.event),
                target=str(facts.target),
                revision=facts.to_revision,
                images=list(facts.to_images),
            )
            if self._incidents.say(facts):
                self.rollouts.heard(facts)
        if seen.verdicts:
            task = asyncio.create_task(self._judge(list(seen.verdicts)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
