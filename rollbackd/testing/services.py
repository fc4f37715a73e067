"""Start the real Prometheus, Alertmanager and VictoriaMetrics binaries for tests and the demo.

Each service gets a free loopback port, its own temporary config and data folders, and is
stopped by PID. Waiting is bounded: a service that is not ready in time is killed and its
output is shown in the error.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml

PROMETHEUS_BINARIES = ("prometheus",)
PROMTOOL_BINARIES = ("promtool",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
VICTORIAMETRICS_BINARIES = ("victoria-metrics", "victoriametrics")
DEBIAN_PACKAGES = ("prometheus", "prometheus-alertmanager", "victoria-metrics")
BROWSER_PACKAGES = ("chromium", "chromium-driver")


class ServiceError(RuntimeError):
    """A test service could not be started."""


def find_binary(names: Sequence[str]) -> str | None:
    """The first of ``names`` found on PATH, or None."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def end_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, and SIGKILL when it has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Process(ABC):
    binary: str
    name: str
    ready_path: str = "/-/ready"
    startup_timeout: float = 30.0
    port: int = field(default_factory=free_port)
    workdir: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"rollbackd-{self.name}-"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "output.log"

    @abstractmethod
    def arguments(self) -> list[str]:
        """The binary's command-line flags."""

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, *self.arguments()],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise ServiceError(f"{self.name} exited at start-up:\n{self.output()}")
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"{self.name} not ready in {self.startup_timeout}s:\n{self.output()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def reload(self) -> None:
        """Re-read the configuration file, as SIGHUP does for both binaries."""
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def terminate(self, timeout: float = 10.0) -> None:
        """Stop the process, keeping its data: ``start`` brings it back on the same port."""
        if self.process is not None:
            end_process(self.process, timeout)
        self.process = None

    def stop(self) -> None:
        """Stop the process and remove its folders."""
        self.terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> _Process:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Prometheus(_Process):
    """A real Prometheus scraping the given targets every ``scrape_interval``."""

    def __init__(
        self,
        *,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        rule_files: dict[str, str] | None = None,
        alertmanagers: Sequence[str] = (),
        evaluation_interval: str = "1s",
        alert_resend_delay: str = "1s",
        binary: str | None = None,
    ) -> None:
        found = binary or find_binary(PROMETHEUS_BINARIES)
        if found is None:
            raise ServiceError("prometheus is not installed (apt-get install prometheus)")
        super().__init__(binary=found, name="prometheus")
        self.scrape_targets = list(scrape_targets)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = dict(rule_files or {})
        self.alertmanagers = list(alertmanagers)
        self.alert_resend_delay = alert_resend_delay
        self.write_config()

    def write_config(self) -> None:
        """Write prometheus.yml and the rule files; call ``reload`` after changing them."""
        for name, text in self.rule_files.items():
            (self.workdir / name).write_text(text)
        config: dict[str, object] = {
            **_scrape_config(self.scrape_targets, self.scrape_interval),
            "rule_files": [str(self.workdir / name) for name in self.rule_files],
        }
        config["global"] = {
            "scrape_interval": self.scrape_interval,
            "evaluation_interval": self.evaluation_interval,
        }
        if self.alertmanagers:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]
            }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def backfill(self, openmetrics: str, *, timeout: float = 300.0) -> None:
        """Write a known history into the TSDB before ``start``: ``openmetrics`` is
        OpenMetrics text (ending in ``# EOF``), turned into blocks by ``promtool tsdb
        create-blocks-from openmetrics`` as an operator backfills."""
        promtool = find_binary(PROMTOOL_BINARIES)
        if promtool is None:
            raise ServiceError("promtool is not installed (apt-get install prometheus)")
        source = self.workdir / "backfill.om"
        source.write_text(openmetrics)
        done = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), "data"],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        source.unlink()
        if done.returncode != 0:
            raise ServiceError(f"promtool could not backfill:\n{done.stderr[-4000:]}")

    def wait_until_scraped(self, timeout: float = 30.0) -> None:
        """Block until every scrape target has been scraped successfully at least once.

        Prometheus applies its first scrape targets a few seconds after it is ready.
        """
        _wait_until_up(self.url, len(self.scrape_targets), timeout)

    def first_crossing(
        self,
        expr: str,
        threshold: float,
        *,
        labels: dict[str, str],
        start: float,
        end: float,
        step: float = 0.01,
        held: float = 0.0,
    ) -> float | None:
        """The first moment in [start, end], to ``step`` seconds, at which ``expr >
        threshold`` for the series with ``labels`` and then stays so for ``held`` seconds:
        no evaluator can see the breach (held for ``held``) sooner.

        Between scrapes the value still moves (a sample leaves the rate window, the
        extrapolation to its edges changes), so the expression is judged at every ``step``,
        not only at scrape times.
        """
        query = urllib.parse.urlencode(
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        )
        url = f"{self.url}/api/v1/query_range?{query}"
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310
            result = json.load(answer)["data"]["result"]
        crossings = []
        for item in result:
            if not labels.items() <= item["metric"].items():
                continue
            began: float | None = None
            for stamp, value in item["values"]:
                if float(value) <= threshold:
                    began = None
                    continue
                began = float(stamp) if began is None else began
                if float(stamp) - began >= held - step / 2:
                    crossings.append(began)
                    break
        return min(crossings, default=None)

    def arguments(self) -> list[str]:
        return [
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            f"--rules.alert.resend-delay={self.alert_resend_delay}",
        ]


