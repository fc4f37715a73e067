"""DingTalk delivery over real HTTP against the fake robot: signing, rate, retries, tokens."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollbackd.errors import DingTalkBadToken
from rollbackd.model import Event, Incident, Target
from rollbackd.notifications.dingtalk import (
    AppRobotSender,
    WebhookRobotSender,
    sign,
    signed_url,
)
from rollbackd.notifications.outbox import Notifications, Outbox
from rollbackd.notifications.render import Renderer
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.logs import configure_logging
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AppRobot, NotificationSettings, WebhookRobot
from rollbackd.testing.clock import FakeClock
from rollbackd.testing.dingtalk import FakeDingTalk, Script

pytestmark = pytest.mark.integration

TOKEN = "robot-token-7a6b5c4d3e"
SECRET = "SECb1a2c3d4e5f60718293a4b5c6d7e8f"


def incident(number: int, event: Event = Event.ROLLBACK_SUCCEEDED) -> Incident:
    return Incident(
        id=f"rb-20261127-1200{number:02d}-{number:04x}",
        event=event,
        target=Target("shop", f"web-{number}"),
        rule="high-error-rate",
        value=0.31,
        op=">",
        threshold=0.05,
        since=datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
        reason="the breach began 2m00s after the change",
        from_revision=3,
        to_revision=2,
        from_images=("nginx:3.0",),
        to_images=("nginx:2.0",),
    )


def webhook_robot(url: str, **fields: Any) -> WebhookRobot:
    return WebhookRobot.model_validate(
        {"name": "oncall", "kind": "webhook", "url": url, "secret": SECRET, **fields}
    )


def test_signature_matches_openssl() -> None:
    """The signature equals openssl's HMAC-SHA256 of "timestamp\\nsecret", Base64, encoded once."""
    timestamp = 1764244800123
    mac = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-binary"],
        input=f"{timestamp}\n{SECRET}".encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert sign(SECRET, timestamp) == base64.b64encode(mac).decode()
    url = signed_url("https://oapi.dingtalk.com/robot/send?access_token=x", SECRET, timestamp)
    encoded = url.split("sign=")[1]
    assert "%" in encoded or "+" not in sign(SECRET, timestamp)
    assert "+" not in encoded
    assert "/" not in encoded
    assert "=" not in encoded


def test_hundred_incidents_in_ten_seconds_respect_the_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """100 incidents in 10 s: never over 20 a minute, never throttled, every id delivered."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, secrets=[TOKEN, SECRET])

    async def scenario(fake: FakeDingTalk) -> None:
        async with httpx.AsyncClient() as client:
            sender = WebhookRobotSender(webhook_robot(fake.robot(TOKEN, secret=SECRET)), client)
            outbox = Outbox(
                "oncall",
                sender,
                Renderer("zh"),
                clock=SystemClock(),
                sleep=asyncio.sleep,
                telemetry=Telemetry(),
            )
            runner = asyncio.create_task(outbox.run())
            for number in range(100):
                outbox.post(Renderer("zh").render(incident(number)))
                await asyncio.sleep(0.09)
            assert await outbox.drain(30)
            runner.cancel()

    with FakeDingTalk() as fake:
        asyncio.run(scenario(fake))
        texts = fake.texts()
        assert fake.max_per_minute() <= 20
        assert fake.state.throttle_events == 0
        missing = [n for n in range(100) if incident(n).id not in texts]
        assert missing == []
        assert len(fake.messages) < 20  # the rest travelled in digests
    logged = out.getvalue()
    for secret in (TOKEN, SECRET):
        assert secret not in logged
    assert "sign=" not in logged or "sign=[REDACTED]" in logged


def test_failing_robot_for_two_minutes_delivers_everything_after() -> None:
    """5xx then errcode -1 for two minutes (fake time): everything arrives afterwards."""
    clock = FakeClock(start=1_800_000_000)

    async def scenario(fake: FakeDingTalk) -> Telemetry:
        telemetry = Telemetry()
        async with httpx.AsyncClient() as client:
            sender = WebhookRobotSender(
                webhook_robot(fake.robot(TOKEN, secret=SECRET)),
                client,
                clock_ms=lambda: int(clock.wall_seconds() * 1000),
            )
            outbox = Outbox(
                "oncall",
                sender,
                Renderer("en"),
                clock=clock,
                sleep=clock.sleep,
                telemetry=telemetry,
                rng=lambda: 0.5,
            )
            now = clock.wall_seconds()
            fake.script(Script(status=503, until=now + 60))
            fake.script(Script(errcode=-1, errmsg="系统繁忙", until=now + 120))
            for number in range(30):
                outbox.post(Renderer("en").render(incident(number)))
            runner = asyncio.create_task(outbox.run())
            assert await outbox.drain(20)
            runner.cancel()
        return telemetry

    with FakeDingTalk(clock=clock.wall_seconds) as fake:
        telemetry = asyncio.run(scenario(fake))
        assert _all_in(fake, 30)
        assert clock.wall_seconds() >= 1_800_000_000 + 120  # it really waited out the outage
    assert (
        telemetry.value(
            "rollbackd_notifications_total", {"robot": "oncall", "result": "ERR_DINGTALK_BUSY"}
        )
        >= 2
    )
    assert telemetry.value("rollbackd_notifications_total", {"robot": "oncall", "result": "ok"})


def _all_in(fake: FakeDingTalk, count: int) -> bool:
    texts = fake.texts()
    return all(incident(n).id in texts for n in range(count))


def test_permanent_error_is_not_retried_but_logged_and_counted() -> None:
    """A bad token is given up at once, logged with its code and incident, and counted."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)

    async def scenario(fake: FakeDingTalk) -> Telemetry:
        telemetry = Telemetry()
        async with httpx.AsyncClient() as client:
            url = f"{fake.url}/robot/send?access_token=not-a-robot-token"
            sender = WebhookRobotSender(webhook_robot(url), client)
            outbox = Outbox(
                "oncall",
                sender,
                Renderer("en"),
                clock=SystemClock(),
                sleep=asyncio.sleep,
                telemetry=telemetry,
            )
            outbox.post(Renderer("en").render(incident(1)))
            runner = asyncio.create_task(outbox.run())
            assert await outbox.drain(10)
            runner.cancel()
        return telemetry

    with FakeDingTalk() as fake:
        telemetry = asyncio.run(scenario(fake))
        assert fake.messages == []
    assert (
        telemetry.value(
            "rollbackd_notifications_total", {"robot": "oncall", "result": "ERR_DINGTALK_BAD_TOKEN"}
        )
        == 1
    )
    (dropped,) = [
        json.loads(line) for line in out.getvalue().splitlines() if '"notification_dropped"' in line
    ]
    assert dropped["code"] == "ERR_DINGTALK_BAD_TOKEN"
    assert dropped["incidents"] == [incident(1).id]
    assert "not-a-robot-token" not in out.getvalue()


