"""The one retry policy every edge uses: backoff with jitter, a deadline, Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from rollbackd.errors import KubeForbidden, KubeThrottled, KubeTimeout
from rollbackd.retry import DINGTALK, KUBE_READ, KUBE_WATCH, Backoff, retrying


def run_with_failures(failures: list[Exception], policy: Backoff) -> tuple[str, list[float]]:
    """``retrying`` over a call that raises ``failures`` in turn, then answers "ok", on a
    clock that moves only by the waits."""
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    result = asyncio.run(
        retrying(call, policy=policy, sleep=sleep, monotonic=lambda: now[0], rng=lambda: 0.5)
    )
    return result, waits


def test_a_servers_retry_after_is_a_floor_under_the_jittered_wait() -> None:
    """A 429 that says "come back in 3 s" is retried after 3 s, not after the 0.1 s the
    backoff alone would wait; without a hint the wait is the jittered exponential one."""
    result, waits = run_with_failures(
        [KubeThrottled("busy", retry_after=3.0), KubeTimeout("slow")],
        Backoff(deadline=60, base=0.2, cap=5),
    )
    assert result == "ok"
    assert waits == [3.0, 0.5 * 0.2 * 2]


def test_only_transient_failures_are_retried_and_the_deadline_holds() -> None:
    """A 403 goes straight to the caller; transient failures stop being retried once the
    next wait would pass the deadline, and the last one is what the caller sees."""
    with pytest.raises(KubeForbidden):
        run_with_failures([KubeForbidden("no")], KUBE_READ)
    with pytest.raises(KubeThrottled):
        run_with_failures([KubeThrottled("busy", retry_after=5.0)] * 3, KUBE_READ)


def test_every_edge_has_its_policy_from_the_one_module() -> None:
    """Reads, the informer's reconnects and DingTalk's queue back off by the same rule:
    doubling from their base, full jitter, capped."""
    for policy, cap in ((KUBE_READ, 1.0), (KUBE_WATCH, 30.0), (DINGTALK, 300.0)):
        waits = [policy.delay(attempt, lambda: 1.0) for attempt in range(12)]
        assert waits[0] == policy.base
        assert waits[1] == policy.base * 2
        assert max(waits) == cap
