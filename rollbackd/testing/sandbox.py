"""A whole world for rollbackd on one machine: the fake API server, the real Prometheus
(or a real VictoriaMetrics), the sample workload and the fake DingTalk robot, plus a
configuration that ties them.

The end-to-end tests and ``rollbackd demo`` run ``rollbackd run`` against it. The sample
workload behaves like a real service: its error ratio follows the image the Deployment
runs (``errors_by_image``), so a rollback really ends the errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from kubernetes import client, config

from rollbackd.testing.app import SampleApp, set_traffic
from rollbackd.testing.dingtalk import FakeDingTalk
from rollbackd.testing.kube import Cluster, KubeApiServer, seed
from rollbackd.testing.services import Alertmanager, Prometheus, VictoriaMetrics
from rollbackd.testing.serving import Started

NAMESPACE = "shop"
ROBOT_TOKEN = "sandbox-robot-token-51f0"  # noqa: S105 - the sandbox's own fake robot
ROBOT_SECRET = "SECsandbox0123456789abcdef"  # noqa: S105
RULE_EXPR = (
    'sum by (namespace, deployment) (rate(http_requests_total{code="500"}[5s]))'
    " / sum by (namespace, deployment) (rate(http_requests_total[5s]))"
)


class Warm:
    """A sample app and a real Prometheus scraping it every second, started ahead of the
    sandbox that takes them: Prometheus applies its first scrape targets about five seconds
    after it starts, and a test suite need not wait for that once per sandbox."""

    def __init__(self, interval: str = "1s") -> None:
        self.interval = interval
        self.app = SampleApp().start()
        self.prometheus = Prometheus(
            scrape_targets=[self.app.address], evaluation_interval=interval
        )
        try:
            self.prometheus.start()
            self.prometheus.wait_until_scraped()
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        self.prometheus.stop()
        self.app.stop()


class Sandbox(Started):
    """Everything rollbackd talks to, started and stopped together. ``warm`` (without alert
    rules or Alertmanager) brings an app and a Prometheus already scraping it. With
    ``backend="victoriametrics"`` a VictoriaMetrics single node scrapes the app and
    answers rollbackd's queries instead of Prometheus."""

    def __init__(
        self,
        folder: Path,
        *,
        rule_for: str = "4s",
        interval: str = "1s",
        echo_messages: bool = False,
        alert_rules: str = "",
        alert_webhook: str = "",
        alert_token: str = "",
        warm: Warm | None = None,
        backend: Literal["prometheus", "victoriametrics"] = "prometheus",
    ) -> None:
        self.folder = folder
        self.kube = KubeApiServer()
        assert warm is None or not (alert_rules or alert_webhook), "a warm pair has no alerts"
        assert warm is None or warm.interval == interval
        assert backend == "prometheus" or not (warm or alert_rules), "alerts need Prometheus"
        self.backend = backend
        self._warm = warm
        self.app = warm.app if warm else SampleApp()
        self.robot = FakeDingTalk()
        self.robot.state.echo = echo_messages
        self.prometheus: Prometheus | VictoriaMetrics | None = None
        self.rule_for, self.interval = rule_for, interval
        self.errors_by_image: dict[str, float] = {}
        self.errors_since: dict[str, float] = {}  # monotonic time a Deployment began failing
        self.alert_rules, self.alert_webhook = alert_rules, alert_webhook
        self.alert_token = alert_token
        self.alertmanager: Alertmanager | None = None
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.daemon_logs: list[Path] = []
        self._images: dict[str, str] = {}  # the image each workload's traffic follows
        self._stop = threading.Event()
        self.kubeconfig = folder / "kubeconfig"
        self.config = folder / "config.yaml"

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        self.kube.start()
        self.robot.start()
        self.kubeconfig.write_text(self.kube.kubeconfig())
        if self._warm is not None:
            self.prometheus = self._warm.prometheus
        else:
            self._start_prometheus()
        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        self.api = client.ApiClient(configuration)
        seed.create_namespace(self.api, NAMESPACE)
        seed.create_namespace(self.api, "rollbackd")
        self.write_config()
        threading.Thread(target=self._follow_images, daemon=True).start()
        return self

    def _start_prometheus(self) -> None:
        self.app.start()
        if self.backend == "victoriametrics":
            self.prometheus = VictoriaMetrics(scrape_targets=[self.app.address])
            self.prometheus.start()
            return
        alertmanagers = []
        if self.alert_webhook:
            self.alertmanager = Alertmanager(
                webhook_url=self.alert_webhook, bearer_token=self.alert_token
            )
            self.alertmanager.start()
            alertmanagers.append(self.alertmanager.address)
        rule_files = {"alerts.yml": self.alert_rules} if self.alert_rules else None
        self.prometheus = Prometheus(
            scrape_targets=[self.app.address],
            rule_files=rule_files,
            alertmanagers=alertmanagers,
            evaluation_interval=self.interval,
        )
        self.prometheus.start()

    def stop(self) -> None:
        self._stop.set()
        for daemon in self.daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
        for daemon in self.daemons:
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(5)
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.alertmanager is not None:
            self.alertmanager.stop()
        self.robot.stop()
        self.app.stop()
        self.kube.stop()

    # --- configuration ---------------------------------------------------------------------------

    def settings(self, **overrides: Any) -> dict[str, Any]:
        assert self.prometheus is not None
        settings: dict[str, Any] = {
            "kubernetes": {"kubeconfig": str(self.kubeconfig), "namespaces": [NAMESPACE]},
            "prometheus": {"url": self.prometheus.url, "timeout": "800ms"},
            "rules": [
                {
                    "name": "high-error-rate",
                    "expr": RULE_EXPR,
                    "op": ">",
                    "threshold": 0.05,
                    "for": self.rule_for,
                    "interval": self.interval,
                    "min_traffic": {
                        "expr": "sum by (namespace, deployment) (rate(http_requests_total[5s]))",
                        "op": ">=",
                        "threshold": 1,
                    },
                }
            ],
            "rollback": {
                "change_window": "10m",
                "cooldown": "15m",
                "wait_for_rollout": "20s",
                "verify_window": "60s",
            },
            "notifications": {
                "language": "en",
                "robots": [
                    {
                        "name": "oncall",
                        "kind": "webhook",
                        "url": f"{self.robot.url}/robot/send?access_token={ROBOT_TOKEN}",
                        "secret": ROBOT_SECRET,
                    }
                ],
            },
            "server": {"listen": "127.0.0.1:0"},
            "leader_election": {
                "enabled": True,
                "namespace": "rollbackd",
                "lease_name": "rollbackd",
                "lease_duration": "3s",
                "renew_deadline": "2s",
                "retry_period": "500ms",
            },
            "logging": {"format": "json", "level": "info"},
        }
        for section, values in overrides.items():
            settings[section] = (
                {**settings.get(section, {}), **values} if isinstance(values, dict) else values
            )
        return settings

    def write_config(self, **overrides: Any) -> None:
        self.robot.robot(ROBOT_TOKEN, secret=ROBOT_SECRET)
        self.config.write_text(yaml.safe_dump(self.settings(**overrides), sort_keys=False))

    # --- the workload ------------------------------------------------------------------

    def deploy(self, name: str, image: str, *, rps: float = 50, change_cause: str = "") -> None:
        """Create the Deployment (opted in) or change its image, as a release does."""
        existing = self.kube.cluster.get("deployments", NAMESPACE, name)
        if existing is None:
            seed.create_deployment(
                self.api, NAMESPACE, name, image=image, labels={"rollbackd.io/enabled": "true"}
            )
        else:
            seed.set_image(self.api, NAMESPACE, name, image, change_cause=change_cause)
        self._apply_traffic(name, image, rps)
        self._images[name] = image  # the traffic follows this release from now on

    def image(self, name: str) -> str:
        deployment = self.kube.cluster.get("deployments", NAMESPACE, name)
        assert deployment is not None
        return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])

    def _apply_traffic(self, name: str, image: str, rps: float = 50) -> None:
        errors = self.errors_by_image.get(image, 0.0)
        set_traffic(self.app.url, NAMESPACE, name, rps=rps, error_ratio=errors)
        if errors and name not in self.errors_since:
            self.errors_since[name] = time.monotonic()

    def _follow_images(self) -> None:
        """The workload's errors follow the image it runs, like a real release's would:
        after a rollback, or any change ``deploy`` did not make."""
        seen = self._images
        while not self._stop.wait(0.2):
            for deployment in self.kube.cluster.list_objects("deployments", NAMESPACE):
                name = deployment["metadata"]["name"]
                image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
                if seen.get(name) != image:
                    seen[name] = image
                    with contextlib.suppress(OSError):  # the app is stopping
                        self._apply_traffic(name, image)

    # --- rollbackd -----------------------------------------------------------------------

    def start_daemon(self, *extra: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        """``rollbackd run`` as the pod ``rollbackd-<n>`` in namespace rollbackd (the pod
        exists in the fake, as the downward API names it), logging to ``log``."""
        pod = f"rollbackd-{len(self.daemons)}"
        path = log or self.folder / f"{pod}.log"
        with self.kube.cluster.lock:
            self.kube.cluster.put(
                "pods",
                "rollbackd",
                Cluster.new_object(
                    "Pod", "v1", pod, "rollbackd", {"metadata": {"labels": {"app": "rollbackd"}}}
                ),
            )
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "POD_NAME": pod, "POD_NAMESPACE": "rollbackd"}
        with path.open("wb") as out:  # the child keeps its own copy of the descriptor
            daemon = subprocess.Popen(
                [sys.executable, "-m", "rollbackd", "run", "--config", str(self.config), *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.daemons.append(daemon)
        self.daemon_logs.append(path)
        return daemon

    def settled(self, cycles: int = 2) -> bool:
        """Whether a daemon leads and has evaluated every rule ``cycles`` times since,
        without a failed query: the hold windows have seen the current release. Without
        rules (the Alertmanager receiver alone), leading is enough."""
        if not (yaml.safe_load(self.config.read_text()) or {}).get("rules"):
            cycles = 0
        for path in self.daemon_logs:
            leading, clean = False, 0
            for line in path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "leadership_changed":
                    leading, clean = bool(event.get("leader")), 0
                elif leading and event.get("event") == "evaluation_cycle":
                    clean = clean + 1 if not event.get("failed") else 0
            if leading and clean >= cycles:
                return True
        return False

    def leader_pods(self) -> list[str]:
        """The daemons' pods that carry the leader label (the webhook Service's selector)."""
        return [
            pod["metadata"]["name"]
            for pod in self.kube.cluster.list_objects("pods", "rollbackd")
            if (pod["metadata"].get("labels") or {}).get("rollbackd.io/leader") == "true"
        ]

    def rollback_patches(self) -> list[Any]:
        """The rollback PATCHes the fake API server received (JSON patches with a test op)."""
        return [
            r
            for r in self.kube.requests
            if r.method == "PATCH"
            and "/deployments/" in r.path
            and r.content_type.startswith("application/json-patch+json")
        ]

    def messages(self) -> list[dict[str, Any]]:
        return self.robot.messages


def wait_until(condition: Callable[[], Any], seconds: float = 10.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False
