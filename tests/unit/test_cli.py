"""The rollbackd command line as an operator runs it: exit statuses and one line per error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.unit.test_settings import EXAMPLE, EXAMPLE_ENV


def rollbackd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in EXAMPLE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


def test_check_config_accepts_the_example() -> None:
    """`rollbackd check-config config.example.yaml` exits 0 with its secrets in the environment."""
    result = rollbackd("check-config", str(EXAMPLE), env=EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    assert "valid (2 rules, 2 robots)" in result.stdout


def test_check_config_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    """A bad duration, an unknown key and an unset secret: exit 2, three FILE:LINE: lines."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("for: 2m", "for: 2x") + "\nlogginx: {}\n")
    env = {k: v for k, v in EXAMPLE_ENV.items() if k != "DINGTALK_SECRET"}
    result = rollbackd("check-config", str(bad), env=env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) >= 3
    for line in lines:
        file, line_number, key, _ = line.split(":", 3)
        assert file == str(bad)
        assert line_number.isdigit()
        assert key.strip()
    assert "Traceback" not in result.stderr


def test_unusable_files_exit_2_with_one_line(tmp_path: Path) -> None:
    """Bad YAML, an empty file and a missing file: one clear line each, exit 2, no traceback."""
    (tmp_path / "bad.yaml").write_text("rules: [\n")
    (tmp_path / "empty.yaml").write_text("")
    for name, expected in [
        ("bad.yaml", "ERR_CONFIG_YAML"),
        ("empty.yaml", "ERR_CONFIG_EMPTY"),
        ("missing.yaml", "ERR_CONFIG_NOT_FOUND"),
    ]:
        result = rollbackd("check-config", str(tmp_path / name))
        assert result.returncode == 2, name
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr


def test_print_shows_effective_config_without_secrets() -> None:
    """--print lists defaults the file left out and masks every secret value."""
    result = rollbackd("check-config", "--print", str(EXAMPLE), env=EXAMPLE_ENV)
    assert result.returncode == 0
    assert "keep_firing_for: 0s" in result.stdout  # p99-latency's default
    assert "**********" in result.stdout
    for secret in EXAMPLE_ENV.values():
        assert secret not in result.stdout
