"""Outboxes: one queue per robot, so that notifications never block a rollback.

``post`` only appends. Each robot's ``run`` task sends at most what DingTalk allows: a token
bucket of ``burst`` messages refilled at ``per_minute`` (4 + 15 = 19 in any minute, under
DingTalk's 20, whose excess throttles a robot for ten minutes). Up to a burst of waiting
messages go out one by one as tokens come; when more pile up, all that are waiting leave
together as digests that still name every incident with its latest outcome. A full queue
folds its oldest messages into a summary instead of dropping them.

Failures: transient ones (network, 5xx, errcode -1) are retried with exponential backoff
and full jitter; a rate-limit answer pauses the robot for at least a minute, longer if it
persists; permanent ones (bad token, bad signature, disabled robot) are not retried, and are
logged with their code and incident ids and counted in ``notifications_total``. Anything
unexpected (a sender bug, an answer nobody foresaw) is logged with its traceback and
retried like a transient failure; ``run`` restarts its loop if the loop itself fails, with
the queue intact, so a robot never goes silent for the life of the process.

A replica that takes the Lease over from a leader that spoke within the last minute starts
with an empty bucket (``after_takeover``): that leader may have just spent its minute, and together
they stay within DingTalk's limit.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from rollbackd.errors import DingTalkError, DingTalkRateLimited, DingTalkUnexpected
from rollbackd.model import Incident, Message
from rollbackd.notifications.render import MAX_BYTES, Renderer
from rollbackd.ports import Clock, Notifier
from rollbackd.retry import DINGTALK
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import NotificationSettings

log = get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Sent = Callable[[str, Message], None]
"""Told of every message a robot is done with (delivered, or refused for good)."""


@dataclass
class _Pending:
    message: Message
    at_all: bool


class TokenBucket:
    """``burst`` tokens, refilled continuously at ``per_minute``; time from ``clock``."""

    def __init__(self, *, burst: int, per_minute: float, clock: Clock) -> None:
        self._burst, self._rate = float(burst), per_minute / 60.0
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock.now().monotonic

    def wait_time(self) -> float:
        """Seconds until one token is available (0 when one is)."""
        now = self._clock.now().monotonic
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate

    def take(self) -> None:
        self._tokens -= 1

    def empty(self) -> None:
        """No tokens now; they refill at the usual rate."""
        self.wait_time()
        self._tokens = min(self._tokens, 0.0)

    def available(self) -> int:
        """Whole tokens available now."""
        self.wait_time()
        return int(self._tokens)


class Outbox:
    """The queue and sender of one robot."""

    def __init__(
        self,
        name: str,
        sender: Notifier,
        renderer: Renderer,
        *,
        clock: Clock,
        sleep: Sleep,
        telemetry: Telemetry,
        burst: int = 4,
        per_minute: float = 15,
        capacity: int = 500,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.sender = sender  # replaceable on reload; the queue stays
        self.renderer = renderer
        self._clock = clock
        self._sleep = sleep
        self._telemetry = telemetry
        self._bucket = TokenBucket(burst=burst, per_minute=per_minute, clock=clock)
        self._burst = burst
        self._capacity = capacity
        self._rng = rng
        self._pending: list[_Pending] = []
        self._folded = 0  # messages folded into summaries when the queue overflowed
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._failures = 0
        self._paused_until = 0.0
        self.on_sent: Sent | None = None

    @property
    def depth(self) -> int:
        return len(self._pending)

    def post(self, message: Message, *, at_all: bool = False) -> None:
        """Queue a message; returns at once."""
        self._pending.append(_Pending(message, at_all))
        if len(self._pending) > self._capacity:
            self._fold()
        self._telemetry.notification_queue_depth.labels(self.name).set(len(self._pending))
        self._idle.clear()
        self._wake.set()

    def _fold(self) -> None:
        """Merge the oldest half into summaries: nothing is dropped without a trace."""
        half = self._pending[: self._capacity // 2]
        digests = self.renderer.digests([p.message for p in half], limit=MAX_BYTES - 2000)
        at_all = any(p.at_all for p in half)
        self._folded += len(half)
        log.warning(
            "notification_queue_folded",
            robot=self.name,
            folded=len(half),
            incidents=len({i for p in half for i in p.message.incidents}),
        )
        self._pending = [_Pending(d, at_all) for d in digests] + self._pending[len(half) :]

    async def drain(self, deadline: float) -> bool:
        """Wait until everything queued was sent or given up, at most ``deadline`` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), deadline)
        except TimeoutError:
            log.error(
                "notifications_not_drained",
                robot=self.name,
                pending=len(self._pending),
                incidents=sorted({i for p in self._pending for i in p.message.incidents}),
            )
            return False
        return True

    def after_takeover(self) -> None:
        """The Lease was taken over from a leader that spoke within the minute: start as
        if a whole burst had just been sent."""
        self._bucket.empty()

    async def run(self) -> None:
        """Send forever; a failure of the loop itself is logged and the loop restarted."""
        while True:
            try:
                await self._send_all()
            except Exception:  # supervision: the queue stays, the robot keeps sending
                log.exception("notification_loop_failed", robot=self.name)
                self._failures += 1
                await self._sleep(self._rng() * min(2.0 * 2.0 ** min(self._failures, 8), 60.0))

    async def _send_all(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = max(self._bucket.wait_time(), self._paused_until - self._clock.now().monotonic)
            if wait > 0:
                await self._sleep(wait)
                continue
            if len(self._pending) <= self._burst:
                # No more than a burst waiting: one by one, in order, as tokens come.
                batch, self._pending = [self._pending[0]], self._pending[1:]
                outgoing = batch[0]
            else:  # backed up: everything waiting leaves together as digests
                batch, self._pending = self._pending, []
                outgoing = self._digest(batch)
            self._bucket.take()
            self._telemetry.notification_queue_depth.labels(self.name).set(len(self._pending))
            await self._deliver(outgoing, batch)

    def _digest(self, batch: list[_Pending]) -> _Pending:
        digests = self.renderer.digests([p.message for p in batch], limit=MAX_BYTES - 2000)
        at_all = any(p.at_all for p in batch)
        # Beyond the first, digests wait their turn for a token at the head of the queue.
        self._pending = [_Pending(d, at_all) for d in digests[1:]] + self._pending
        return _Pending(digests[0], at_all)

    async def _send(self, outgoing: _Pending) -> None:
        """The sender's ``send``, with anything unforeseen made a transient error."""
        try:
            await self.sender.send(outgoing.message, at_all=outgoing.at_all)
        except DingTalkError:
            raise
        except Exception as exc:  # an answer or a bug nobody foresaw: logged, then retried
            log.exception("notification_failed_unexpectedly", robot=self.name)
            raise DingTalkUnexpected(f"robot {self.name}: {type(exc).__name__}") from exc

    async def _deliver(self, outgoing: _Pending, batch: list[_Pending]) -> None:
        message = outgoing.message
        try:
            await self._send(outgoing)
        except DingTalkError as exc:
            self._telemetry.notifications.labels(self.name, exc.code).inc()
            if not exc.transient:
                log.error(
                    "notification_dropped",
                    robot=self.name,
                    code=exc.code,
                    error=exc.message,
                    incidents=list(message.incidents),
                )
                self._done(batch)
                return
            self._failures += 1
            delay = self._backoff(exc)
            log.warning(
                "notification_retry",
                robot=self.name,
                code=exc.code,
                attempt=self._failures,
                retry_in=round(delay, 1),
                incidents=len(message.incidents),
            )
            self._pending = [outgoing, *self._pending]
            self._paused_until = self._clock.now().monotonic + delay
            return
        self._failures = 0
        self._done(batch)
        self._telemetry.notifications.labels(self.name, "ok").inc()
        log.info(
            "notification_sent",
            robot=self.name,
            kind=message.event,
            incidents=list(message.incidents)[:20],
            merged=len(batch),
        )

    def _done(self, batch: list[_Pending]) -> None:
        if self.on_sent is not None:
            for pending in batch:
                self.on_sent(self.name, pending.message)

    def _backoff(self, error: DingTalkError) -> float:
        """The one retry policy (``rollbackd.retry.DINGTALK``); a rate limit waits at least a
        minute, doubling, as DingTalk throttles a robot for 10 minutes."""
        hint = error.retry_after
        if isinstance(error, DingTalkRateLimited):
            hint = max(hint or 0.0, min(60.0 * 2.0 ** min(self._failures - 1, 10), 600.0))
        return DINGTALK.delay(self._failures - 1, self._rng, retry_after=hint)


class Notifications:
    """Routes incidents to robots by their labels and events; never blocks the caller."""

    def __init__(
        self, settings: NotificationSettings, renderer: Renderer, outboxes: dict[str, Outbox]
    ) -> None:
        self._settings = settings
        self._renderer = renderer
        self._outboxes = outboxes
        self._waiting: dict[tuple[str, str], set[str]] = {}
        self.on_delivered: Callable[[str, str], None] | None = None
        """Told (incident, event) once every robot is done with that message."""
        for outbox in outboxes.values():
            outbox.on_sent = self._sent

    def _sent(self, robot: str, message: Message) -> None:
        for incident in message.incidents:
            key = (incident, message.event)
            waiting = self._waiting.get(key)
            if waiting is None:
                continue
            waiting.discard(robot)
            if not waiting:
                del self._waiting[key]
                self._delivered(*key)

    def _delivered(self, incident: str, event: str) -> None:
        if self.on_delivered is not None:
            self.on_delivered(incident, event)

    def notify(self, incident: Incident) -> list[str]:
        """Queue the incident's message for every robot it concerns; returns their names."""
        robots = [
            robot
            for robot in self._settings.robots
            if incident.event in (self._settings.events if robot.events is None else robot.events)
        ]
        if not robots:
            self._delivered(incident.id, str(incident.event))  # nothing to deliver
            return []
        message = self._renderer.render(incident)
        if message.problem:
            with structlog.contextvars.bound_contextvars(incident_id=incident.id):
                log.error("template_failed", kind=str(incident.event), error=message.problem)
        robots = [
            robot
            for robot in robots
            if all(
                re.fullmatch(pattern, message.labels.get(label, ""))
                for label, pattern in robot.match.items()
            )
        ]
        chosen = [robot.name for robot in robots]
        if chosen:
            self._waiting[(incident.id, message.event)] = set(chosen)
        else:
            self._delivered(incident.id, message.event)
        for robot in robots:
            self._outboxes[robot.name].post(message, at_all=incident.event in robot.at_all_on)
        with structlog.contextvars.bound_contextvars(incident_id=incident.id):
            log.info("notification_queued", kind=str(incident.event), robots=chosen)
        return chosen

    async def drain(self, deadline: float) -> bool:
        results = await asyncio.gather(*(o.drain(deadline) for o in self._outboxes.values()))
        return all(results)

    def after_takeover(self) -> None:
        """The Lease was taken over from a leader that spoke within the minute: every
        robot starts with an empty bucket."""
        for outbox in self._outboxes.values():
            outbox.after_takeover()
