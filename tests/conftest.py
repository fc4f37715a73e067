"""Fixtures shared by every test: real Prometheus and Alertmanager, the sample app."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from rollbackd.testing.app import SampleApp
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
    message = f"{names[0]} not found; install it: apt-get install {' '.join(DEBIAN_PACKAGES)}"
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
