"""A clock that tests move by hand."""

from __future__ import annotations

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
