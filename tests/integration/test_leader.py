"""Lease leader election against the fake API server, with client-go's rules."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client, config
from structlog.testing import capture_logs

from rollbackd.runtime.leader import LEADER_LABEL, LeaderElector, LeaderLabel
from rollbackd.settings import LeaderElectionSettings
from rollbackd.testing.kube import Fault, seed
from tests.conftest import Kube

pytestmark = pytest.mark.integration

FAST = LeaderElectionSettings(lease_duration="2s", renew_deadline="1500ms", retry_period="200ms")


def elector(kube: Kube, name: str) -> LeaderElector:
    return LeaderElector(kube.api, FAST, identity=name)


async def until_leading(candidate: LeaderElector, seconds: float) -> bool:
    """Wait (in 50 ms steps) until ``candidate`` leads; whether it did within ``seconds``."""
    for _ in range(int(seconds / 0.05)):
        if candidate.is_leader:
            return True
        await asyncio.sleep(0.05)
    return candidate.is_leader


def test_one_leader_then_a_clean_handover(kube: Kube) -> None:
    """Two contenders: one leads; when it releases, the other takes over at once."""
    seed.create_namespace(kube.api, "rollbackd")
    first, second = elector(kube, "a"), elector(kube, "b")

    async def scenario() -> None:
        stop_first, stop_second = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(first.run(stop_first))]
        await asyncio.sleep(0.5)
        tasks.append(asyncio.create_task(second.run(stop_second)))
        await asyncio.sleep(1.0)
        assert first.is_leader
        assert not second.is_leader
        stop_first.set()
        await first.release()
        for _ in range(20):
            await asyncio.sleep(0.1)
            if second.is_leader:
                break
        assert second.is_leader
        assert not first.inherited  # it created the Lease: nobody spoke before it
        assert second.inherited  # the first spoke a moment ago: be careful with DingTalk
        stop_second.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    lease = kube.server.cluster.get("leases", "rollbackd", "rollbackd")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", lease["spec"]["renewTime"])


def test_leader_that_cannot_renew_stops_leading(kube: Kube) -> None:
    """When the API refuses renewals past the renew deadline, the leader steps down, and
    is_leader is false before that even if the loop is stuck (no write on a stale lease)."""
    seed.create_namespace(kube.api, "rollbackd")
    leader = elector(kube, "a")

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(leader.run(stop))
        await asyncio.sleep(0.5)
        assert leader.is_leader
        kube.server.faults.injected.append(Fault("*", re.compile("/leases/"), 500, times=100))
        await asyncio.sleep(2.0)
        assert not leader.is_leader
        stop.set()
        await task

    asyncio.run(scenario())


def test_a_held_lease_is_respected_until_it_expires(kube: Kube) -> None:
    """A Lease held by a dead replica is taken only after lease_duration of no renewal."""
    seed.create_namespace(kube.api, "rollbackd")
    dead = elector(kube, "dead")
    waiting = elector(kube, "b")

    async def scenario() -> float:
        stop = asyncio.Event()
        dead_task = asyncio.create_task(dead.run(stop))
        await asyncio.sleep(0.5)
        stop.set()
        await dead_task  # stops renewing, never releases: like a SIGKILL
        loop = asyncio.get_running_loop()
        started = loop.time()
        stop_b = asyncio.Event()
        task = asyncio.create_task(waiting.run(stop_b))
        await until_leading(waiting, 6)
        took = loop.time() - started
        stop_b.set()
        await task
        return took

    took = asyncio.run(scenario())
    assert 1.5 <= took <= 2 + 0.2 * 1.2 + 1.0


def _lease_requests(kube: Kube, start: int, agent: str = "") -> list[str]:
    return [
        r.method
        for r in kube.server.requests[start:]
        if "/leases" in r.path and agent in r.user_agent
    ]


def test_a_leader_renews_with_one_request_a_round_and_reads_only_after_a_conflict(
    kube: Kube,
) -> None:
    """The API load of leading: in steady state each renewal is one PUT on the last write's
    resourceVersion (about 30 requests a minute at the default 2 s, half of GET-then-PUT);
    when someone else has written the Lease the PUT gets 409 and only then is it read."""
    seed.create_namespace(kube.api, "rollbackd")
    leader = elector(kube, "a")

    async def scenario() -> tuple[list[str], list[str]]:
        stop = asyncio.Event()
        task = asyncio.create_task(leader.run(stop))
        await until_leading(leader, 2)
        assert leader.is_leader
        start = len(kube.server.requests)
        await asyncio.sleep(1.1)  # about five rounds of 200 ms
        steady = _lease_requests(kube, start)
        cluster = kube.server.cluster
        with cluster.lock:  # another writer: the Lease gets a newer resourceVersion
            lease = cluster.get("leases", "rollbackd", "rollbackd")
            assert lease is not None
            cluster.put("leases", "rollbackd", lease)
        start = len(kube.server.requests)
        await asyncio.sleep(0.5)
        after = _lease_requests(kube, start)
        assert leader.is_leader
        stop.set()
        await task
        return steady, after

    steady, after = asyncio.run(scenario())
    assert 4 <= len(steady) <= 7
    assert set(steady) == {"PUT"}
    assert after[:3] == ["PUT", "GET", "PUT"]  # the stale write, the read, the renewal
    assert after[3:] == ["PUT"] * len(after[3:])


def test_a_lease_renewed_long_ago_is_not_inherited(kube: Kube) -> None:
    """A Lease last renewed ten minutes ago says nobody spoke within DingTalk's minute: the
    new leader is not held to a conservative start."""
    seed.create_namespace(kube.api, "rollbackd")
    old = datetime.now(UTC) - timedelta(minutes=10)
    client.CoordinationV1Api(kube.api).create_namespaced_lease(
        "rollbackd",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "rollbackd", "namespace": "rollbackd"},
            "spec": {
                "holderIdentity": "gone",
                "leaseDurationSeconds": 1,
                "renewTime": old.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        },
    )
    newcomer = LeaderElector(
        kube.api,
        LeaderElectionSettings(lease_duration="1s", renew_deadline="800ms", retry_period="200ms"),
        identity="b",
    )

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(newcomer.run(stop))
        await until_leading(newcomer, 5)
        stop.set()
        await task

    asyncio.run(scenario())
    assert not newcomer.inherited


def _client(kube: Kube, agent: str) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=configuration)
    api = client.ApiClient(configuration)
    api.user_agent = agent
    return api


def test_a_leader_whose_answers_come_back_late_never_overlaps_another(kube: Kube) -> None:
    """Single writer with a slow API server: the leader's answers take 1.5 s to come back
    (its renewals land, late, and 2.7 s apart: longer than the 2 s lease), so its Lease as
    others see it dates from the write, not from the answer. At no sampled moment do both
    replicas consider themselves leader, and the standby takes over; counting from the end
    of the round would give the slow one ~1 s of overlap each time its renewal runs late.

    (At 1 s the renewals landed 2.2 s apart: the standby, which dates the record from its
    own read, 0.1-0.22 s after the write, had under 0.2 s a round to see it expired, and in
    about one run of ten it saw none in the 6 s sampled.)"""
    seed.create_namespace(kube.api, "rollbackd")
    timing = {"lease_duration": "2s", "renew_deadline": "1800ms"}
    slow_api, fast_api = _client(kube, "replica-slow"), _client(kube, "replica-fast")
    slow = LeaderElector(
        slow_api, LeaderElectionSettings(**timing, retry_period="1200ms"), identity="slow"
    )
    fast = LeaderElector(
        fast_api, LeaderElectionSettings(**timing, retry_period="100ms"), identity="fast"
    )

    async def scenario() -> tuple[int, int]:
        stops = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(slow.run(stops[0]))]
        await until_leading(slow, 2)
        assert slow.is_leader
        tasks.append(asyncio.create_task(fast.run(stops[1])))
        kube.server.faults.slow["replica-slow"] = 1.5
        both = fast_led = 0
        for _ in range(300):  # at most 6 s of 20 ms samples
            await asyncio.sleep(0.02)
            both += slow.is_leader and fast.is_leader
            fast_led += fast.is_leader
            if fast_led >= 25:  # the standby has led for half a second: the handover is over
                break
        kube.server.faults.slow.clear()
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)
        return both, fast_led

    try:
        both, fast_led = asyncio.run(scenario())
    finally:
        slow_api.close()
        fast_api.close()
    assert both == 0, f"two leaders at once in {both} samples"
    assert fast_led > 0  # the standby did take over from the late one


def test_a_late_leader_stops_leading_within_renew_deadline_of_its_last_landed_write(
    kube: Kube,
) -> None:
    """The bound a standby relies on: a leader whose answers take 1 s to come back stops
    considering itself leader no later than ``renew_deadline`` after its last renewal
    *landed* on the server (a standby counts ``lease_duration``, which is longer, from
    seeing that write). A leader that counted from the end of its round would go on
    leading for as long again as its answers are late."""
    seed.create_namespace(kube.api, "rollbackd")
    settings = LeaderElectionSettings(
        lease_duration="3s", renew_deadline="2700ms", retry_period="2200ms"
    )
    api = _client(kube, "replica-late")
    late = LeaderElector(api, settings, identity="late")
    deadline = settings.renew_deadline.total_seconds()

    def last_renewal_landed() -> float:
        puts = [
            r.at
            for r in list(kube.server.requests)
            if r.method in ("POST", "PUT")
            and "replica-late" in r.user_agent
            and r.status in (200, 201)
        ]
        return puts[-1] if puts else 0.0

    async def scenario() -> list[float]:
        stop = asyncio.Event()
        task = asyncio.create_task(late.run(stop))
        assert await until_leading(late, 2)
        kube.server.faults.slow["replica-late"] = 1.0
        overruns: list[float] = []
        leading = True
        for _ in range(500):  # at most 10 s of 20 ms samples: about three late rounds
            await asyncio.sleep(0.02)
            if leading and not late.is_leader:
                overruns.append(time.monotonic() - last_renewal_landed() - deadline)
            leading = late.is_leader
            if len(overruns) >= 2:
                break
        kube.server.faults.slow.clear()
        stop.set()
        await task
        return overruns

    try:
        overruns = asyncio.run(scenario())
    finally:
        api.close()
    assert len(overruns) >= 2, "the late leader's renewals never lapsed"
    assert max(overruns) < 0.1, f"led {max(overruns):.2f} s past its last write's deadline"


def test_the_leader_label_follows_leadership_and_a_refusal_is_logged_once(kube: Kube) -> None:
    """The leader's pod gets rollbackd.io/leader=true (the webhook Service's selector) and
    loses it when it stops leading. Without RBAC for pods the write is refused: logged once
    with its code however often it is tried, and applied as soon as it is allowed."""
    seed.create_namespace(kube.api, "rollbackd")
    cluster = kube.server.cluster
    with cluster.lock:
        cluster.put("pods", "rollbackd", cluster.new_object("Pod", "v1", "r-0", "rollbackd", {}))
    label = LeaderLabel(kube.api, namespace="rollbackd", name="r-0")

    def labels() -> dict[str, str]:
        pod = cluster.get("pods", "rollbackd", "r-0") or {}
        return dict(pod.get("metadata", {}).get("labels") or {})

    kube.server.faults.forbidden.add(("patch", "pods"))
    with capture_logs() as logs:
        for _ in range(3):
            asyncio.run(label.apply(True))
    refused = [e for e in logs if e["event"] == "leader_label_failed"]
    assert [e["code"] for e in refused] == ["ERR_KUBE_FORBIDDEN"]
    assert LEADER_LABEL not in labels()
    kube.server.faults.forbidden.clear()
    asyncio.run(label.apply(True))
    assert labels()[LEADER_LABEL] == "true"
    asyncio.run(label.apply(False))
    assert LEADER_LABEL not in labels()
