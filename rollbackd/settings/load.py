"""Loading the configuration file: one YAML parse, with every problem located.

``load_settings`` reads one YAML file, expands ``${VAR}`` from the environment, checks
every ``*_file`` path, validates the result against ``Settings`` and reports every problem
at once, each with the line of the file it comes from. Secrets become ``SecretStr``;
nothing is ever replaced by an empty value.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rollbackd.errors import (
    ConfigEmpty,
    ConfigEnvMissing,
    ConfigError,
    ConfigFileMissing,
    ConfigNotFound,
    ConfigProblem,
    ConfigSecretEmpty,
    ConfigSyntaxError,
    SecretUnavailable,
)
from rollbackd.settings.notifications import AppRobot, WebhookRobot
from rollbackd.settings.root import Settings
from rollbackd.settings.values import credential_header, read_secret_file

Loc = tuple[str | int, ...]


class _Lines:
    """Maps key paths of a YAML document to their line numbers, and finds duplicate keys."""

    def __init__(self, root: yaml.Node) -> None:
        self.by_path: dict[Loc, int] = {(): root.start_mark.line + 1}
        self.duplicates: list[tuple[Loc, int]] = []
        self._walk(root, ())

    def _walk(self, node: yaml.Node, path: Loc) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[object] = set()
            for key_node, value_node in node.value:
                key = key_node.value
                child = (*path, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.by_path[child] = key_node.start_mark.line + 1
                self._walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                self.by_path[child] = item.start_mark.line + 1
                self._walk(item, child)

    def line(self, loc: Loc) -> int:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.by_path:
                return self.by_path[loc[:end]]
        return 1


def render_path(loc: Loc) -> str:
    """``("rules", 0, "for")`` -> ``rules[0].for``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(
    node: object, path: Loc, environ: Mapping[str, str], missing: list[tuple[Loc, str]]
) -> object:
    if isinstance(node, dict):
        return {
            key: _expand_env(value, (*path, key), environ, missing) for key, value in node.items()
        }
    if isinstance(node, list):
        return [_expand_env(item, (*path, i), environ, missing) for i, item in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in environ or environ[name] == "":
            missing.append((path, name))
            return match.group(0)
        return environ[name]

    return _ENV_RE.sub(substitute, node)


_SECRET_KEY_RE = re.compile(r"(token|secret|password|app_key)(_file)?$")


def _possible_secrets(
    raw: object, expanded: object, environ: Mapping[str, str], base: Path
) -> tuple[str, ...]:
    """Whatever in a configuration may be secret, wherever it was put: every ${VAR} value
    used, every value of a secret key, and the content of every secret file it names."""
    found: set[str] = set()
    for _, text in _leaves(raw):
        found |= {environ[name] for name in _ENV_RE.findall(text) if environ.get(name)}
    for key, text in _leaves(expanded):
        match = _SECRET_KEY_RE.search(key)
        if match is None:
            continue
        found.add(text)
        if match.group(2):  # a *_file key: the file holds the secret
            found.add(_file_content(text, base))
    found |= _header_secrets(expanded, base)
    return tuple(sorted(value for value in found if value))


def _file_content(text: str, base: Path) -> str:
    """A named secret file's content (relative to the configuration), or "" if unreadable."""
    file = Path(text) if Path(text).is_absolute() else base / text
    try:
        return read_secret_file(str(file))
    except SecretUnavailable:
        return ""


def _header_secrets(expanded: object, base: Path) -> set[str]:
    """The query backend's credential headers: inline values of headers named like a
    credential, and the content of every header file."""
    section = expanded.get("prometheus") if isinstance(expanded, dict) else None
    if not isinstance(section, dict):
        return set()
    found: set[str] = set()
    headers, files = section.get("headers"), section.get("header_files")
    if isinstance(headers, dict):
        found |= {str(v) for k, v in headers.items() if credential_header(str(k))}
    if isinstance(files, dict):
        found |= {_file_content(str(text), base) for text in files.values()}
    return found


def _leaves(node: object, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, value) of every string in a YAML document; list items keep their list's key."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _leaves(value, str(name))
    elif isinstance(node, list):
        for item in node:
            yield from _leaves(item, key)
    elif isinstance(node, str):
        yield key, node


def _schema_fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _extra_key_message(loc: Loc) -> str:
    """Turn pydantic's 'Extra inputs' into a hint naming the key that was probably meant."""
    known = _known_keys_at(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}"


def _known_keys_at(loc: Loc) -> list[str]:
    model: Any = Settings
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            # A discriminated union's tag (e.g. "webhook") selects the model.
            model = {"webhook": WebhookRobot, "app": AppRobot}.get(str(part))
            continue
        model = _model_in(field.annotation)
    return _schema_fields(model) if model is not None and hasattr(model, "model_fields") else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _clean_loc(loc: Loc, raw: object) -> Loc:
    """Drop the discriminator tags pydantic inserts into locations (robots[0].webhook.url)."""
    cleaned: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        cleaned.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(cleaned)


_PROBLEM_CODES = {"file_missing": ConfigFileMissing.code, "secret_empty": ConfigSecretEmpty.code}


def _problems_from(exc: ValidationError, raw: object, lines: _Lines) -> Iterator[ConfigProblem]:
    for error in exc.errors(include_url=False):
        loc = _clean_loc(tuple(error["loc"]), raw)
        if error["type"] == "extra_forbidden":
            message = _extra_key_message(loc)
        elif error["type"] == "value_error":
            message = str(error["ctx"]["error"])
        elif error["type"] == "missing":
            message = "required key is missing"
        else:
            message = error["msg"]
        message = message.removeprefix("Value error, ")
        code = _PROBLEM_CODES.get(error["type"], ConfigError.code)
        yield ConfigProblem(render_path(loc), message, code, lines.line(loc))


def _duplicate_names(raw: dict[str, Any], lines: _Lines) -> Iterator[ConfigProblem]:
    sections: dict[Loc, object] = {
        ("rules",): raw.get("rules"),
        ("notifications", "robots"): (raw.get("notifications") or {}).get("robots")
        if isinstance(raw.get("notifications"), dict)
        else None,
    }
    for path, items in sections.items():
        if not isinstance(items, list):
            continue
        seen: dict[object, int] = {}
        for index, item in enumerate(items):
            if not isinstance(item, dict) or "name" not in item:
                continue
            name = item["name"]
            if name in seen:
                loc = (*path, index, "name")
                yield ConfigProblem(
                    render_path(loc),
                    f"duplicate name {name!r}, first used at {render_path((*path, seen[name]))}",
                    ConfigError.code,
                    lines.line(loc),
                )
            else:
                seen[name] = index


def key_line(file: str | Path, loc: Loc) -> int:
    """The line of ``loc`` (or of its nearest parent) in a configuration file."""
    try:
        root = yaml.compose(Path(file).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return 1
    return _Lines(root).line(loc) if root is not None else 1


def warnings_of(settings: Settings) -> list[tuple[Loc, str]]:
    """What is valid but probably not meant: (key path, message) each."""
    found: list[tuple[Loc, str]] = []
    if settings.alertmanager.enabled:
        for index, trigger in enumerate(settings.alertmanager.triggers):
            if trigger.action == "rollback" and trigger.pending_for is None:
                found.append(
                    (
                        ("alertmanager", "triggers", index),
                        "no pending_for: when Prometheus's ALERTS_FOR_STATE cannot tell when "
                        "the breach began, this trigger only notifies (unknown_breach_start)",
                    )
                )
    return found


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers) and its value, from one parse."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()


def load_settings(file: str | Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate one configuration file, or raise ``ConfigError`` with every problem."""
    name = str(file)
    path = Path(file)
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            name, [ConfigProblem("", "file not found", ConfigNotFound.code)]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            name, [ConfigProblem("", f"cannot read the file: {reason}", ConfigNotFound.code)]
        ) from None

    try:
        root, raw = _parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
        raise ConfigError(
            name, [ConfigProblem("", message, ConfigSyntaxError.code, line)]
        ) from None

    if root is None or raw is None:
        raise ConfigError(
            name,
            [ConfigProblem("", "the file is empty; see config.example.yaml", ConfigEmpty.code, 1)],
        )
    lines = _Lines(root)
    if not isinstance(raw, dict):
        raise ConfigError(
            name,
            [ConfigProblem("", "the top level must be a mapping of sections", ConfigError.code, 1)],
        )

    problems = [
        ConfigProblem(render_path(loc), "duplicate key", ConfigError.code, line)
        for loc, line in lines.duplicates
    ]
    missing: list[tuple[Loc, str]] = []
    expanded = _expand_env(raw, (), environ, missing)
    problems += [
        ConfigProblem(
            render_path(loc),
            f"environment variable {var} is not set",
            ConfigEnvMissing.code,
            lines.line(loc),
        )
        for loc, var in missing
    ]
    problems += _duplicate_names(raw, lines)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(
            expanded, context={"base_dir": str(path.resolve().parent)}
        )
    except ValidationError as exc:
        problems += _problems_from(exc, raw, lines)
    if problems or settings is None:
        secrets = _possible_secrets(raw, expanded, environ, path.resolve().parent)
        raise ConfigError(name, problems, secrets=secrets)
    return settings


class _ReadableDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as literal blocks, as people write them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def redacted_yaml(settings: Settings) -> str:
    """The effective configuration as YAML, with every secret masked."""
    data = settings.model_dump(mode="json", by_alias=True)
    return yaml.dump(data, Dumper=_ReadableDumper, sort_keys=False, allow_unicode=True)
