"""Loading the configuration file: schema, durations, secrets, and every problem reported."""

from __future__ import annotations

import tempfile
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from rollbackd.errors import ConfigError
from rollbackd.settings import (
    Settings,
    format_duration,
    load_settings,
    parse_duration,
    redacted_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"
EXAMPLE_ENV = {
    "DINGTALK_TOKEN": "tok-3f9a7c1e2b",
    "DINGTALK_SECRET": "SECa8d7f6e5c4b3a2",
    "DINGTALK_APP_KEY": "dingkey-77aa",
    "DINGTALK_APP_SECRET": "appsecret-99bb",
    "ROLLBACKD_WEBHOOK_TOKEN": "webhook-token-1234",
}


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {})
    return caught.value.lines()


def test_example_is_valid() -> None:
    """The shipped example loads as-is once its secrets are in the environment."""
    settings = load_settings(EXAMPLE, environ=EXAMPLE_ENV)
    assert [rule.name for rule in settings.rules] == ["high-error-rate", "p99-latency"]
    assert settings.rules[0].for_ == timedelta(minutes=2)
    assert settings.rules[1].interval == timedelta(seconds=15)
    assert settings.leader_election.lease_duration == timedelta(seconds=15)


def _schema_keys(model: type[BaseModel]) -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(field.alias or name)
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                keys |= _schema_keys(annotation)
            stack.extend(getattr(annotation, "__args__", ()))
    return keys


def test_example_names_every_key_of_the_schema() -> None:
    """config.example.yaml documents every configuration key an operator can set."""
    text = EXAMPLE.read_text()
    missing = sorted(key for key in _schema_keys(Settings) if f"{key}:" not in text)
    assert missing == []


def test_every_field_has_a_description() -> None:
    """check-config can explain every key: no field is left without a description."""
    undocumented: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if model is not Settings and not field.description:
                undocumented.append(f"{prefix}{name}")
            for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
                for inner in [arg, *getattr(arg, "__args__", ())]:
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        walk(inner, f"{prefix}{name}.")

    walk(Settings, "")
    assert undocumented == []


def test_bad_duration_unknown_key_and_missing_env_are_all_reported(tmp_path: Path) -> None:
    """Three unrelated mistakes come back together, each with its line and key path."""
    text = EXAMPLE.read_text().replace("for: 2m", "for: 2x") + "\nlogginx: {}\n"
    path = write(tmp_path, text)
    env = {k: v for k, v in EXAMPLE_ENV.items() if k != "DINGTALK_SECRET"}
    lines = problems(path, env)
    assert len(lines) >= 3
    for_line = next(i for i, line in enumerate(text.splitlines(), 1) if "for: 2x" in line)
    assert f"{path}:{for_line}: rules[0].for: invalid duration '2x'" in "\n".join(lines)
    assert any(
        ": notifications.robots[0].secret: environment variable DINGTALK_SECRET is not set" in line
        and "[ERR_CONFIG_ENV_MISSING]" in line
        for line in lines
    )
    assert any("logginx: unknown key (did you mean 'logging'?)" in line for line in lines)


def test_problem_lines_point_at_the_offending_line(tmp_path: Path) -> None:
    """Each problem names the line an operator has to edit, not just the section."""
    path = write(
        tmp_path,
        """\
        rules:
          - name: a
            expr: up
            threshold: 1
            op: "=="
        server:
          listen: nowhere
        """,
    )
    lines = problems(path)
    assert f"{path}:5: rules[0].op:" in lines[0]
    assert f"{path}:7: server.listen: 'nowhere' is not host:port" in lines[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1,\n", "invalid YAML"),
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- a\n- b\n", "the top level must be a mapping"),
    ],
)
def test_unusable_files_give_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    """Bad YAML, an empty file or a list at the top give exactly one line, no traceback."""
    lines = problems(write(tmp_path, text))
    assert len(lines) == 1
    assert expected in lines[0]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    """A path that does not exist is reported with ERR_CONFIG_NOT_FOUND."""
    lines = problems(tmp_path / "absent.yaml")
    assert lines == [f"{tmp_path / 'absent.yaml'}: file not found [ERR_CONFIG_NOT_FOUND]"]


def test_duplicate_rule_and_robot_names_are_errors(tmp_path: Path) -> None:
    """Two rules with one name would share state and metrics: refused, with both places."""
    path = write(
        tmp_path,
        """\
        rules:
          - {name: errors, expr: up, threshold: 1}
          - {name: errors, expr: up, threshold: 2}
        notifications:
          robots:
            - {name: r, kind: webhook, url: "https://x/robot/send?access_token=abcdef"}
            - {name: r, kind: webhook, url: "https://x/robot/send?access_token=abcdef"}
        """,
    )
    lines = problems(path)
    assert any(
        "rules[1].name: duplicate name 'errors', first used at rules[0]" in line for line in lines
    )
    assert any("notifications.robots[1].name: duplicate name 'r'" in line for line in lines)


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    """A key written twice silently drops the first in YAML; rollbackd refuses it."""
    path = write(tmp_path, "rollback:\n  cooldown: 5m\n  cooldown: 10m\n")
    assert problems(path) == [f"{path}:3: rollback.cooldown: duplicate key [ERR_CONFIG_INVALID]"]


