"""One vocabulary: message events and decision reasons are defined once, as enums, and the
configuration, templates and docs an operator reads name exactly those."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from rollbackd.incidents.decide import Choice
from rollbackd.model import DEPLOY_EVENTS, DecisionReason, Event
from rollbackd.settings import NotificationSettings

ROOT = Path(__file__).resolve().parents[2]


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of each row of the markdown table under ``header``."""
    lines = text[text.index(header) :].splitlines()[2:]
    end = next(i for i, line in enumerate(lines) if not line.startswith("|"))
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:end]]


def table_codes(text: str, header: str) -> list[str]:
    """The backticked codes in the first column of the markdown table under ``header``."""
    return [code for row in table_rows(text, header) for code in re.findall(r"`([a-z_]+)`", row[0])]


def test_readme_lists_every_decision_reason_once() -> None:
    """The README's guard table names each reason code of decisions_total, Events and
    messages exactly once, and no code the product does not emit."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    codes = table_codes(readme, "| reason | decision |")
    assert sorted(codes) == sorted(reason.value for reason in DecisionReason)
    assert len(codes) == len(set(codes))
    decisions = {row[1] for row in table_rows(readme, "| reason | decision |")}
    assert decisions == {choice.value for choice in Choice}


def test_operator_guide_names_only_real_reasons() -> None:
    """The operator's guide explains reasons by their real codes (a renamed one fails here)."""
    guide = (ROOT / "docs" / "operator-guide.md").read_text(encoding="utf-8")
    codes = table_codes(guide, "| reason | decision | meaning |")
    assert codes
    assert set(codes) <= {reason.value for reason in DecisionReason}


def test_readme_lists_every_message_event_once() -> None:
    """The README's event table is the list of messages an operator can choose from."""
    codes = table_codes((ROOT / "README.md").read_text(encoding="utf-8"), "| event | when it is")
    assert codes == [event.value for event in Event]


@pytest.mark.parametrize(
    "config",
    ["config.example.yaml", "deploy/base/config.yaml", "deploy/overlays/argocd/config.yaml"],
)
def test_shipped_configurations_send_every_incident_event(config: str) -> None:
    """A configuration copied from the examples hears every incident event, the outage
    included, and names the deploy-status events it leaves off (the issue asks that they
    be off unless listed)."""
    text = (ROOT / config).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    assert raw["notifications"]["events"] == [e.value for e in Event if e not in DEPLOY_EVENTS]
    comment = next(line for line in text.splitlines() if "deploy status, off unless" in line)
    assert all(event.value in comment for event in DEPLOY_EVENTS)


def test_the_default_is_every_incident_event_and_every_event_has_its_templates() -> None:
    """Without notifications.events every incident event is sent and no deploy-status one,
    and each event has a zh and an en template, so no event can be configured that has
    nothing to say."""
    assert NotificationSettings().events == [e for e in Event if e not in DEPLOY_EVENTS]
    folder = resources.files("rollbackd.notifications") / "templates"
    names = {entry.name for entry in folder.iterdir()}
    for event in Event:
        assert {f"{event}.zh.md.j2", f"{event}.en.md.j2"} <= names, event
