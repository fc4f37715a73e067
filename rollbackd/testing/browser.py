"""Headless Chromium for page tests, driven by chromedriver over the W3C WebDriver API.

Debian's ``chromium`` and ``chromium-driver`` (``make deps`` installs them). The driver
listens on a free loopback port; the browser starts headless with a fixed window, so
screenshots have a known size. Waiting is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from rollbackd.testing.services import ServiceError, end_process, find_binary, free_port

CHROMIUM_BINARIES = ("chromium", "chromium-browser")
DRIVER_BINARIES = ("chromedriver",)
W3C_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element key


class Browser:
    """One headless Chromium session."""

    def __init__(self, *, width: int = 1000, height: int = 1400, timeout: float = 30.0) -> None:
        chromium, driver = find_binary(CHROMIUM_BINARIES), find_binary(DRIVER_BINARIES)
        if chromium is None or driver is None:
            raise ServiceError("chromium and chromium-driver are not installed (make deps)")
        self._port = free_port()
        self._profile = tempfile.TemporaryDirectory(prefix="rollbackd-chromium-")
        self._driver = subprocess.Popen(
            [driver, f"--port={self._port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{self._port}", timeout=timeout)
        self._wait_ready(timeout)
        options = {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
            ],
        }
        capabilities = {"browserName": "chrome", "goog:chromeOptions": options}
        answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self._session = f"/session/{answer['sessionId']}"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._driver.poll() is not None:
                raise ServiceError("chromedriver exited at start-up")
            try:
                if self._http.get("/status").json()["value"]["ready"]:
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        self.close()
        raise ServiceError(f"chromedriver not ready in {timeout}s")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        answer = self._http.request(method, path, json=body if body is not None else None)
        value = answer.json().get("value")
        if answer.status_code >= 400:
            raise ServiceError(f"webdriver {method} {path}: {value}")
        return value

    def open(self, url: str) -> None:
        self._call("POST", f"{self._session}/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        """Run ``source`` (a function body) in the page and return its value."""
        return self._call(
            "POST", f"{self._session}/execute/sync", {"script": source, "args": list(args)}
        )

    def count(self, css: str) -> int:
        found = self._call(
            "POST", f"{self._session}/elements", {"using": "css selector", "value": css}
        )
        return len(found)

    def _element(self, css: str) -> str:
        found = self._call(
            "POST", f"{self._session}/element", {"using": "css selector", "value": css}
        )
        if not isinstance(found, dict) or W3C_ELEMENT not in found:
            raise ServiceError(f"no element matches {css!r}: {found}")
        return str(found[W3C_ELEMENT])

    def text(self, css: str) -> str:
        """The visible text of the first element matching ``css``."""
        return str(self._call("GET", f"{self._session}/element/{self._element(css)}/text"))

    def click(self, css: str) -> None:
        self._call("POST", f"{self._session}/element/{self._element(css)}/click", {})

    def screenshot(self, path: Path) -> int:
        """Write a PNG of the window to ``path``; returns its size in bytes."""
        data = base64.b64decode(self._call("GET", f"{self._session}/screenshot"))
        path.write_bytes(data)
        return len(data)

    def close(self) -> None:
        if hasattr(self, "_session"):
            with contextlib.suppress(httpx.HTTPError, ServiceError):
                self._call("DELETE", self._session)
        self._http.close()
        end_process(self._driver)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
