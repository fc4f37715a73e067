"""``action: approve`` through ``rollbackd run`` against real Prometheus, the fake API server
and the fake DingTalk robot: the actionCard's signed links, the page behind them in headless
Chromium, and every refusal over real HTTP."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from rollbackd.testing.browser import CHROMIUM_BINARIES, DRIVER_BINARIES, Browser
from rollbackd.testing.sandbox import Sandbox, wait_until
from rollbackd.testing.services import free_port
from tests.conftest import require_binary
from tests.e2e.test_daemon import log_events, start_and_settle

pytestmark = pytest.mark.integration


def asking(box: Sandbox, *, timeout: str, on_timeout: str = "notify") -> str:
    """Configure the box's rule with ``action: approve`` and a listener at a known port;
    returns the external URL the links point at."""
    port = free_port()
    secret = box.folder / "approval-key"
    secret.write_text("k3y-for-approval-links-0b1c\n")
    url = f"http://127.0.0.1:{port}"
    rules = [{**rule, "action": "approve"} for rule in box.settings()["rules"]]
    box.write_config(
        rules=rules,
        server={
            "listen": f"127.0.0.1:{port}",
            "external_url": url,
            "approval_secret_file": str(secret),
        },
        rollback={"approval": {"timeout": timeout, "on_timeout": on_timeout}},
    )
    return url


def cards(box: Sandbox, name: str) -> list[dict[str, Any]]:
    """The actionCards the robot received for ``shop/<name>``."""
    return [
        m["body"]["actionCard"]
        for m in box.messages()
        if m["body"]["msgtype"] == "actionCard"
        and f"shop/{name}" in m["body"]["actionCard"]["title"]
    ]


def link(box: Sandbox, name: str, choice: str = "rollback") -> str:
    """The button link of ``shop/<name>``'s approval request that preselects ``choice``."""
    assert wait_until(lambda: cards(box, name), 60), f"no approval request for {name}"
    (card,) = cards(box, name)
    urls = [b["actionURL"] for b in card["btns"] if b["actionURL"].endswith(f"choice={choice}")]
    assert len(urls) == 1
    return str(urls[0])


def titles(box: Sandbox) -> list[str]:
    return [m["body"][m["body"]["msgtype"]]["title"] for m in box.messages()]


def csrf_pair(http: httpx.Client, url: str) -> tuple[httpx.Response, str]:
    """GET the page; the response and the CSRF token its form carries (the cookie's twin)."""
    page = http.get(url)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    return page, found.group(1) if found else ""


def answer(http: httpx.Client, url: str, choice: str, csrf: str) -> httpx.Response:
    return http.post(url.split("?", 1)[0], data={"csrf": csrf, "answer": choice})