def test_keyword_mentions_and_at_all_reach_the_robot() -> None:
    """The keyword is added, @mobiles appear in the text, isAtAll follows at_all_on."""

    async def scenario(fake: FakeDingTalk) -> None:
        async with httpx.AsyncClient() as client:
            robot = webhook_robot(
                fake.robot(TOKEN, secret=SECRET, keyword="回滚"),
                keyword="回滚",
                at_mobiles=["13800000000"],
            )
            sender = WebhookRobotSender(robot, client)
            await sender.send(Renderer("en").render(incident(1)), at_all=True)

    with FakeDingTalk() as fake:
        asyncio.run(scenario(fake))
        (message,) = fake.messages
        body = message["body"]
        assert "@13800000000" in body["markdown"]["text"]
        assert body["at"] == {"atMobiles": ["13800000000"], "isAtAll": True}


def test_oversized_message_is_cut_under_the_limit() -> None:
    """A huge message is truncated with a marker and still accepted (never 460101)."""
    big = incident(1)
    big = Incident(**{**big.__dict__, "note": "x" * 50_000})

    async def scenario(fake: FakeDingTalk) -> None:
        async with httpx.AsyncClient() as client:
            sender = WebhookRobotSender(webhook_robot(fake.robot(TOKEN, secret=SECRET)), client)
            await sender.send(Renderer("en").render(big), at_all=False)

    with FakeDingTalk() as fake:
        asyncio.run(scenario(fake))
        (message,) = fake.messages
        assert message["body"]["markdown"]["text"].endswith("(truncated)")


def test_app_robot_token_is_fetched_once_and_refreshed_once() -> None:
    """One token fetch per expiry; a token rejected mid-way is fetched again once."""
    clock = FakeClock()

    async def scenario(fake: FakeDingTalk) -> AppRobotSender:
        fake.app("dingappkey", "dingappsecret")
        robot = AppRobot.model_validate(
            {
                "name": "ops-app",
                "kind": "app",
                "app_key": "dingappkey",
                "app_secret": "dingappsecret",
                "open_conversation_id": "cid123==",
                "api_url": fake.url,
            }
        )
        async with httpx.AsyncClient() as client:
            sender = AppRobotSender(robot, client, monotonic=lambda: clock.seconds)
            for number in range(5):
                await sender.send(Renderer("zh").render(incident(number)), at_all=False)
            assert fake.state.token_fetches == 1
            clock.advance(7200 - 200)  # inside the refresh margin
            await sender.send(Renderer("zh").render(incident(5)), at_all=False)
            assert fake.state.token_fetches == 2
            fake.revoke_tokens()
            await sender.send(Renderer("zh").render(incident(6)), at_all=False)
            assert fake.state.token_fetches == 3
            fake.state.token_ttl = 0  # every token is dead on arrival
            fake.revoke_tokens()
            with pytest.raises(DingTalkBadToken):
                await sender.send(Renderer("zh").render(incident(7)), at_all=False)
            assert fake.state.token_fetches == 4  # refreshed once, not in a loop
        return sender

    with FakeDingTalk(clock=clock.wall_seconds) as fake:
        asyncio.run(scenario(fake))
        sent = fake.state.app_messages
        assert len(sent) == 7
        assert sent[0]["msgKey"] == "sampleMarkdown"
        assert sent[0]["robotCode"] == "dingappkey"
        assert incident(0).id in json.loads(sent[0]["msgParam"])["text"]


