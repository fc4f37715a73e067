"""DingTalk on a bad day, over real HTTP against the fake robot: digests keep outcomes, a
robot's sender survives the unforeseen, the app token endpoint's outages are retried, the
rate limit holds across a failover, and shutdown says what it could not send (issue 14, 8)."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx

from rollbackd.incidents import lifecycle as core
from rollbackd.model import Event
from rollbackd.notifications.dingtalk import AppRobotSender, WebhookRobotSender
from rollbackd.notifications.outbox import Notifications, Outbox
from rollbackd.notifications.render import Renderer
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AppRobot, NotificationSettings
from rollbackd.testing.clock import FakeClock
from rollbackd.testing.dingtalk import FakeDingTalk, Script
from tests.conftest import alertmanager_settings
from tests.integration.test_dingtalk import SECRET, TOKEN, incident, webhook_robot
from tests.integration.test_http_surface import body, post
from tests.unit.test_alertmanager_signals import ALERT
from tests.unit.test_incident_cases import assess_all, leader, run

RENDERER = Renderer("en")
LIFE = (Event.BREACH, Event.ROLLBACK_STARTED, Event.ROLLBACK_SUCCEEDED)


def outbox_for(sender: object, clock: FakeClock, telemetry: Telemetry, **kwargs: object) -> Outbox:
    return Outbox(
        "oncall",
        sender,  # type: ignore[arg-type]
        RENDERER,
        clock=clock,
        sleep=clock.sleep,
        telemetry=telemetry,
        rng=lambda: 0.5,
        **kwargs,  # type: ignore[arg-type]
    )


def signed_sender(
    fake: FakeDingTalk, client: httpx.AsyncClient, clock: FakeClock, url: str = ""
) -> WebhookRobotSender:
    """A group robot sender that signs with the fake clock's time."""
    return WebhookRobotSender(
        webhook_robot(url or fake.robot(TOKEN, secret=SECRET)),
        client,
        clock_ms=lambda: int(clock.wall_seconds() * 1000),
    )


async def delivered(outbox: Outbox, seconds: float = 20) -> bool:
    runner = asyncio.create_task(outbox.run())
    try:
        return await outbox.drain(seconds)
    finally:
        runner.cancel()


def test_a_digest_of_digests_keeps_every_incidents_outcome() -> None:
    """DingTalk down 3 minutes while 5 incidents run their course (15 messages, a queue of
    6 folding into digests that are digested again): what arrives names every incident with
    its latest outcome and path, not only a digest's title (before: outcomes were lost)."""
    clock = FakeClock(start=1_800_000_000)
    telemetry = Telemetry()

    async def scenario(fake: FakeDingTalk) -> None:
        async with httpx.AsyncClient() as client:
            sender = signed_sender(fake, client, clock)
            outbox = outbox_for(sender, clock, telemetry, capacity=6)
            fake.script(Script(status=503, until=clock.wall_seconds() + 180))
            for event in LIFE:
                for number in range(5):
                    last = event is Event.ROLLBACK_SUCCEEDED and number == 4
                    outbox.post(
                        RENDERER.render(incident(number, Event.ROLLBACK_FAILED if last else event))
                    )
            assert await delivered(outbox)

    with FakeDingTalk(clock=clock.wall_seconds) as fake:
        asyncio.run(scenario(fake))
        texts = fake.texts()
    assert clock.wall_seconds() >= 1_800_000_000 + 180
    for number in range(5):
        lines = [line for line in texts.splitlines() if incident(number).id in line]
        outcome = "Rollback FAILED" if number == 4 else "Rolled back"
        assert any(
            outcome in line and "the breach began 2m00s after the change" in line for line in lines
        ), (number, lines)
    assert re.search(r"Breach → Rolling back → Rolled back", texts)