def test_a_person_approves_in_chromium_and_the_release_is_rolled_back(box: Sandbox) -> None:
    """A bad release under a rule with ``action: approve`` is not rolled back until a person
    says so: the group gets an actionCard whose two buttons carry signed links; opening one
    (any number of times) changes nothing; in Chromium the page says what will happen, and
    "Roll back now" rolls the Deployment back once; the link then answers 410, and a forged
    or truncated one 404."""
    require_binary(CHROMIUM_BINARIES)
    require_binary(DRIVER_BINARIES)
    asking(box, timeout="5m")
    start_and_settle(box)
    box.deploy("web", "nginx:2.0")
    url = link(box, "web")
    (card,) = cards(box, "web")
    assert [b["title"] for b in card["btns"]] == ["Roll back now", "Hold"]
    assert card["btnOrientation"] == "1"
    assert "Approve rollback?" in card["title"]

    with httpx.Client(timeout=10) as http:
        for _ in range(3):  # chat clients and link scanners open links on their own
            assert http.get(url).status_code == 200
        assert http.head(url).status_code in (200, 405)
    assert box.rollback_patches() == []
    assert box.image("web") == "nginx:2.0"

    with Browser() as browser:
        browser.open(url)
        assert browser.text("#heading") == "Roll back shop/web?"
        assert "nginx:2.0" in browser.text("#from")
        assert "nginx:1.0" in browser.text("#to")
        assert browser.text("#rule").startswith("high-error-rate: now")
        assert re.fullmatch(r"4m\d\ds", browser.text("#left"))  # of 5m
        size = browser.screenshot(box.folder / "approval.png")
        assert size > 10_000
        assert box.rollback_patches() == []
        browser.click("#rollback")
        assert wait_until(lambda: browser.count("#message") == 1, 15)
        assert "shop/web" in browser.text("#message")
        assert wait_until(lambda: box.image("web") == "nginx:1.0", 30)
        assert len(box.rollback_patches()) == 1

        browser.open(url)  # a second use
        assert "answered already" in browser.text("#heading")
    assert (box.folder / "approval.png").stat().st_size == size

    token = url.split("/approvals/")[1].split("?")[0]
    base = url.split("/approvals/")[0]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with httpx.Client(timeout=10) as http:
        assert http.get(url).status_code == 410
        page, csrf = csrf_pair(http, url)
        assert csrf == ""  # a refusal has no form
        for bad in (forged, token[:-6], token.split(".")[0], "x" * 600):
            assert http.get(f"{base}/approvals/{bad}").status_code == 404
            assert "not valid" in http.get(f"{base}/approvals/{bad}").text
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in page.headers["content-security-policy"]
    time.sleep(2)
    assert len(box.rollback_patches()) == 1  # nothing acted on the refused uses

    assert wait_until(lambda: "Recovered" in " ".join(titles(box)), 60)
    told = titles(box)
    assert told.index(card["title"]) < next(
        i for i, t in enumerate(told) if t.startswith("Rollback approved")
    )
    answered = [e for e in log_events(box.daemon_logs[0]) if e.get("event") == "approval_answered"]
    assert len(answered) == 1
    assert answered[0]["client"] == "127.0.0.1"
    assert "Chrome" in answered[0]["user_agent"]
    assert answered[0]["answer"] == "rollback"


def test_changed_and_expired_links_are_refused_and_nothing_is_done(box: Sandbox) -> None:
    """Two bad releases ask at once. One workload changes again before its link is used:
    the answer is 409 and nothing is rolled back. The other link is never answered: after
    ``approval.timeout`` it answers 410 and ``on_timeout: notify`` tells the group that
    nobody answered; a reload in between keeps the page's form valid. A form without its
    CSRF pair is 403; with the key file emptied every link is 503. No rollback at all."""
    box.errors_by_image["nginx:2.1"] = 0.3
    box.deploy("api", "nginx:1.0")
    asking(box, timeout="20s", on_timeout="notify")
    start_and_settle(box)
    box.deploy("web", "nginx:2.0")
    box.deploy("api", "nginx:2.0")
    web, api = link(box, "web"), link(box, "api", "hold")

    with httpx.Client(timeout=10) as http:
        page, csrf = csrf_pair(http, api)
        assert page.status_code == 200
        assert csrf
        assert answer(http, api, "rollback", "not-the-cookie").status_code == 403
        box.deploy("api", "nginx:2.1")  # a newer release lands before the answer
        refused = answer(http, api, "rollback", csrf)
        assert refused.status_code == 409
        assert "changed since the question was asked" in refused.text

        page, csrf = csrf_pair(http, web)
        assert page.status_code == 200
        assert wait_until(lambda: http.get(web).status_code == 410, 40)
        assert "expired" in http.get(web).text
        assert answer(http, web, "rollback", csrf).status_code == 410

        (box.folder / "approval-key").write_text("")  # the Secret emptied: nothing verifies
        unreadable = http.get(api)
        assert unreadable.status_code == 503
        assert "cannot read its signing key" in unreadable.text
        assert "approval-key" not in unreadable.text

    assert wait_until(lambda: "nobody answered within 20s" in box.robot.texts(), 20)
    assert box.rollback_patches() == []
    assert (box.image("web"), box.image("api")) == ("nginx:2.0", "nginx:2.1")
    refusals = [e for e in log_events(box.daemon_logs[0]) if e.get("event") == "approval_refused"]
    assert sorted(e["status"] for e in refusals) == [409, 410]
