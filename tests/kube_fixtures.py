"""Reading the captures of a real control plane kept in tests/fixtures/k8s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "k8s"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def items(name: str) -> list[dict[str, Any]]:
    return list(load(name)["items"])


def captured_undo_patch() -> list[dict[str, Any]]:
    """The body of the PATCH ``kubectl rollout undo`` sent at revision 3."""
    requests = load("rollout-undo-requests.json")["requests"]
    (patch,) = [r for r in requests if r["method"] == "PATCH"]
    return list(patch["body"])
