"""The system clock behind the ``Clock`` port, and the grid an interval job is due on."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rollbackd.model import Instant

# A tick found this close before a grid time is taken as that time's tick: the scheduler
# fires on the wall clock and the grid is counted on the monotonic one.
EARLY_SLACK_SECONDS = 0.005


class SystemClock:
    """Monotonic seconds for durations, UTC wall time for people."""

    def now(self) -> Instant:
        return Instant(monotonic=time.monotonic(), wall=datetime.now(UTC))


@dataclass(frozen=True)
class TickGrid:
    """The times an interval job is due: ``origin + k * interval`` for k = 0, 1, 2...

    A tick starts a few milliseconds after its time, by a varying amount. Judged on the
    time it was due (as Prometheus judges a rule group on its fixed timestamps), a hold of
    ``for`` seconds ends exactly at the tick ``for`` after it began, never one tick later.
    """

    origin: Instant
    interval: float

    def due(self, now: Instant) -> Instant:
        """The latest grid time at or before ``now``: the time the running tick was due."""
        elapsed = now.monotonic - self.origin.monotonic + EARLY_SLACK_SECONDS
        offset = max(0, math.floor(elapsed / self.interval)) * self.interval
        return Instant(self.origin.monotonic + offset, self.origin.wall + timedelta(seconds=offset))
