"""Fixtures shared by every test: real Prometheus, Alertmanager and VictoriaMetrics, the
sample app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from rollbackd.model import Verdict
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import AlertmanagerSettings, ServerSettings
from rollbackd.testing.app import SampleApp
from rollbackd.testing.kube import KubeApiServer
from rollbackd.testing.sandbox import Sandbox, Warm
from rollbackd.testing.services import (
    ALERTMANAGER_BINARIES,
    BROWSER_PACKAGES,
    DEBIAN_PACKAGES,
    PROMETHEUS_BINARIES,
    VICTORIAMETRICS_BINARIES,
    Prometheus,
    find_binary,
)
from rollbackd.web import HttpServer, WebhookIntake, build_app


def require_binary(names: tuple[str, ...]) -> None:
    """Skip when a binary is absent on a developer machine; fail when CI is set."""
    if find_binary(names) is not None:
        return
    package = (
        "kubectl"
        if names[0] == "kubectl"
        else " ".join(BROWSER_PACKAGES if "chrom" in names[0] else DEBIAN_PACKAGES)
    )
    message = f"{names[0]} not found; install it: apt-get install {package}"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {message}")
    pytest.skip(message)


@pytest.fixture
def prometheus_binary() -> None:
    require_binary(PROMETHEUS_BINARIES)


@pytest.fixture
def alertmanager_binary() -> None:
    require_binary(ALERTMANAGER_BINARIES)


@pytest.fixture
def victoriametrics_binary() -> None:
    require_binary(VICTORIAMETRICS_BINARIES)


@pytest.fixture
def sample_app() -> Iterator[SampleApp]:
    with SampleApp() as app:
        yield app


@pytest.fixture
def prometheus(prometheus_binary: None, sample_app: SampleApp) -> Iterator[Prometheus]:
    """A real Prometheus scraping the sample app every second."""
    with Prometheus(scrape_targets=[sample_app.address], scrape_interval="1s") as server:
        yield server


@dataclass
class Kube:
    """The fake API server, a kubeconfig file for it, and an official client."""

    server: KubeApiServer
    kubeconfig: Path
    api: client.ApiClient
    cache_dir: Path

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against the fake, with a throwaway discovery cache."""
        result = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    server = KubeApiServer().start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(server.kubeconfig())
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    api = client.ApiClient(configuration)
    try:
        yield Kube(server, kubeconfig, api, tmp_path / "kubectl-cache")
    finally:
        api.close()
        server.stop()


@pytest.fixture
def kubectl_binary() -> None:
    require_binary(("kubectl",))


@dataclass
class Receiver:
    """rollbackd's HTTP listener on a real port, run on its own loop in a thread."""

    url: str
    verdicts: list[Verdict]
    telemetry: Telemetry
    ready: list[bool]
    loop: asyncio.AbstractEventLoop
    intake: WebhookIntake

    def drain(self) -> None:
        """Wait until every accepted payload became verdicts."""
        asyncio.run_coroutine_threadsafe(self.intake.drain(), self.loop).result(10)

    def metric(self, name: str, labels: dict[str, str]) -> float:
        return self.telemetry.value(name, labels)


WEBHOOK_TOKEN = "am-token-5f1c9e"
GOOD_HEADERS = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}


def alertmanager_settings(**overrides: object) -> AlertmanagerSettings:
    fields: dict[str, object] = {
        "enabled": True,
        "auth": {"bearer_token": WEBHOOK_TOKEN},
        "triggers": [{"match": {"alertname": "HighErrorRate"}, "action": "rollback"}],
    }
    fields.update(overrides)
    return AlertmanagerSettings.model_validate(fields)


def start_receiver(
    settings: AlertmanagerSettings | None = None,
    max_body: int = 1_048_576,
    capacity: int = 1000,
    hold: threading.Event | None = None,
    server: dict[str, Any] | None = None,
) -> tuple[Receiver, Any]:
    """Start a receiver; returns it and the function that stops it."""
    am = settings or alertmanager_settings()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    verdicts: list[Verdict] = []
    telemetry = Telemetry()
    ready = [True]

    async def sink(batch: list[Verdict]) -> None:
        if hold is not None:  # a slow consumer, to fill the queue
            await asyncio.to_thread(hold.wait, 10)
        verdicts.extend(batch)

    async def setup() -> tuple[HttpServer, WebhookIntake]:
        intake = WebhookIntake(
            am, clock=SystemClock(), telemetry=telemetry, sink=sink, capacity=capacity
        )
        listener = ServerSettings.model_validate(
            {"listen": "127.0.0.1:0", "max_body_bytes": max_body, **(server or {})}
        )
        app = build_app(
            server=listener,
            alertmanager=am,
            telemetry=telemetry,
            intake=intake,
            ready=lambda: ready[0],
        )
        http = HttpServer(app, listener)
        await http.start()
        worker = asyncio.get_running_loop().create_task(intake.run())
        workers.append(worker)
        return http, intake

    workers: list[asyncio.Task[None]] = []
    http, intake = asyncio.run_coroutine_threadsafe(setup(), loop).result(10)

    async def teardown() -> None:
        await http.stop()
        for worker in workers:
            worker.cancel()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(teardown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()

    url = f"http://127.0.0.1:{http.port}"
    return Receiver(url, verdicts, telemetry, ready, loop, intake), stop


@pytest.fixture
def make_receiver() -> Iterator[Any]:
    stops: list[Any] = []

    def start(**kwargs: Any) -> Receiver:
        receiver, stop = start_receiver(**kwargs)
        stops.append(stop)
        return receiver

    yield start
    for stop in stops:
        stop()


class Warmer:
    """Keeps the next sandbox's app and Prometheus starting in the background while a test
    runs, so that no test waits out Prometheus's first-targets delay. Each sandbox still
    gets fresh processes of its own; only their start moves earlier."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warmer")
        self._next: Future[Warm] | None = None

    def take(self) -> Warm:
        ready = self._next or self._pool.submit(Warm)
        self._next = self._pool.submit(Warm)
        return ready.result()

    def close(self) -> None:
        if self._next is not None:
            with contextlib.suppress(Exception):  # a pair that failed to start has stopped
                self._next.result().stop()
        self._pool.shutdown()


@pytest.fixture(scope="session")
def warmer() -> Iterator[Warmer]:
    warmer = Warmer()
    yield warmer
    warmer.close()


@pytest.fixture
def box(tmp_path: Path, prometheus_binary: None, warmer: Warmer) -> Iterator[Sandbox]:
    """The sandbox with shop/web at nginx:1.0 scraped, where nginx:2.0 fails 30% of requests."""
    with Sandbox(tmp_path, warm=warmer.take()) as sandbox:
        sandbox.errors_by_image = {"nginx:2.0": 0.3}
        sandbox.deploy("web", "nginx:1.0")
        assert sandbox.prometheus is not None
        sandbox.prometheus.wait_until_scraped()
        yield sandbox