def test_lease_timings_must_nest(tmp_path: Path) -> None:
    """check-config refuses unsafe Lease timings: lease_duration > renew_deadline >
    1.2 x retry_period, as client-go requires."""
    path = write(tmp_path, "leader_election: {lease_duration: 10s, renew_deadline: 10s}\n")
    (line,) = problems(path)
    assert "leader_election.renew_deadline: renew_deadline 10s must be shorter than" in line
    path = write(tmp_path, "leader_election: {renew_deadline: 5s, retry_period: 5s}\n")
    assert "retry_period 5s must be shorter than renew_deadline 5s / 1.2" in problems(path)[0]
    # client-go's margin: a jittered retry must still land before the renew deadline
    path = write(tmp_path, "leader_election: {renew_deadline: 6s, retry_period: 5s}\n")
    assert "retry_period 5s must be shorter than renew_deadline 6s / 1.2" in problems(path)[0]


def test_regexes_must_compile(tmp_path: Path) -> None:
    """A broken match_re is caught offline, not when the first alert arrives."""
    path = write(
        tmp_path,
        """\
        alertmanager:
          enabled: true
          auth: {bearer_token: abcdefgh}
          triggers:
            - match_re: {severity: "crit(ical"}
        """,
    )
    (line,) = problems(path)
    assert "alertmanager.triggers[0].match_re.severity: invalid regular expression" in line


def test_templates_must_compile(tmp_path: Path) -> None:
    """An operator's broken message template fails check-config, naming file and line."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "breach.md.j2").write_text("ok\n{% if x %}\nno end\n")
    path = write(tmp_path, "notifications: {templates_dir: templates}\n")
    (line,) = problems(path)
    assert "notifications.templates_dir: template breach.md.j2 line " in line
    assert "endif" in line


def test_unauthenticated_webhook_receiver_is_refused(tmp_path: Path) -> None:
    """An open Alertmanager receiver would let anyone trigger rollbacks."""
    path = write(tmp_path, "alertmanager: {enabled: true}\n")
    assert "auth is required when enabled" in problems(path)[0]


def test_interval_must_exceed_the_query_timeout(tmp_path: Path) -> None:
    """A query that may outlast its rule's interval would pile up ticks."""
    path = write(
        tmp_path,
        "prometheus: {timeout: 10s}\nrules: [{name: a, expr: up, threshold: 1, interval: 5s}]\n",
    )
    assert "must be shorter than rule 'a''s interval 5s" in problems(path)[0]


def test_secret_files_must_exist_and_are_relative_to_the_config(tmp_path: Path) -> None:
    """A *_file key naming a missing file is an error; relative paths start at the file."""
    path = write(tmp_path, "prometheus: {bearer_token_file: token}\n")
    (line,) = problems(path)
    assert "prometheus.bearer_token_file: file token does not exist" in line
    assert line.endswith("[ERR_CONFIG_FILE_MISSING]")
    (tmp_path / "token").write_text("prom-token-value\n")
    settings = load_settings(path, environ={})
    assert settings.prometheus.bearer_token_file == str(tmp_path / "token")
    assert "prom-token-value" in settings.secret_values()


def test_env_expansion_inside_strings_and_dollar_escape(tmp_path: Path) -> None:
    """${VAR} expands anywhere in a value; $$ writes a literal dollar."""
    path = write(tmp_path, "prometheus: {url: 'http://${HOST}:9090'}\nrules: []\n")
    assert load_settings(path, environ={"HOST": "prom"}).prometheus.url == "http://prom:9090"
    path = write(tmp_path, "kubernetes: {namespaces: ['a$$b']}\n")
    assert load_settings(path, environ={}).kubernetes.namespaces == ["a$b"]


def test_empty_env_var_is_missing(tmp_path: Path) -> None:
    """A variable set to the empty string is as missing as an unset one: never an empty secret."""
    path = write(tmp_path, "alertmanager: {enabled: true, auth: {bearer_token: '${T}'}}\n")
    assert "environment variable T is not set" in problems(path, {"T": ""})[0]


def test_print_redacts_every_secret() -> None:
    """--print shows the effective configuration without any secret value."""
    settings = load_settings(EXAMPLE, environ=EXAMPLE_ENV)
    text = redacted_yaml(settings)
    for secret in EXAMPLE_ENV.values():
        assert secret not in text
    assert yaml.safe_load(text)["rules"][0]["for"] == "2m"