def test_an_unforeseen_answer_does_not_silence_the_robot() -> None:
    """An answer no one foresaw (errcode 1e400) fails one send with ERR_DINGTALK_UNEXPECTED
    and its traceback; the message is retried and delivered (before: the robot's task died
    and nothing more was ever sent)."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    clock = FakeClock(start=1_800_000_000)
    telemetry = Telemetry()

    async def scenario(fake: FakeDingTalk) -> bool:
        async with httpx.AsyncClient() as client:
            sender = signed_sender(fake, client, clock)
            outbox = outbox_for(sender, clock, telemetry)
            fake.script(Script(raw=b'{"errcode": 1e400, "errmsg": "?"}', times=1))
            outbox.post(RENDERER.render(incident(1)))
            outbox.post(RENDERER.render(incident(2)))
            return await delivered(outbox, 10)

    with FakeDingTalk(clock=clock.wall_seconds) as fake:
        assert asyncio.run(scenario(fake))
        texts = fake.texts()
    assert incident(1).id in texts
    assert incident(2).id in texts
    unexpected = {"robot": "oncall", "result": "ERR_DINGTALK_UNEXPECTED"}
    assert telemetry.value("rollbackd_notifications_total", unexpected) == 1
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    (failure,) = [e for e in events if e["event"] == "notification_failed_unexpectedly"]
    assert "OverflowError" in failure["exception"]


def test_token_endpoint_outages_are_retried_not_taken_for_a_bad_secret() -> None:
    """The app robot's token endpoint answering 503 twice and 429 once: the message is
    retried and delivered (before: taken for a bad token, and dropped)."""
    clock = FakeClock(start=1_800_000_000)
    telemetry = Telemetry()

    async def scenario(fake: FakeDingTalk) -> bool:
        fake.app("app-key-1234567", "app-secret-1234567")
        robot = AppRobot.model_validate(
            {
                "name": "oncall",
                "kind": "app",
                "app_key": "app-key-1234567",
                "app_secret": "app-secret-1234567",
                "robot_code": "robot",
                "open_conversation_id": "cid",
                "api_url": fake.url,
            }
        )
        async with httpx.AsyncClient() as client:
            outbox = outbox_for(AppRobotSender(robot, client), clock, telemetry)
            token_path = "/v1.0/oauth2/accessToken"
            fake.script(Script(status=503, times=2, path=token_path))
            fake.script(Script(status=429, times=1, path=token_path))
            outbox.post(RENDERER.render(incident(7)))
            return await delivered(outbox, 10)

    with FakeDingTalk(clock=clock.wall_seconds) as fake:
        assert asyncio.run(scenario(fake))
        sent = fake.state.app_messages
    assert len(sent) == 1
    assert incident(7).id in sent[0]["msgParam"]
    busy = {"robot": "oncall", "result": "ERR_DINGTALK_BUSY"}
    assert telemetry.value("rollbackd_notifications_total", busy) == 3
    bad = {"robot": "oncall", "result": "ERR_DINGTALK_BAD_TOKEN"}
    assert telemetry.value("rollbackd_notifications_total", bad) == 0


def test_a_new_leader_keeps_the_robot_under_its_limit() -> None:
    """The old leader spends its whole minute (19 messages); the new leader's backlog goes
    out without DingTalk ever seeing more than 20 in a minute (before: a full bucket on
    the new leader pushed the robot over and throttled it for ten minutes)."""
    clock = FakeClock(start=1_800_000_000)
    telemetry = Telemetry()

    async def scenario(fake: FakeDingTalk) -> None:
        url = fake.robot(TOKEN, secret=SECRET)
        async with httpx.AsyncClient() as client:

            def sender() -> WebhookRobotSender:
                return signed_sender(fake, client, clock, url)

            old = outbox_for(sender(), clock, telemetry)
            for number in range(19):  # 4 at once, then one every 4 seconds
                old.post(RENDERER.render(incident(number)))
                assert await delivered(old)
                if number >= 3:
                    clock.advance(3.9)
            new = outbox_for(sender(), clock, telemetry)
            Notifications(NotificationSettings(), RENDERER, {"oncall": new}).after_takeover()
            for number in range(19, 30):
                new.post(RENDERER.render(incident(number)))
                assert await delivered(new)

    with FakeDingTalk(clock=clock.wall_seconds) as fake:
        asyncio.run(scenario(fake))
        assert fake.state.throttle_events == 0
        assert fake.max_per_minute() <= 20
        texts = fake.texts()
    assert all(incident(n).id in texts for n in range(30))


def test_shutdown_says_what_it_could_not_send() -> None:
    """Shutdown with DingTalk down: the drain gives up at its deadline and logs every
    incident id it could not deliver."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)

    async def scenario(fake: FakeDingTalk) -> bool:
        async with httpx.AsyncClient() as client:
            sender = WebhookRobotSender(webhook_robot(fake.robot(TOKEN, secret=SECRET)), client)
            outbox = Outbox(
                "oncall",
                sender,
                RENDERER,
                clock=SystemClock(),
                sleep=asyncio.sleep,
                telemetry=Telemetry(),
            )
            fake.script(Script(status=503, times=1000))
            for number in range(3):
                outbox.post(RENDERER.render(incident(number)))
            return await delivered(outbox, 0.5)

    with FakeDingTalk() as fake:
        assert not asyncio.run(scenario(fake))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    (left,) = [e for e in events if e["event"] == "notifications_not_drained"]
    assert set(left["incidents"]) == {incident(n).id for n in range(3)}


def test_alert_labels_cannot_inject_markdown(make_receiver: Any, tmp_path: Path) -> None:
    """An alert whose labels hold a heading, a link, an image and an @mobile reaches the
    on-call group as literal text, through the receiver, the incident core and the robot
    (before: rendered raw, so a label could post a link or mention someone)."""
    evil = "# Heading\n![img](http://evil.example/x.png) [click](http://evil.example) @13800000000"
    (tmp_path / "breach.en.md.j2").write_text("{{ i.rule }}\n\n{{ i.labels.summary }}\n")
    receiver = make_receiver(
        settings=alertmanager_settings(
            triggers=[{"match_re": {"alertname": ".*"}, "pending_for": "2m"}]
        )
    )
    labels = {**ALERT["labels"], "alertname": "X](http://evil.example)", "summary": evil}
    answer = post(receiver, body({**ALERT, "labels": labels}))
    assert answer.status_code == 200
    receiver.drain()
    (verdict,) = receiver.verdicts
    state, effects = run(leader(), [core.Signals((verdict,))])
    _, effects = assess_all(state, effects)
    (breach,) = [e.facts for e in effects if isinstance(e, core.Say)][:1]
    clock = FakeClock(start=1_800_000_000)
    renderer = Renderer("en", str(tmp_path))

    async def scenario(fake: FakeDingTalk) -> bool:
        async with httpx.AsyncClient() as client:
            sender = signed_sender(fake, client, clock)
            outbox = outbox_for(sender, clock, Telemetry())
            robot = {
                "name": "oncall",
                "kind": "webhook",
                "url": sender.robot.url.get_secret_value(),
            }
            settings = NotificationSettings.model_validate({"language": "en", "robots": [robot]})
            Notifications(settings, renderer, {"oncall": outbox}).notify(breach)
            return await delivered(outbox, 10)

    with FakeDingTalk(clock=clock.wall_seconds) as fake:
        assert asyncio.run(scenario(fake))
        (message,) = fake.messages
    text = message["body"]["markdown"]["text"]
    assert "Heading" in text
    assert "13800000000" in text
    for raw in ("](http://evil", "![", "@13800000000", "\n#"):
        assert raw not in text, (raw, text)
    assert not message["body"]["at"]["atMobiles"]
