"""One retry policy: exponential backoff with full jitter, bounded by a deadline.

Every edge that retries uses a ``Backoff`` from here instead of a loop of its own: the
rollback executor's reads and writes and the Kubernetes reads (``retrying``), the
Deployment informer's reconnects and the DingTalk outbox (``Backoff.delay``, as their
loops wait on their own terms). Only errors marked ``transient`` (timeouts, lost
connections, 5xx, 429) are retried; anything else, and the last transient failure once the
deadline is near, propagates to the caller. A server's ``Retry-After`` (the error's
``retry_after``) is a floor under the jittered wait. Time and randomness are parameters,
so tests need no sleeps.
"""

from __future__ import annotations

import math
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

    deadline: float = math.inf
    base: float = 0.5
    cap: float = 10.0

    def delay(
        self, attempt: int, rng: Callable[[], float], *, retry_after: float | None = None
    ) -> float:
        """The wait before retry number ``attempt + 1``; never shorter than ``retry_after``."""
        wait = rng() * min(self.cap, self.base * 2.0 ** min(attempt, 20))
        return wait if retry_after is None else max(wait, retry_after)


KUBE_READ = Backoff(deadline=3.0, base=0.2, cap=1.0)
"""Idempotent Kubernetes reads (GET, LIST): a few quick tries over a blip (a 503, a 429
with its Retry-After, a reset); a read that timed out is not tried again here, its caller
(the executor, the incident core) retries on its own schedule."""
KUBE_WATCH = Backoff(base=0.5, cap=30.0)
"""The informer's reconnects: forever, at most every 30 s."""
DINGTALK = Backoff(base=2.0, cap=300.0)
"""A robot's queue after a failed send: forever, at most every 5 minutes."""


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    policy: Backoff,
    sleep: Sleep,
    monotonic: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[RollbackdError, float], None] | None = None,
    retry_on: Callable[[RollbackdError], bool] = lambda exc: exc.transient,
) -> T:
    """Await ``call()``, again after each failure ``retry_on`` accepts (the transient ones),
    until ``policy.deadline``."""
    give_up_at = monotonic() + policy.deadline
    attempt = 0
    while True:
        try:
            return await call()
        except RollbackdError as exc:
            if not retry_on(exc):
                raise
            wait = policy.delay(attempt, rng, retry_after=exc.retry_after)
            if monotonic() + wait >= give_up_at:
                raise
            if on_retry is not None:
                on_retry(exc, wait)
            attempt += 1
            await sleep(wait)
