"""Edge: DingTalk delivery over httpx, for the custom group robot and the org app robot.

Group robot (webhook): ``timestamp`` in ms, HMAC-SHA256 over ``timestamp + "\\n" + secret``
keyed by the secret, Base64, URL-encoded exactly once into the query. Success is
``errcode == 0`` and nothing else; failures are classified by errcode *and* errmsg (310000
alone means a bad signature, a missing keyword, a stale timestamp or an IP allow list).

App robot (OpenAPI): an access token from appKey/appSecret, cached until five minutes
before it expires, fetched by one caller at a time; a token refused mid-way is dropped,
fetched again once, and the send retried once. A 5xx or 429 from the token endpoint is
transient (retried by the outbox), not a bad secret. Group messages use ``sampleMarkdown``.

Neither the webhook URL, its token, the secret nor a signature is ever logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx

from rollbackd.errors import (
    DingTalkBadSignature,
    DingTalkBadToken,
    DingTalkBusy,
    DingTalkError,
    DingTalkKeywordMissing,
    DingTalkRateLimited,
    DingTalkRejected,
    DingTalkRobotDisabled,
    DingTalkUnreachable,
)
from rollbackd.model import Message
from rollbackd.notifications.render import MAX_BYTES, truncate
from rollbackd.settings import AppRobot, WebhookRobot

TIMEOUT = httpx.Timeout(10.0, connect=3.0)
APP_PARAM_BYTES = 15_000  # msgParam limit of the OpenAPI group send


def sign(secret: str, timestamp_ms: int) -> str:
    """The raw Base64 signature (not yet URL-encoded)."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """The webhook URL with ``timestamp`` and ``sign``, the signature encoded exactly once."""
    encoded = urllib.parse.quote_plus(sign(secret, timestamp_ms))
    return f"{url}&timestamp={timestamp_ms}&sign={encoded}"


def classify(errcode: int, errmsg: str) -> DingTalkError | None:
    """The error a group-robot answer means, or None for success."""
    text = f"errcode {errcode}: {errmsg}"
    lowered = errmsg.lower()
    if errcode == 0:
        return None
    if errcode == -1:
        return DingTalkBusy(text)
    if errcode in (130101, 410100):
        return DingTalkRateLimited(text)
    if errcode in (300001, 300005, 400101, 40035):
        return DingTalkBadToken(text)
    if errcode in (400102, 400106, 400013):
        return DingTalkRobotDisabled(text)
    if errcode == 310000:
        if "keyword" in lowered:
            return DingTalkKeywordMissing(text)
        if "sign" in lowered or "签名" in errmsg or "timestamp" in lowered:
            return DingTalkBadSignature(text)
    return DingTalkRejected(text)


def _robot_body(message: Message, *, mobiles: list[str], at_all: bool, keyword: str) -> Any:
    text = message.text
    if keyword and keyword not in text and keyword not in message.title:
        text = f"{text}\n{keyword}"
    if mobiles:  # a mention only notifies when @mobile is in the text too
        text = f"{text}\n{' '.join('@' + m for m in mobiles)}"
    if message.buttons:  # DingTalk ignores mentions on an actionCard
        buttons = [{"title": title, "actionURL": url} for title, url in message.buttons]
        return {
            "msgtype": "actionCard",
            "actionCard": {
                "title": message.title,
                "text": text,
                "btnOrientation": "1",
                "btns": buttons,
            },
        }
    return {
        "msgtype": "markdown",
        "markdown": {"title": message.title, "text": text},
        "at": {"atMobiles": mobiles, "isAtAll": at_all},
    }


def _encoded(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def fit(body: Any, *, limit: int, marker: str = "\n\n… (truncated)") -> bytes:
    """Serialize ``body``, cutting its markdown text so the whole stays under ``limit``."""
    data = _encoded(body)
    if len(data) <= limit:
        return data
    content = body[body["msgtype"]]
    text = content["text"]
    room = len(text.encode()) - (len(data) - limit) - 64
    content["text"] = truncate(text, limit=max(room, 200), marker=marker)
    return _encoded(body)


class WebhookRobotSender:
    """Sends to one custom group robot."""

    def __init__(
        self,
        robot: WebhookRobot,
        client: httpx.AsyncClient,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.robot = robot
        self._client = client
        self._clock_ms = clock_ms

    async def send(self, message: Message, *, at_all: bool) -> None:
        robot = self.robot
        body = _robot_body(
            message, mobiles=list(robot.at_mobiles), at_all=at_all, keyword=robot.keyword
        )
        url = robot.url.get_secret_value()
        if robot.secret is not None:
            url = signed_url(url, robot.secret.get_secret_value(), self._clock_ms())
        try:
            answer = await self._client.post(
                url,
                content=fit(body, limit=MAX_BYTES - 500),
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise DingTalkUnreachable(f"robot {robot.name}: {type(exc).__name__}") from None
        if answer.status_code >= 500:
            raise DingTalkBusy(f"robot {robot.name}: HTTP {answer.status_code}")
        try:
            result = answer.json()
            errcode, errmsg = int(result["errcode"]), str(result.get("errmsg", ""))
        except (ValueError, KeyError, TypeError):
            raise DingTalkBusy(
                f"robot {robot.name}: HTTP {answer.status_code} without an errcode"
            ) from None
        error = classify(errcode, errmsg)
        if error is not None:
            raise type(error)(f"robot {robot.name}: {error.message}")


_APP_CODES: dict[str, type[DingTalkError]] = {
    "InvalidAuthentication": DingTalkBadToken,
    "send.too.fast": DingTalkRateLimited,
    "send.byToken.tooFast": DingTalkRateLimited,
    "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi": DingTalkRateLimited,
    "Forbidden.AccessDenied.QpsLimitForApi": DingTalkRateLimited,
    "Forbidden.AccessDenied.QpmLimitForAppkeyAndApi": DingTalkRateLimited,
    "system.busy": DingTalkBusy,
    "systemBusy": DingTalkBusy,
    "system.error": DingTalkBusy,
    "bot.stopped": DingTalkRobotDisabled,
    "group.disbanded": DingTalkRobotDisabled,
}


class AppRobotSender:
    """Sends group messages as an org app robot through the DingTalk OpenAPI."""

    REFRESH_MARGIN = 300.0  # seconds before expiry

    def __init__(
        self,
        robot: AppRobot,
        client: httpx.AsyncClient,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.robot = robot
        self._client = client
        self._monotonic = monotonic
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.token_fetches = 0

    async def _access_token(self) -> str:
        async with self._lock:  # one fetch at a time; the others reuse its result
            if self._token and self._monotonic() < self._expires - self.REFRESH_MARGIN:
                return self._token
            robot = self.robot
            try:
                answer = await self._client.post(
                    f"{robot.api_url}/v1.0/oauth2/accessToken",
                    json={
                        "appKey": robot.app_key.get_secret_value(),
                        "appSecret": robot.app_secret.get_secret_value(),
                    },
                    timeout=TIMEOUT,
                )
            except httpx.HTTPError as exc:
                raise DingTalkUnreachable(f"robot {robot.name}: {type(exc).__name__}") from None
            self.token_fetches += 1
            body = _json(answer)
            if answer.status_code >= 500 or answer.status_code == 429:
                raise DingTalkBusy(  # the token endpoint is down, not the app's secret wrong
                    f"robot {robot.name}: token endpoint answered HTTP {answer.status_code}"
                )
            if answer.status_code != 200 or "accessToken" not in body:
                raise DingTalkBadToken(
                    f"robot {robot.name}: token refused: HTTP {answer.status_code} "
                    f"{body.get('code', '')}"
                )
            expires_in = int(body.get("expireIn") or 0) or 7200  # 0 would loop on refresh
            self._token, self._expires = str(body["accessToken"]), self._monotonic() + expires_in
            return self._token

    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token, self._expires = "", 0.0

    async def send(self, message: Message, *, at_all: bool) -> None:
        params = {
            "title": message.title,
            "text": truncate(message.text, limit=APP_PARAM_BYTES - 500, marker="\n…"),
        }
        key = "sampleMarkdown"
        if len(message.buttons) == 2:  # two buttons side by side
            key = "sampleActionCard6"
            for number, (title, url) in enumerate(message.buttons, start=1):
                params[f"buttonTitle{number}"], params[f"buttonUrl{number}"] = title, url
        robot = self.robot
        body = {
            "msgKey": key,
            "msgParam": json.dumps(params, ensure_ascii=False),
            "openConversationId": robot.open_conversation_id,
            "robotCode": robot.robot_code or robot.app_key.get_secret_value(),
        }
        for attempt in (1, 2):
            token = await self._access_token()
            try:
                answer = await self._client.post(
                    f"{robot.api_url}/v1.0/robot/groupMessages/send",
                    json=body,
                    headers={"x-acs-dingtalk-access-token": token},
                    timeout=TIMEOUT,
                )
            except httpx.HTTPError as exc:
                raise DingTalkUnreachable(f"robot {robot.name}: {type(exc).__name__}") from None
            if answer.status_code == 200:
                return
            result = _json(answer)
            code = str(result.get("code", ""))
            if (answer.status_code == 401 or code == "InvalidAuthentication") and attempt == 1:
                self._forget(token)  # refused mid-way: fetch a new token once
                continue
            detail = f"robot {robot.name}: HTTP {answer.status_code} {code}".strip()
            if answer.status_code >= 500 or answer.status_code == 429:
                raise DingTalkBusy(detail)
            raise _APP_CODES.get(code, DingTalkRejected)(detail)


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def sender_for(robot: WebhookRobot | AppRobot, client: httpx.AsyncClient) -> Any:
    """The sender matching a robot's kind."""
    if isinstance(robot, WebhookRobot):
        return WebhookRobotSender(robot, client)
    return AppRobotSender(robot, client)
