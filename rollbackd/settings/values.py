"""The value types of the configuration: durations, secrets, names, validators."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rollbackd.errors import SecretUnavailable
from rollbackd.selectors import SelectorError, split_terms

_DURATION_UNITS = {
    "y": timedelta(days=365),
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
}
# Prometheus's own duration grammar: units in decreasing order, each at most once.
_DURATION_RE = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)


def parse_duration(value: object) -> timedelta:
    """Parse a Prometheus-style duration such as ``500ms``, ``15s``, ``2m`` or ``1h30m``."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a duration with a unit, like 15s, 2m or 1h, got {value!r}")
    text = value.strip()
    match = _DURATION_RE.match(text)
    if text == "0":
        return timedelta(0)
    if not text or match is None:
        raise ValueError(
            f"invalid duration {value!r}: use a number and a unit, like 500ms, 15s, 2m or 1h"
        )
    total = timedelta(0)
    for amount, unit in zip(match.groups(), _DURATION_UNITS.values(), strict=True):
        if amount is not None:
            total += int(amount) * unit
    return total


def format_duration(value: timedelta) -> str:
    """Render a duration the way it would be written in the file (``1m30s``)."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        amount, millis = divmod(millis, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _compiles_as_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
    return value


Regex = Annotated[str, AfterValidator(_compiles_as_regex)]
"""A regular expression, matched against the whole value (anchored, as Prometheus does)."""


def _readable_file(value: str, info: ValidationInfo) -> str:
    if not value:
        return value
    base = Path((info.context or {}).get("base_dir", "."))
    path = Path(value) if Path(value).is_absolute() else base / value
    if not path.is_file():
        raise PydanticCustomError(
            "file_missing", "file {path} does not exist or is not a regular file", {"path": value}
        )
    if not os.access(path, os.R_OK):
        raise PydanticCustomError("file_missing", "file {path} is not readable", {"path": value})
    return str(path)


FilePath = Annotated[str, AfterValidator(_readable_file)]
"""A path to a file that must exist when the configuration loads; empty means not set."""


def _secret_in_file(value: str) -> str:
    if value:
        try:
            content = _read_text(value)
        except (OSError, UnicodeDecodeError) as exc:
            raise PydanticCustomError(
                "file_missing", "file {path} cannot be read: {why}", {"path": value, "why": exc}
            ) from None
        if not content:
            raise PydanticCustomError(
                "secret_empty",
                "file {path} is empty: an empty credential would let anything through",
                {"path": value},
            )
    return value


SecretFile = Annotated[str, AfterValidator(_readable_file), AfterValidator(_secret_in_file)]
"""A file holding a credential: it must exist and hold more than whitespace.

Secret files are read when used, not once at start-up, so rotated tokens (projected
service-account tokens, mounted Secrets) take effect without a restart.
"""


def _not_empty_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise PydanticCustomError(
            "secret_empty", "the credential is empty: an empty secret would let anything through"
        )
    return value


Secret = Annotated[SecretStr, AfterValidator(_not_empty_secret)]
"""A credential given inline or through ``${VAR}``: never empty or only whitespace."""

_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _label_name(value: str) -> str:
    if not _LABEL_NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid Prometheus label name")
    return value


LabelName = Annotated[str, AfterValidator(_label_name)]


def _label_selector(value: str) -> str:
    if not value.strip():
        raise ValueError("the selector must not be empty: it decides which Deployments are managed")
    try:
        split_terms(value)
    except SelectorError as exc:
        raise ValueError(f"{value!r} is not a valid Kubernetes label selector ({exc})") from None
    return value


Selector = Annotated[str, AfterValidator(_label_selector)]


_CLUSTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _cluster_name(value: str) -> str:
    if value and not _CLUSTER_NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a cluster name: up to 63 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


ClusterName = Annotated[str, AfterValidator(_cluster_name)]


# RFC 9110 field names: tokens. Values must not carry line breaks (header injection).
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CREDENTIAL_HEADER_RE = re.compile(r"(authorization|cookie|token|secret|password|key|auth)", re.I)
_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding"})
_QUERY_PARAMS = frozenset({"query", "time", "start", "end", "step", "timeout"})


def _header_name(name: str) -> str:
    if not _HEADER_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not an HTTP header name")
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(f"header {name!r} is set by rollbackd itself")
    return name


HeaderName = Annotated[str, AfterValidator(_header_name)]


def _header_value(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("a header value must not contain line breaks")
    return value


HeaderValue = Annotated[str, AfterValidator(_header_value)]


def credential_header(name: str) -> bool:
    """Whether a header carries a credential by its name (Authorization, X-Api-Key...):
    its inline value is then masked in logs like every secret."""
    return bool(_CREDENTIAL_HEADER_RE.search(name))


def _extra_params(value: dict[str, Any]) -> dict[str, Any]:
    for name in value:
        if not name or name in _QUERY_PARAMS:
            raise ValueError(
                f"parameter {name!r} is set by rollbackd on every query and cannot be overridden"
            )
    return value


QueryParams = Annotated[dict[str, str | list[str]], AfterValidator(_extra_params)]


def _read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


def secret_from(value: SecretStr | None, path: str) -> SecretStr | None:
    """The secret given inline or, when a file is named, the file's current content.

    Raises ``SecretUnavailable`` when the file has gone, cannot be read or is empty now:
    a credential never silently becomes the empty string.
    """
    return SecretStr(read_secret_file(path)) if path else value


def read_secret_file(path: str) -> str:
    """A credential file's current content; ``SecretUnavailable`` if gone or empty."""
    try:
        content = _read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecretUnavailable(f"cannot read {path}: {reason}") from None
    if not content:
        raise SecretUnavailable(f"{path} is empty")
    return content


Op = Literal[">", ">=", "<", "<="]
Policy = Literal["ok", "hold", "breach"]
Action = Literal["rollback", "notify", "approve"]
"""What a firing signal asks for: undo, tell, or ask a person on DingTalk first."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BasicAuth(Section):
    username: str = Field(description="user name")
    password: Secret | None = Field(None, description="password (prefer password_file)")
    password_file: SecretFile = Field("", description="file holding the password")

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if (self.password is None) == (not self.password_file):
            raise ValueError("set exactly one of password and password_file")
        return self


def exactly_one(model: BaseModel, names: tuple[str, ...], *, required: bool) -> None:
    chosen = [name for name in names if getattr(model, name)]
    if len(chosen) > 1 or (required and not chosen):
        listed = ", ".join(names)
        raise ValueError(
            f"set {'exactly' if required else 'at most'} one of {listed} (got {len(chosen)})"
        )