def test_label_selector_is_checked(tmp_path: Path) -> None:
    """A malformed opt-in selector would match nothing or everything: refused."""
    good = write(tmp_path, "kubernetes: {selector: 'team in (a, b),!legacy,tier!=db'}\n")
    assert load_settings(good, environ={}).kubernetes.selector.startswith("team in")
    path = write(tmp_path, "kubernetes: {selector: 'a=b=c'}\n")
    assert "is not a valid Kubernetes label selector" in problems(path)[0]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("15s", 15), ("2m", 120), ("1h30m", 5400), ("1d", 86400), ("0", 0)],
)
def test_prometheus_durations(text: str, seconds: float) -> None:
    """Durations read as Prometheus writes them."""
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["2x", "", "m", "1.5m", "5 m", "1m1h", "-1s"])
def test_invalid_durations(text: str) -> None:
    """Anything Prometheus would not accept as a duration is refused."""
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_bare_numbers_are_not_durations() -> None:
    """A number without a unit is ambiguous (seconds? minutes?): refused."""
    with pytest.raises(ValueError, match="with a unit"):
        parse_duration(90)


@given(st.integers(min_value=0, max_value=10**9))
def test_durations_round_trip(millis: int) -> None:
    """What --print writes reads back to the same duration."""
    value = timedelta(milliseconds=millis)
    assert parse_duration(format_duration(value)) == value


@given(st.text(max_size=200))
def test_any_text_is_loaded_or_refused_cleanly(text: str) -> None:
    """Whatever the file holds, loading yields settings or ConfigError, never a crash."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        outcome: list[str] = []
        try:
            load_settings(path, environ={})
        except ConfigError as exc:
            outcome = exc.lines()
            assert all(line.startswith(str(path)) for line in outcome)


def test_backend_headers_params_and_cluster_name_are_checked(tmp_path: Path) -> None:
    """A header that is not a header, a value that would inject a line, an Authorization
    header next to bearer_token, a parameter rollbackd sets itself, a cluster name with a
    space: each is one clear line at its key, before anything queries."""
    token = write(tmp_path, "tenant-token-3f9a\n", "prom-token")
    path = write(
        tmp_path,
        f"""\
        kubernetes: {{cluster_name: "prod bj"}}
        prometheus:
          bearer_token_file: {token}
          headers: {{"X Scope": a, X-Ok: "a${{NL}}b", Authorization: "Bearer x"}}
          params: {{query: up, dedup: "true"}}
        """,
    )
    found = "\n".join(problems(path, {"NL": "\r\n"}))
    assert "kubernetes.cluster_name" in found
    assert "'X Scope' is not an HTTP header name" in found
    assert "line breaks" in found
    assert "parameter 'query' is set by rollbackd" in found


def test_authorization_header_and_bearer_token_conflict(tmp_path: Path) -> None:
    """Two ways to set Authorization are refused rather than one silently winning."""
    path = write(
        tmp_path,
        """\
        prometheus:
          bearer_token: tok-1234567
          headers: {Authorization: "Bearer other"}
        """,
    )
    assert "would both set Authorization" in "\n".join(problems(path))


def test_header_secrets_are_masked(tmp_path: Path) -> None:
    """A credential header's inline value and every header file's content are secrets of
    the configuration (masked in logs, messages and CLI output); a tenant name is not."""
    key = write(tmp_path, "file-api-key-0c1d\n", "prom-key")
    path = write(
        tmp_path,
        f"""\
        prometheus:
          headers: {{X-Scope-OrgID: team-alpha, X-Api-Token: inline-token-9e8d}}
          header_files: {{X-Api-Key: {key}}}
          params: {{dedup: "true", "extra_filters[]": ['{{job="app"}}']}}
        """,
    )
    settings = load_settings(path, environ={})
    assert settings.prometheus.params["extra_filters[]"] == ['{job="app"}']
    secrets = settings.secret_values()
    assert {"inline-token-9e8d", "file-api-key-0c1d"} <= set(secrets)
    assert "team-alpha" not in secrets


def test_progress_deadline_settings_are_checked(tmp_path: Path) -> None:
    """``on_progress_deadline`` takes rollback, notify or ignore (notify by default), and no
    rule of the operator's may take the built-in rule's name ``progress-deadline``."""
    assert (
        load_settings(write(tmp_path, "rules: []\n"), environ={}).rollback.on_progress_deadline
        == "notify"
    )
    lines = problems(write(tmp_path, "rollback: {on_progress_deadline: page}\n"))
    assert any("rollback.on_progress_deadline" in line for line in lines)
    taken = "rules: [{name: progress-deadline, expr: up, threshold: 1}]\n"
    lines = problems(write(tmp_path, taken))
    assert any("built-in rule of stalled rollouts" in line for line in lines), lines
    assert all(line.endswith("[ERR_CONFIG_INVALID]") for line in lines)