def routed(settings: NotificationSettings, incidents: list[Incident]) -> dict[str, list[str]]:
    """The events each robot's outbox was given for ``incidents``, in order."""
    renderer = Renderer("en")
    posted: dict[str, list[str]] = {robot.name: [] for robot in settings.robots}

    class Recorder(Outbox):
        def post(self, message: Any, *, at_all: bool = False) -> None:
            posted[self.name].append(message.event)

    outboxes = {
        name: Recorder(
            name,
            None,
            renderer,
            clock=SystemClock(),  # type: ignore[arg-type]
            sleep=asyncio.sleep,
            telemetry=Telemetry(),
        )
        for name in posted
    }
    notifications = Notifications(settings, renderer, outboxes)  # type: ignore[arg-type]
    for item in incidents:
        notifications.notify(item)
    return posted


def test_routing_by_labels_and_events() -> None:
    """Robots receive only incidents whose labels match and whose events they take."""
    settings = NotificationSettings.model_validate(
        {
            "robots": [
                {
                    "name": "shop",
                    "kind": "webhook",
                    "url": "http://x/robot/send?access_token=aaaaaa",
                    "match": {"namespace": "shop|payments"},
                },
                {
                    "name": "failures",
                    "kind": "webhook",
                    "url": "http://x/robot/send?access_token=bbbbbb",
                    "events": ["rollback_failed"],
                },
            ]
        }
    )
    other = Incident(**{**incident(3).__dict__, "target": Target("search", "api")})
    assert routed(settings, [incident(1), incident(2, Event.ROLLBACK_FAILED), other]) == {
        "shop": ["rollback_succeeded", "rollback_failed"],
        "failures": ["rollback_failed"],
    }


def test_deploy_status_reaches_only_robots_that_list_it() -> None:
    """The deploy_* events are off by default: a robot without its own list hears none of
    them; a robot whose own ``events`` lists them hears them (its list alone decides), and a
    global ``notifications.events`` that lists them reaches every robot without a list."""
    robots = [
        {"name": "oncall", "kind": "webhook", "url": "http://x/robot/send?access_token=aaaaaa"},
        {
            "name": "releases",
            "kind": "webhook",
            "url": "http://x/robot/send?access_token=bbbbbb",
            "events": ["deploy_started", "deploy_failed"],
        },
    ]
    sent = [incident(1, e) for e in (Event.DEPLOY_STARTED, Event.DEPLOY_SUCCEEDED, Event.BREACH)]
    assert routed(NotificationSettings.model_validate({"robots": robots}), sent) == {
        "oncall": ["breach"],
        "releases": ["deploy_started"],
    }
    listed = NotificationSettings.model_validate(
        {"robots": robots, "events": ["deploy_started", "deploy_succeeded"]}
    )
    assert routed(listed, sent) == {
        "oncall": ["deploy_started", "deploy_succeeded"],
        "releases": ["deploy_started"],
    }


def test_notify_test_command(tmp_path: Path) -> None:
    """`rollbackd notify-test` prints each robot's errcode; exit 1 when one fails."""
    with FakeDingTalk() as fake:
        good = fake.robot(TOKEN, secret=SECRET)
        config = tmp_path / "config.yaml"
        config.write_text(
            "notifications:\n  robots:\n"
            f"    - {{name: good, kind: webhook, url: '{good}', secret: '{SECRET}'}}\n"
            f"    - {{name: bad, kind: webhook,\n"
            f"       url: '{fake.url}/robot/send?access_token=nope12'}}\n"
        )
        result = subprocess.run(
            [sys.executable, "-m", "rollbackd", "notify-test", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert "good: ok (errcode 0)" in result.stdout
        assert "bad: failed: ERR_DINGTALK_BAD_TOKEN" in result.stdout
        assert TOKEN not in result.stdout + result.stderr
        assert len(fake.messages) == 1
        only = subprocess.run(
            [
                sys.executable,
                "-m",
                "rollbackd",
                "notify-test",
                "--config",
                str(config),
                "--robot",
                "good",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert only.returncode == 0
