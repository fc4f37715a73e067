"""``rollbackd demo``: a bad release rolled back end to end, on this machine, with a timeline.

The sandbox (``rollbackd.testing.sandbox``) runs the fake Kubernetes API server, the real
Prometheus, the sample workload and the fake DingTalk robot; ``rollbackd run`` runs as a
child process against them. v1 is healthy, v2 fails 30% of its requests, rollbackd undoes
v2 and the errors stop.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click

from rollbackd.testing.sandbox import NAMESPACE, Sandbox, wait_until
from rollbackd.testing.services import DEBIAN_PACKAGES, PROMETHEUS_BINARIES, find_binary

LIMIT_SECONDS = 110


def run_demo(echo: Callable[[str], None] = click.echo) -> int:
    if find_binary(PROMETHEUS_BINARIES) is None:
        echo(f"the demo needs Prometheus: apt-get install {' '.join(DEBIAN_PACKAGES)}")
        return 1
    started = time.monotonic()

    def say(text: str) -> None:
        echo(f"[{time.monotonic() - started:5.1f}s] {text}")

    with (
        tempfile.TemporaryDirectory(prefix="rollbackd-demo-") as folder,
        Sandbox(Path(folder), rule_for="5s", interval="1s") as box,
    ):
        assert box.prometheus is not None
        say(
            f"sandbox up: fake Kubernetes API {box.kube.url}, Prometheus {box.prometheus.url}, "
            f"DingTalk robot {box.robot.url}"
        )
        box.errors_by_image = {"nginx:2.0": 0.3}
        box.deploy("web", "nginx:1.0")
        say(f"v1 deployed: {NAMESPACE}/web nginx:1.0, 50 requests/s, no errors")
        box.prometheus.wait_until_scraped()
        box.start_daemon()
        say("rollbackd started: rule high-error-rate > 5% for 5s, evaluated every second")
        wait_until(box.settled, 30)
        box.deploy("web", "nginx:2.0")
        say("v2 deployed: nginx:2.0, which fails 30% of its requests")
        shown = 0
        rolled_back = recovered = False
        while time.monotonic() - started < LIMIT_SECONDS and not recovered:
            messages = box.messages()
            for message in messages[shown:]:
                say(f"DingTalk <- {message['body']['markdown']['title']}")
            shown = len(messages)
            if not rolled_back and box.rollback_patches():
                rolled_back = True
                say(f"rolled back: {NAMESPACE}/web runs {box.image('web')} again")
            recovered = any(
                m["body"]["markdown"]["title"].startswith("Recovered") for m in messages
            )
            time.sleep(0.2)
        if recovered:
            last = box.messages()[-1]["body"]["markdown"]["text"]
            echo("\nthe last message:\n" + last)
            say("done: a bad release was rolled back and the service recovered")
            return 0
        say("the demo did not finish in time; rollbackd's log:")
        echo((Path(folder) / "rollbackd-0.log").read_text()[-4000:])
        return 1
