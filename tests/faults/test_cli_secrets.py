"""No command prints a secret: not Prometheus's error text quoting it, not a config error
echoing one put in the wrong key (issue 14, case 9). Commands run as operators run them."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from rollbackd.testing.prometheus_stub import PrometheusStub, error

TOKEN = "tok/en+s3cr3t=value-91"
PASSWORD = "pa ss/w0rd+basic"


def rollbackd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def forms(secret: str) -> list[str]:
    encoded = base64.b64encode(secret.encode()).decode()
    return [secret, quote(secret, safe=""), quote_plus(secret), encoded]


@pytest.mark.parametrize("output", ["table", "json"])
def test_eval_masks_a_credential_quoted_by_prometheus(tmp_path: Path, output: str) -> None:
    """Prometheus (or a proxy in front of it) quoting the token, URL-encoded or in Base64
    in its error: `rollbackd eval` shows the error with the token masked (before: as is)."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    quoted = " ".join(forms(TOKEN))
    with PrometheusStub() as stub:
        stub.answer(error("bad_data", f"refused credentials {quoted}"), status=400)
        config = tmp_path / "config.yaml"
        config.write_text(
            f"prometheus: {{url: '{stub.url}', timeout: 2s, bearer_token_file: {token}}}\n"
            "rules: [{name: errors, expr: ratio, threshold: 0.05}]\n"
        )
        result = rollbackd("eval", "--config", str(config), "--output", output)
    assert result.returncode == 1
    printed = result.stdout + result.stderr
    assert "refused credentials" in printed
    assert "[REDACTED]" in printed
    for form in forms(TOKEN):
        assert form not in printed, form


def test_eval_masks_basic_auth_as_it_travels(tmp_path: Path) -> None:
    """The Base64 of user:password, as an auth proxy might echo it, is masked too."""
    pair = base64.b64encode(f"rb:{PASSWORD}".encode()).decode()
    with PrometheusStub() as stub:
        stub.answer(error("bad_data", f"bad header Basic {pair} and {PASSWORD}"), status=400)
        config = tmp_path / "config.yaml"
        config.write_text(
            f"prometheus: {{url: '{stub.url}', timeout: 2s, "
            f"basic_auth: {{username: rb, password: '{PASSWORD}'}}}}\n"
            "rules: [{name: errors, expr: ratio, threshold: 0.05}]\n"
        )
        result = rollbackd("eval", "--config", str(config), "--output", "json")
    printed = result.stdout + result.stderr
    assert "bad header" in printed
    assert pair not in printed
    assert PASSWORD not in printed


def test_check_config_never_echoes_a_secret_put_in_the_wrong_key(tmp_path: Path) -> None:
    """A token given where a path or a URL belongs: check-config names the problem and its
    line, with the value masked (before: the token was printed in the message)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "prometheus:\n"
        "  url: ${PROM_TOKEN}\n"
        "  bearer_token_file: ${PROM_TOKEN}\n"
        "alertmanager:\n  enabled: true\n  auth: {bearer_token: '${HOOK_TOKEN}'}\n"
        "  path: ${HOOK_TOKEN}\n"
        "  triggers: [{match: {alertname: X}}]\n"
    )
    result = rollbackd(
        "check-config",
        str(config),
        env={"PROM_TOKEN": TOKEN, "HOOK_TOKEN": "hook-token-5511"},
    )
    assert result.returncode == 2
    printed = result.stdout + result.stderr
    assert f"{config}:2: prometheus.url:" in printed
    assert f"{config}:3: prometheus.bearer_token_file:" in printed
    assert f"{config}:7: alertmanager.path:" in printed
    for secret in (TOKEN, "hook-token-5511"):
        assert secret not in printed, printed
    assert "[REDACTED]" in printed
