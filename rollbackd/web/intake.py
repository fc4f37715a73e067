"""The Alertmanager intake: a bounded queue of accepted payloads, and the task that
turns them into verdicts for the incident core on the daemon's loop."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from rollbackd.model import Instant, Target, Verdict
from rollbackd.ports import Clock
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AlertmanagerSettings
from rollbackd.signals.alertmanager import Deduplicator, Intake, Payload, interpret

log = get_logger(__name__)
_written = logging.getLogger(__name__)  # where log's lines go: asked whether INFO is written

VerdictSink = Callable[[list[Verdict]], Awaitable[None]]
BATCH = 256
"""Payloads interpreted in one turn of the intake at most."""


class WebhookIntake:
    """A bounded queue of accepted payloads and the task that turns them into verdicts."""

    def __init__(
        self,
        settings: AlertmanagerSettings,
        *,
        clock: Clock,
        telemetry: Telemetry,
        sink: VerdictSink,
        capacity: int = 1000,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._telemetry = telemetry
        self._sink = sink
        self._queue: asyncio.Queue[Payload] = asyncio.Queue(maxsize=capacity)
        self._dedup = Deduplicator()

    def offer(self, payload: Payload) -> bool:
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            return False
        return True

    async def drain(self) -> None:
        """Wait until every accepted payload has been processed (tests, shutdown)."""
        await self._queue.join()

    async def run(self) -> None:
        """Interpret the payloads as they come: all those waiting at once in one turn."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.process(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def process(self, batch: list[Payload]) -> None:
        """Payloads received together, handed on as verdicts in order; a (rule, target)
        seen again starts a new hand-over, so each one the core sees is what a payload
        could hold. One bad payload or hand-over is logged and the others go on."""
        counts: Counter[tuple[str, str]] = Counter()
        handover: list[Verdict] = []
        seen: set[tuple[str, Target]] = set()
        now = self._clock.now()  # the batch is read at one moment
        for payload in batch:
            try:
                intake = self._interpret(payload, now)
            except Exception:  # one bad payload must not stop the intake
                log.exception("alertmanager_payload_failed", group_key=payload.groupKey)
                continue
            counts.update(intake.counts)
            for verdict in intake.verdicts:
                key = (verdict.rule, verdict.target)
                if key in seen:
                    await self._hand_over(handover)
                    handover, seen = [], set()
                handover.append(verdict)
                seen.add(key)
        await self._hand_over(handover)
        for (status, action), count in counts.items():
            self._telemetry.alertmanager_alerts.labels(status, action).inc(count)

    def _interpret(self, payload: Payload, now: Instant) -> Intake:
        intake = interpret(payload, settings=self._settings, dedup=self._dedup, now=now)
        if intake.truncated:
            log.warning(
                "alertmanager_alerts_truncated",
                truncated=intake.truncated,
                group_key=payload.groupKey,
            )
        if _written.isEnabledFor(logging.INFO):  # one line per payload, built only if written
            log.info(
                "alertmanager_payload",
                group_key=payload.groupKey,
                status=payload.status,
                alerts=len(payload.alerts),
                verdicts=len(intake.verdicts),
            )
        return intake

    async def _hand_over(self, verdicts: list[Verdict]) -> None:
        if not verdicts:
            return
        try:
            await self._sink(verdicts)
        except Exception:  # the next payloads still reach the core
            log.exception("alertmanager_verdicts_failed", verdicts=len(verdicts))
