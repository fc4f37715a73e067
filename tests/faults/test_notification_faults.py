"""DingTalk down, throttled or slow: rollbacks are not delayed, and no message is lost."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx

from rollbackd.model import RuleState, Target, Transition, Verdict
from rollbackd.notifications.dingtalk import WebhookRobotSender
from rollbackd.notifications.outbox import Notifications, Outbox
from rollbackd.notifications.render import Renderer
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.incidents import IncidentRunner
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.runtime.wiring import Edges
from rollbackd.settings import Settings
from rollbackd.state.changes import ChangeTimes
from rollbackd.testing.clock import FakeClock
from rollbackd.testing.dingtalk import FakeDingTalk, Script
from rollbackd.testing.kube import seed
from tests.conftest import Kube
from tests.integration.test_rollbacks import ENABLED

TOKEN, SECRET = "robot-token-faults-1", "SECfaults0123456789"


class Cache:
    """The daemon's view of managed Deployments, read straight from the fake (no watch)."""

    synced = True

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def get(self, namespace: str, name: str) -> dict[str, object] | None:
        return self.kube.server.cluster.get("deployments", namespace, name)

    def all(self) -> list[dict[str, object]]:
        return self.kube.server.cluster.list_objects("deployments", None)

    def annotated(self, annotation: str) -> list[dict[str, object]]:
        return [
            d
            for d in self.all()
            if annotation in (d["metadata"].get("annotations") or {})  # type: ignore[attr-defined]
        ]


def firing(target: Target) -> Verdict:
    now = SystemClock().now()
    return Verdict(
        rule="errors",
        target=target,
        value=0.3,
        op=">",
        threshold=0.05,
        state=RuleState.FIRING,
        since=now,
        transition=Transition.FIRING,
        breaching=True,
        began=datetime.now(UTC),
    )


def run_incident(kube: Kube, scripts: list[Script]) -> None:
    """One incident through the daemon's stages while the robot misbehaves as scripted:
    the rollback must not wait for DingTalk, and every message must arrive in the end."""
    seed.create_namespace(kube.api, "demo")
    seed.create_deployment(kube.api, "demo", "web", image="nginx:1.0", labels=ENABLED)
    seed.set_image(kube.api, "demo", "web", "nginx:2.0")
    outbox_clock = FakeClock(start=2_000_000_000)

    async def scenario(robot: FakeDingTalk) -> tuple[float, Outbox, IncidentRunner]:
        url = robot.robot(TOKEN, secret=SECRET)
        now = outbox_clock.wall_seconds()
        for script in scripts:
            robot.script(
                Script(**{**script.__dict__, "until": script.until and now + script.until})
            )
        settings = Settings.model_validate(
            {
                "kubernetes": {"kubeconfig": str(kube.kubeconfig)},
                "rollback": {"wait_for_rollout": "5s"},
                "notifications": {
                    "language": "en",
                    "robots": [{"name": "oncall", "kind": "webhook", "url": url, "secret": SECRET}],
                },
            }
        )
        telemetry = Telemetry()
        async with httpx.AsyncClient() as client:
            sender = WebhookRobotSender(
                settings.notifications.robots[0],
                client,  # type: ignore[arg-type]
                clock_ms=lambda: int(outbox_clock.wall_seconds() * 1000),
            )
            renderer = Renderer("en")
            outbox = Outbox(
                "oncall",
                sender,
                renderer,
                clock=outbox_clock,
                sleep=outbox_clock.sleep,
                telemetry=telemetry,
                rng=lambda: 0.5,
            )
            notifications = Notifications(settings.notifications, renderer, {"oncall": outbox})
            edges = Edges(settings)
            incidents = IncidentRunner(
                settings,
                deployments=Cache(kube),  # type: ignore[arg-type]
                workloads=edges.workloads,
                events=edges.workloads,
                changes=ChangeTimes(),
                executor=edges.executor(),
                notifications=notifications,
                telemetry=telemetry,
                clock=SystemClock(),
            )
            await incidents.lead(True)
            started = time.monotonic()
            await incidents.handle([firing(Target("demo", "web"))])
            assert await incidents.idle(15)
            rolled_back_in = time.monotonic() - started
            runner = asyncio.create_task(outbox.run())
            assert await outbox.drain(30)
            runner.cancel()
        return rolled_back_in, outbox, incidents

    with FakeDingTalk(clock=outbox_clock.wall_seconds) as robot:
        rolled_back_in, _, incidents = asyncio.run(scenario(robot))
        assert rolled_back_in < 5  # not waiting for DingTalk
        image = kube.server.cluster.get("deployments", "demo", "web")
        assert image is not None
        assert image["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.0"
        (incident,) = incidents.open.values()
        texts = robot.texts()
        assert incident.id in texts
        for title in ("Breach", "Rolling back", "Rolled back"):
            assert title in texts
        longest = max(script.until for script in scripts)
        assert outbox_clock.wall_seconds() >= 2_000_000_000 + longest  # it waited it out


def test_robot_down_then_throttled_for_ten_minutes(kube: Kube) -> None:
    """503 for two minutes, then 130101 (throttled) until ten minutes in: the rollback is
    done at once, the messages arrive afterwards."""
    run_incident(
        kube,
        [Script(status=503, until=120), Script(errcode=130101, errmsg="send too fast", until=700)],
    )


def test_slow_robot_does_not_slow_the_rollback(kube: Kube) -> None:
    """A robot taking 3 s per answer: the rollback does not wait for it."""
    run_incident(kube, [Script(times=3, delay=3.0)])
