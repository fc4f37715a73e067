"""A fake DingTalk: the custom group robot webhook and the OpenAPI an app robot uses.

The group robot checks what DingTalk checks, with DingTalk's errcodes: the access_token,
the signature (recomputed from the secret, within one hour of its clock), the security
keyword, the 20,000-byte limit, and the rate: a 21st message within a minute throttles the
robot for ten minutes. Tests can script failures (HTTP 5xx, errcode -1...) for a number of
requests or until a time on the fake's clock. Every accepted message is recorded.

The OpenAPI side issues access tokens for an appKey/appSecret, counts fetches, refuses
unknown or revoked tokens with ``InvalidAuthentication`` and records group messages.

``python -m rollbackd.testing.dingtalk --port N --token T [--secret S]`` serves it and
prints each message it accepts (the demo uses this).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from rollbackd.testing.serving import BackgroundServer

LIMIT_PER_MINUTE = 20
THROTTLE_SECONDS = 600
MAX_BODY = 20_000
SKEW_SECONDS = 3600


@dataclass
class Script:
    """A scripted answer: ``status`` HTTP code, or errcode/errmsg, or ``raw`` bytes, for
    ``times`` requests or until ``until`` on the fake's clock, after ``delay`` seconds, on
    ``path`` (the group robot's by default; the app robot's token or send endpoint too)."""

    status: int = 200
    errcode: int = 0
    errmsg: str = "ok"
    times: int = 0
    until: float = 0.0
    delay: float = 0.0  # seconds (real time) before answering: a slow robot
    raw: bytes = b""  # an answer body as is, e.g. one nobody foresaw
    path: str = "/robot/send"


@dataclass
class Robot:
    secret: str | None = None
    keyword: str = ""
    sent: list[float] = field(default_factory=list)  # accept times, for the rate limit
    throttled_until: float = 0.0


@dataclass
class _State:
    clock: Callable[[], float]
    robots: dict[str, Robot] = field(default_factory=dict)
    scripts: list[Script] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    app_messages: list[dict[str, Any]] = field(default_factory=list)
    apps: dict[str, str] = field(default_factory=dict)  # appKey -> appSecret
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    token_fetches: int = 0
    token_ttl: float = 7200.0
    throttle_events: int = 0
    echo: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def expected_sign(secret: str, timestamp: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: messages are recorded, not logged."""

    def _json(self, status: int, body: dict[str, Any] | bytes) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        with self.state.lock:
            script = self._scripted(url.path)
        if script is not None and script.delay:
            time.sleep(script.delay)  # slow, and then as scripted or as usual
        if script is not None and (script.status != 200 or script.raw):
            self._json(script.status, script.raw or {"message": "scripted failure"})
        elif script is not None and script.errcode != 0:
            self._json(200, {"errcode": script.errcode, "errmsg": script.errmsg})
        elif url.path == "/robot/send":
            self._robot(dict(urllib.parse.parse_qsl(url.query)), raw)
        elif url.path == "/v1.0/oauth2/accessToken":
            self._token(raw)
        elif url.path == "/v1.0/robot/groupMessages/send":
            self._group_send(raw)
        else:
            self._json(404, {"code": "resource.not.found", "message": url.path})

    def _scripted(self, path: str) -> Script | None:
        now = self.state.clock()
        for script in self.state.scripts:
            if script.path != path:
                continue
            if script.times > 0:
                script.times -= 1
                return script
            if script.until > now:
                return script
        return None

    def _robot(self, query: dict[str, str], raw: bytes) -> None:
        state = self.state
        with state.lock:
            answer = self._check(query, raw)
        self._json(200, answer)

    def _check(self, query: dict[str, str], raw: bytes) -> dict[str, Any]:
        state, now = self.state, self.state.clock()
        robot = state.robots.get(query.get("access_token", ""))
        if robot is None:
            return {"errcode": 300001, "errmsg": "token is not exist"}
        if robot.secret is not None:
            timestamp = query.get("timestamp", "")
            if not timestamp.isdigit() or abs(now * 1000 - int(timestamp)) > SKEW_SECONDS * 1000:
                return {"errcode": 310000, "errmsg": "invalid timestamp"}
            if not hmac.compare_digest(
                query.get("sign", ""), expected_sign(robot.secret, timestamp)
            ):
                return {"errcode": 310000, "errmsg": "sign not match"}
        if len(raw) > MAX_BODY:
            return {"errcode": 460101, "errmsg": "message too long, exceed 20000 bytes"}
        try:
            body = json.loads(raw)
        except ValueError:
            return {"errcode": 400105, "errmsg": "不支持的消息类型"}
        content = json.dumps(body, ensure_ascii=False)
        if robot.keyword and robot.keyword not in content:
            return {"errcode": 310000, "errmsg": "keywords not in content"}
        if robot.throttled_until > now:
            return {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
        robot.sent = [t for t in robot.sent if t > now - 60]
        if len(robot.sent) >= LIMIT_PER_MINUTE:
            robot.throttled_until = now + THROTTLE_SECONDS
            state.throttle_events += 1
            return {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
        robot.sent.append(now)
        state.messages.append({"at": now, "token": query["access_token"], "body": body})
        if state.echo:
            markdown = body.get(body.get("msgtype", "markdown"), {})
            print(f"[dingtalk] {markdown.get('title')}\n{markdown.get('text')}", flush=True)
        return {"errcode": 0, "errmsg": "ok"}

    def _token(self, raw: bytes) -> None:
        state = self.state
        try:
            body = json.loads(raw)
        except ValueError:
            self._json(400, {"code": "MissingBody", "message": "body is mandatory"})
            return
        with state.lock:
            if state.apps.get(str(body.get("appKey"))) != body.get("appSecret"):
                self._json(
                    400,
                    {"code": "invalidClientIdOrSecret", "message": "无效的clientId或clientSecret"},
                )
                return
            state.token_fetches += 1
            token = secrets.token_hex(16)
            state.tokens[token] = state.clock() + state.token_ttl
        self._json(200, {"accessToken": token, "expireIn": int(state.token_ttl)})

    def _group_send(self, raw: bytes) -> None:
        state = self.state
        token = self.headers.get("x-acs-dingtalk-access-token", "")
        with state.lock:
            if state.tokens.get(token, 0) <= state.clock():
                self._json(
                    400,
                    {
                        "code": "InvalidAuthentication",
                        "message": "不合法的access_token",
                        "requestid": "fake",
                    },
                )
                return
            body = json.loads(raw)
            state.app_messages.append(body)
        self._json(200, {"processQueryKey": secrets.token_hex(8)})


class FakeDingTalk(BackgroundServer):
    """The fake DingTalk servers on one port."""

    def __init__(self, *, clock: Callable[[], float] = time.time, port: int = 0) -> None:
        self.state = _State(clock=clock)
        super().__init__(type("Handler", (_Handler,), {"state": self.state}), port=port)

    def robot(self, token: str, *, secret: str | None = None, keyword: str = "") -> str:
        """Register a group robot; returns its webhook URL."""
        self.state.robots[token] = Robot(secret=secret, keyword=keyword)
        return f"{self.url}/robot/send?access_token={token}"

    def app(self, app_key: str, app_secret: str) -> None:
        self.state.apps[app_key] = app_secret

    def script(self, script: Script) -> None:
        with self.state.lock:
            self.state.scripts.append(script)

    def revoke_tokens(self) -> None:
        with self.state.lock:
            self.state.tokens.clear()

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.messages)

    def texts(self) -> str:
        """All accepted texts (markdown and actionCard), for "does every incident appear"
        checks."""
        return "\n".join(m["body"][m["body"]["msgtype"]]["text"] for m in self.messages)

    def max_per_minute(self) -> int:
        """The largest number of messages any robot accepted within a 60-second window."""
        times = sorted(m["at"] for m in self.messages)
        return max((sum(1 for t in times if start <= t < start + 60) for start in times), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description="rollbackd's fake DingTalk robot")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True)
    parser.add_argument("--secret")
    args = parser.parse_args()
    fake = FakeDingTalk(port=args.port)
    fake.state.echo = True
    fake.robot(args.token, secret=args.secret)
    print(f"fake DingTalk on {fake.url}", flush=True)
    fake.serve()


if __name__ == "__main__":
    main()
