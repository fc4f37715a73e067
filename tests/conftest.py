"""Fixtures shared by every test: real Prometheus and Alertmanager, the sample app."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from rollbackd.testing.app import SampleApp
from rollbackd.testing.kube import KubeApiServer
from rollbackd.testing.services import (
    ALERTMANAGER_BINARIES,
    DEBIAN_PACKAGES,
    PROMETHEUS_BINARIES,
    Prometheus,
    find_binary,
)


def require_binary(names: tuple[str, ...]) -> None:
    """Skip when a binary is absent on a developer machine; fail when CI is set."""
    if find_binary(names) is not None:
        return
    package = " ".join(DEBIAN_PACKAGES) if names[0] != "kubectl" else "kubectl"
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
