"""The system clock behind the ``Clock`` port."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from rollbackd.model import Instant


class SystemClock:
    """Monotonic seconds for durations, UTC wall time for people."""

    def now(self) -> Instant:
        return Instant(monotonic=time.monotonic(), wall=datetime.now(UTC))
