"""The daemon's process: how long an orderly shutdown may take, its bounded steps, and
garbage collection kept off the evaluation path."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.wiring import RELEASE_SECONDS
from rollbackd.settings import Settings

log = get_logger(__name__)

SHUTDOWN_STEP_SECONDS = 10.0


def shutdown_seconds(settings: Settings) -> float:
    """The longest an orderly shutdown takes, the sum of its steps' bounds; the pod's
    ``terminationGracePeriodSeconds`` must be at least this."""
    return sum(
        (
            SHUTDOWN_STEP_SECONDS,  # the leader label off
            SHUTDOWN_STEP_SECONDS,  # the listener
            # the rollback in flight: its rollout, then its record and Event
            settings.rollback.wait_for_rollout.total_seconds() + SHUTDOWN_STEP_SECONDS,
            SHUTDOWN_STEP_SECONDS,  # the outboxes
            # the Lease: the renewal round in flight (plus a second), then the release
            settings.leader_election.renew_deadline.total_seconds() + 1 + RELEASE_SECONDS,
        )
    )


def tune_gc() -> None:
    """Keep garbage collection off the evaluation path.

    Each tick parses a result per rule (10,000 series each at scale) into short-lived
    objects; with the default gen-0 threshold of 700 that triggers hundreds of collections
    that walk everything alive, the Deployment cache included. Objects alive after start-up
    are frozen out of collection and young collections run less often; cycles are still
    collected.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def bounded(step: Any, name: str) -> None:
    try:
        await asyncio.wait_for(step, SHUTDOWN_STEP_SECONDS)
    except TimeoutError:
        log.error("shutdown_step_timed_out", step=name)
