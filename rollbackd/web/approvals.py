"""The approval pages behind a DingTalk button: ``GET`` shows, ``POST`` answers.

``GET /approvals/{token}`` never acts: chat clients and link scanners open links on their
own. It shows what a rollback would do (revisions, images, the rule's value now, time left)
with a form, and sets a CSRF cookie the form repeats. ``POST`` with that pair carries out
"roll back now" or "hold" through the approval desk and answers with a result page.
Refusals: 503 the signing key unreadable, 404 unknown, 410 expired or already answered, 409
the workload changed, 403 a form without its CSRF pair. Server-rendered, zh or en, no
external assets, usable on a phone; nothing the page shows comes unescaped.
"""

from __future__ import annotations

import hmac
import re
import secrets
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from rollbackd.incidents.cases import Phase
from rollbackd.incidents.decide import duration

if TYPE_CHECKING:  # the desk imports the web package: named for types only
    from rollbackd.runtime.approvals import ApprovalDesk, Look

CSRF_COOKIE = "rollbackd_csrf"
_CSRF_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}")
MAX_FORM_BYTES = 4096
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",  # the token is in the path: never pass it on
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}


_TEXT = {
    "en": {
        "title": "Roll back {target}?",
        "incident": "Incident",
        "rule": "Rule",
        "now": "now",
        "from": "Now running",
        "to": "Roll back to",
        "revision": "revision",
        "reason": "Why",
        "left": "Time left",
        "owner": "Owner",
        "rollback": "Roll back now",
        "hold": "Hold",
        "dry_run": "DRY-RUN: nothing will be written",
        "404": "This link is not valid.",
        "410expired": "This link expired.",
        "410answered": "This question was answered already: {phase}.",
        "410over": "This incident is over; nothing to answer.",
        "409": "{target} changed since the question was asked. Nothing was done.",
        "403": "The form expired. Open the link from DingTalk again.",
        "503": "Approvals are unavailable: rollbackd cannot read its signing key.",
        "done_rolling_back": "Rolling back {target} now. The outcome is posted in the group.",
        "done_verifying": "{target} was rolled back. The outcome is posted in the group.",
        "done_held": "Held: {target} is not rolled back.",
        "done_notified": "Not rolled back: {reason}",
        "done_assessing": "Approved: the rollback of {target} is being decided.",
        "done_over": "The incident is over.",
        "result": "Answer received",
    },
    "zh": {
        "title": "是否回滚 {target}？",
        "incident": "事件",
        "rule": "规则",
        "now": "当前",
        "from": "当前版本",
        "to": "回滚到",
        "revision": "版本",
        "reason": "原因",
        "left": "剩余时间",
        "owner": "属主",
        "rollback": "立即回滚",
        "hold": "暂不回滚",
        "dry_run": "演练模式：不会写入任何变更",
        "404": "链接无效。",
        "410expired": "链接已过期。",
        "410answered": "此审批已有答复：{phase}。",
        "410over": "事件已结束，无需答复。",
        "409": "{target} 在审批发出后已变更，未执行任何操作。",
        "403": "表单已失效，请从钉钉重新打开链接。",
        "503": "审批暂不可用：rollbackd 无法读取签名密钥。",
        "done_rolling_back": "正在回滚 {target}，结果将发到群里。",
        "done_verifying": "{target} 已回滚，结果将发到群里。",
        "done_held": "已暂缓：{target} 不回滚。",
        "done_notified": "未回滚：{reason}",
        "done_assessing": "已批准：正在判定 {target} 的回滚。",
        "done_over": "事件已结束。",
        "result": "已收到答复",
    },
}

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _page(language: str, status: int, **values: Any) -> HTMLResponse:
    template = _environment.get_template("approval.html.j2")
    html = template.render(t=_TEXT[language], language=language, **values)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _refusal(language: str, look: Look) -> HTMLResponse:
    text = _TEXT[language]
    target = str(look.question.target) if look.question is not None else ""
    key = f"{look.status}{look.why}" if look.status == 410 else str(look.status)
    phase = str(look.case.phase) if look.case is not None else ""
    message = text[key].format(target=target, phase=phase)
    return _page(language, look.status, view="message", heading=message, message="")


def _outcome(language: str, look: Look) -> str:
    text, case = _TEXT[language], look.case
    target = str(look.question.target) if look.question is not None else ""
    if case is None:
        return text["done_over"]
    key = {
        Phase.ROLLING_BACK: "done_rolling_back",
        Phase.VERIFYING: "done_verifying",
        Phase.HELD: "done_held",
        Phase.ASSESSING: "done_assessing",
    }.get(case.phase, "done_notified")
    return text[key].format(target=target, reason=case.facts.reason)


def _client(request: Request) -> str:
    direct = request.client.host if request.client is not None else "unknown"
    forwarded = request.headers.get("x-forwarded-for", "")
    return f"{direct} (for {forwarded[:100]})" if forwarded else direct


def approval_routes(desk: ApprovalDesk, *, language: str, secure: bool) -> list[Route]:
    """The two routes of ``/approvals/{token}``; ``secure`` marks the CSRF cookie Secure
    (``server.external_url`` is https)."""

    async def show(request: Request) -> Response:
        token = request.path_params["token"]
        look = desk.look(token)
        if look.status != 200 or look.case is None or look.now is None:
            return _refusal(language, look)
        case = look.case
        # the link's pair is kept while its cookie lives: a reload or a second tab of the
        # same page leaves every open form valid
        csrf = request.cookies.get(CSRF_COOKIE, "")
        if not _CSRF_SHAPE.fullmatch(csrf):
            csrf = secrets.token_urlsafe(24)
        assert case.asked_until is not None
        response = _page(
            language,
            200,
            view="question",
            heading=_TEXT[language]["title"].format(target=case.target),
            case=case,
            facts=case.facts,
            value=look.value,
            left=duration(case.asked_until - look.now),
            csrf=csrf,
            choice=request.query_params.get("choice", ""),
        )
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            max_age=int((case.asked_until - look.now).total_seconds()) + 60,
            path=request.url.path,  # one pair per link: two open pages never clash
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        return response

    async def answer(request: Request) -> Response:
        token = request.path_params["token"]
        body = await _bounded_body(request)
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace")) if body else {}
        given = (form.get("csrf") or [""])[0]
        expected = request.cookies.get(CSRF_COOKIE, "")
        choice = (form.get("answer") or [""])[0]
        if (
            not expected
            or not hmac.compare_digest(given.encode(), expected.encode())
            or choice not in ("rollback", "hold")
        ):
            return _page(language, 403, view="message", heading=_TEXT[language]["403"], message="")
        look = await desk.answer(
            token,
            approve=choice == "rollback",
            client=_client(request),
            agent=request.headers.get("user-agent", ""),
        )
        if look.status != 200:
            return _refusal(language, look)
        response = _page(
            language,
            200,
            view="message",
            heading=_TEXT[language]["result"],
            message=_outcome(language, look),
        )
        response.delete_cookie(CSRF_COOKIE, path=request.url.path)
        return response

    return [
        Route("/approvals/{token}", show, methods=["GET"]),
        Route("/approvals/{token}", answer, methods=["POST"]),
    ]


async def _bounded_body(request: Request) -> bytes:
    """The form's body, at most ``MAX_FORM_BYTES`` (a longer one is cut, then refused)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return b""
    return body