def _scrape_config(targets: Sequence[str], interval: str) -> dict[str, object]:
    return {
        "global": {"scrape_interval": interval},
        "scrape_configs": [
            {
                "job_name": "app",
                "scrape_interval": interval,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }


def _wait_until_up(url: str, count: int, timeout: float) -> None:
    """Block until ``up`` answers 1 for ``count`` targets at ``url``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/v1/query?query=up", timeout=5) as answer:  # noqa: S310
            result = json.load(answer)["data"]["result"]
        if len(result) == count and all(s["value"][1] == "1" for s in result):
            return
        time.sleep(0.2)
    raise ServiceError(f"{count} scrape targets not seen up at {url} within {timeout}s")


class VictoriaMetrics(_Process):
    """A real VictoriaMetrics single node scraping the given targets by itself.

    ``latency_offset`` is ``-search.latencyOffset``: VictoriaMetrics hides samples newer
    than that from instant queries (30 s by default); the tests pass 0s.
    """

    def __init__(
        self,
        *,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        latency_offset: str = "0s",
        retention: str = "1d",
        binary: str | None = None,
    ) -> None:
        found = binary or find_binary(VICTORIAMETRICS_BINARIES)
        if found is None:
            raise ServiceError("victoria-metrics is missing (apt-get install victoria-metrics)")
        super().__init__(binary=found, name="victoriametrics", ready_path="/health")
        self.scrape_targets = list(scrape_targets)
        self.latency_offset = latency_offset
        self.retention = retention
        config = _scrape_config(self.scrape_targets, scrape_interval)
        (self.workdir / "scrape.yml").write_text(yaml.safe_dump(config))

    def wait_until_scraped(self, timeout: float = 30.0) -> None:
        """Block until every target's samples can be queried (the first takes ~10 s)."""
        _wait_until_up(self.url, len(self.scrape_targets), timeout)

    def arguments(self) -> list[str]:
        return [
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            f"-promscrape.config={self.workdir / 'scrape.yml'}",
            f"-search.latencyOffset={self.latency_offset}",
            f"-retentionPeriod={self.retention}",
            "-loggerLevel=WARN",
        ]


class Alertmanager(_Process):
    """A real Alertmanager whose one route posts every alert to ``webhook_url``."""

    def __init__(
        self,
        *,
        webhook_url: str,
        bearer_token: str = "",
        group_wait: str = "0s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        binary: str | None = None,
    ) -> None:
        found = binary or find_binary(ALERTMANAGER_BINARIES)
        if found is None:
            raise ServiceError(
                "alertmanager is not installed (apt-get install prometheus-alertmanager)"
            )
        super().__init__(binary=found, name="alertmanager")
        webhook: dict[str, object] = {"url": webhook_url, "send_resolved": True}
        if bearer_token:
            webhook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials": bearer_token}
            }
        config = {
            "route": {
                "receiver": "rollbackd",
                "group_by": ["alertname", "namespace", "deployment"],
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
            },
            "receivers": [{"name": "rollbackd", "webhook_configs": [webhook]}],
        }
        (self.workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))

    def arguments(self) -> list[str]:
        return [
            f"--config.file={self.workdir / 'alertmanager.yml'}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # No gossip: a lone test instance must not look for peers on the network.
            "--cluster.listen-address=",
        ]

    @property
    def address(self) -> str:
        """host:port, as Prometheus's alerting config wants it."""
        return f"127.0.0.1:{self.port}"
