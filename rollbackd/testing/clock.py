"""A clock that tests move by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from rollbackd.model import Instant

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """Starts at ``start`` seconds; ``advance`` moves monotonic and wall time together."""

    def __init__(self, start: float = 1000.0) -> None:
        self.seconds = start

    def now(self) -> Instant:
        return Instant(self.seconds, _EPOCH + timedelta(seconds=self.seconds))

    def advance(self, seconds: float) -> Instant:
        self.seconds += seconds
        return self.now()

    async def sleep(self, seconds: float) -> None:
        """An instant sleep that moves time forward, for code that waits on this clock."""
        self.seconds += max(seconds, 0.0)
        await asyncio.sleep(0)

    def wall_seconds(self) -> float:
        """Unix seconds of the wall clock, for servers that judge times (the fake robot)."""
        return self.now().wall.timestamp()
