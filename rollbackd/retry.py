"""One retry policy: exponential backoff with full jitter, bounded by a deadline.

Every edge that retries (the rollback executor's reads and writes today) uses ``retrying``
instead of a loop of its own. Only errors marked ``transient`` (timeouts, lost connections,
5xx, 429) are retried; anything else, and the last transient failure once the deadline is
near, propagates to the caller. Time and randomness are parameters, so tests need no sleeps.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from rollbackd.errors import RollbackdError

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    """Waits of ``rng() * min(cap, base * 2**attempt)`` seconds, for at most ``deadline``."""

    deadline: float
    base: float = 0.5
    cap: float = 10.0

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        return rng() * min(self.cap, self.base * 2.0 ** min(attempt, 20))


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    policy: Backoff,
    sleep: Sleep,
    monotonic: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[RollbackdError, float], None] | None = None,
) -> T:
    """Await ``call()``, again after each transient failure, until ``policy.deadline``."""
    give_up_at = monotonic() + policy.deadline
    attempt = 0
    while True:
        try:
            return await call()
        except RollbackdError as exc:
            if not exc.transient:
                raise
            wait = policy.delay(attempt, rng)
            if monotonic() + wait >= give_up_at:
                raise
            if on_retry is not None:
                on_retry(exc, wait)
            attempt += 1
            await sleep(wait)
