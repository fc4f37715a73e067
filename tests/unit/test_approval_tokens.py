"""Approval links' tokens and the settings that make them: what a forged, truncated or
re-keyed link gets (nothing), and which configurations refuse to start."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollbackd.errors import ConfigError
from rollbackd.model import Target
from rollbackd.settings import load_settings
from rollbackd.web.tokens import MAX_TOKEN, Question, read, sign

KEY = b"approval-key-5e1d"
QUESTION = Question(
    "rb-20261204-101500-ab12",
    Target("shop", "web"),
    "f6aea9a01ac9968e",
    datetime(2026, 12, 4, 10, 25, tzinfo=UTC),
)


def test_a_signed_token_reads_back_as_its_question() -> None:
    """The link names exactly the incident, workload, template and expiry it was made for."""
    token = sign(KEY, QUESTION)
    assert read(KEY, token) == QUESTION
    assert len(token) < MAX_TOKEN
    assert all(c.isalnum() or c in "-_." for c in token)  # safe in a URL path as is


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=40))
def test_any_change_to_a_token_makes_it_unknown(position: int, cut: int) -> None:
    """A forged, altered or truncated link is unknown (the page answers 404), never a
    question about something else."""
    token = sign(KEY, QUESTION)
    index = position % len(token)
    flipped = "A" if token[index] != "A" else "B"
    altered = token[:index] + flipped + token[index + 1 :]
    assert read(KEY, altered) is None
    assert read(KEY, token[:-cut]) is None


def test_another_key_an_empty_key_and_odd_shapes_are_unknown() -> None:
    """A rotated key ends every old link; an empty key accepts nothing; garbage is refused
    before decoding."""
    token = sign(KEY, QUESTION)
    assert read(b"rotated-key", token) is None
    assert read(b"", token) is None
    payload = token.split(".")[0]
    for odd in ("", ".", payload, f"{token}.x", "a" * (MAX_TOKEN + 1), "%%%.%%%", f"{payload}."):
        assert read(KEY, odd) is None
    other = sign(KEY, Question(QUESTION.incident, Target("shop", "api"), "0", QUESTION.expires))
    spliced = f"{payload}.{other.split('.')[1]}"
    assert read(KEY, spliced) is None  # one link's signature does not sign another's question


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


RULE = "rules: [{name: errors, expr: up, threshold: 1, action: approve}]\n"


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    return caught.value.lines()


def test_approve_without_a_reachable_page_is_a_config_error(tmp_path: Path) -> None:
    """``action: approve`` without ``server.external_url`` or the signing key would ask a
    question nobody can answer: check-config says so with ERR_CONFIG_INVALID."""
    (line,) = problems(write(tmp_path, RULE))
    assert "rule 'errors' has action approve: set server.external_url" in line
    assert line.endswith("[ERR_CONFIG_INVALID]")
    (tmp_path / "key").write_text("k\n")
    trigger = textwrap.dedent(
        """\
        server: {external_url: 'https://rollbackd.example.cn/', approval_secret_file: key}
        alertmanager:
          enabled: true
          auth: {bearer_token: t0ken-abc}
          triggers: [{match: {alertname: X}, action: approve}]
        """
    )
    settings = load_settings(write(tmp_path, RULE + trigger), environ={})
    assert settings.server.external_url == "https://rollbackd.example.cn"
    assert settings.server.approval_secret_file == str(tmp_path / "key")
    assert settings.rollback.approval.timeout.total_seconds() == 600
    assert settings.rollback.approval.on_timeout == "notify"
    no_url = "server: {approval_secret_file: key}\n"
    assert (
        "alertmanager trigger 0" in problems(write(tmp_path, no_url + trigger.split("\n", 1)[1]))[0]
    )


def test_bad_external_url_and_on_timeout_are_refused(tmp_path: Path) -> None:
    """An external URL people cannot open and an unknown on_timeout are reported, located."""
    text = "server: {external_url: 'rollbackd:8080'}\nrollback: {approval: {on_timeout: wait}}\n"
    lines = problems(write(tmp_path, text))
    assert any("server.external_url" in line and "not an http" in line for line in lines)
    assert any("rollback.approval.on_timeout" in line for line in lines)
