"""The configuration file: its schema, and loading it into validated, immutable values.

``load_settings`` reads one YAML file, expands ``${VAR}`` from the environment, checks
every ``*_file`` path, validates the result against the models below and reports every
problem at once, each with the line of the file it comes from. Secrets become
``SecretStr``; nothing is ever replaced by an empty value.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
from rollbackd.selectors import SelectorError, split_terms

# --- value types ---------------------------------------------------------------------

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


_CLUSTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _cluster_name(value: str) -> str:
    if value and not _CLUSTER_NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a cluster name: up to 63 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


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
Action = Literal["rollback", "notify"]
Event = Literal[
    "breach",
    "rollback_started",
    "rollback_succeeded",
    "rollback_failed",
    "skipped",
    "recovered",
    "escalated",
    "outage",
    "owner_paused",
    "owner_resumed",
]
ALL_EVENTS: tuple[Event, ...] = (
    "breach",
    "rollback_started",
    "rollback_succeeded",
    "rollback_failed",
    "skipped",
    "recovered",
    "escalated",
    "outage",
    "owner_paused",
    "owner_resumed",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- sections ------------------------------------------------------------------------


class KubernetesSettings(_Section):
    kubeconfig: FilePath = Field(
        "", description="kubeconfig file; empty: in-cluster, then $KUBECONFIG, then ~/.kube/config"
    )
    namespaces: list[str] = Field(
        default_factory=list, description="namespaces to manage; empty: all namespaces"
    )
    selector: Annotated[str, AfterValidator(_label_selector)] = Field(
        "rollbackd.io/enabled=true",
        description="label selector of the Deployments rollbackd manages (opt-in)",
    )
    cluster_name: Annotated[str, AfterValidator(_cluster_name)] = Field(
        "",
        description="this cluster's name, shown in every message, Event, log line and history;"
        " set it when several clusters share one group or one query backend",
    )


class BasicAuth(_Section):
    username: str = Field(description="user name")
    password: Secret | None = Field(None, description="password (prefer password_file)")
    password_file: SecretFile = Field("", description="file holding the password")

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if (self.password is None) == (not self.password_file):
            raise ValueError("set exactly one of password and password_file")
        return self


def _exactly_one(model: BaseModel, names: tuple[str, ...], *, required: bool) -> None:
    chosen = [name for name in names if getattr(model, name)]
    if len(chosen) > 1 or (required and not chosen):
        listed = ", ".join(names)
        raise ValueError(
            f"set {'exactly' if required else 'at most'} one of {listed} (got {len(chosen)})"
        )


class PrometheusSettings(_Section):
    url: str = Field(
        "http://prometheus.monitoring:9090", description="base URL of the Prometheus HTTP API"
    )
    external_url: str = Field(
        "", description="URL people open for graph links in messages; empty: the same as url"
    )
    timeout: Duration = Field(timedelta(seconds=10), description="timeout of every query")
    bearer_token: Secret | None = Field(None, description="bearer token sent to Prometheus")
    bearer_token_file: SecretFile = Field("", description="file holding the bearer token")
    basic_auth: BasicAuth | None = Field(None, description="HTTP basic authentication")
    ca_file: FilePath = Field("", description="CA bundle that signs Prometheus's certificate")
    insecure_skip_verify: bool = Field(
        False, description="do not verify Prometheus's TLS certificate"
    )
    headers: dict[HeaderName, Annotated[str, AfterValidator(_header_value)]] = Field(
        default_factory=dict,
        description="HTTP headers sent with every query (e.g. X-Scope-OrgID: tenant-a for"
        " Mimir or Cortex); values may be ${VAR}",
    )
    header_files: dict[HeaderName, SecretFile] = Field(
        default_factory=dict,
        description="headers whose value is read from a file at every query (a rotated"
        " credential takes effect on the next one)",
    )
    params: Annotated[dict[str, str | list[str]], AfterValidator(_extra_params)] = Field(
        default_factory=dict,
        description="extra query parameters sent with every query (Thanos: dedup,"
        " partial_response; VictoriaMetrics: extra_label, extra_filters[])",
    )

    def header_secrets(self) -> list[str]:
        """Credential headers' inline values and every header file's current content."""
        found = [value for name, value in self.headers.items() if credential_header(name)]
        for path in self.header_files.values():
            with contextlib.suppress(SecretUnavailable):
                found.append(read_secret_file(path))
        return found

    @field_validator("url", "external_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSettings:
        _exactly_one(self, ("bearer_token", "bearer_token_file", "basic_auth"), required=False)
        both = {n.lower() for n in self.headers} & {n.lower() for n in self.header_files}
        if both:
            raise ValueError(f"header {sorted(both)[0]!r} is set in both headers and header_files")
        named = {n.lower() for n in (*self.headers, *self.header_files)}
        if "authorization" in named and (
            self.bearer_token or self.bearer_token_file or self.basic_auth
        ):
            raise ValueError(
                "an Authorization header and bearer_token, bearer_token_file or basic_auth"
                " would both set Authorization: set one"
            )
        return self


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("threshold must be a finite number")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("expr must not be empty")
    return value


Threshold = Annotated[float, AfterValidator(_finite)]
PromQL = Annotated[str, AfterValidator(_not_blank)]


class Condition(_Section):
    expr: PromQL = Field(description="PromQL returning one series per target")
    op: Op = Field(">=", description="comparison: > >= < <=")
    threshold: Threshold = Field(description="value compared with op")


class TargetLabels(_Section):
    namespace: LabelName = Field(
        "namespace", description="label holding the Deployment's namespace"
    )
    deployment: LabelName = Field("deployment", description="label holding the Deployment's name")


class RuleSettings(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")] = Field(
        description="unique rule name, shown in messages and metrics"
    )
    expr: PromQL = Field(description="PromQL returning one series per target")
    op: Op = Field(">", description="comparison: > >= < <=")
    threshold: Threshold = Field(description="value compared with op")
    for_: Duration = Field(
        timedelta(0), alias="for", description="hold window: the breach must persist this long"
    )
    keep_firing_for: Duration = Field(
        timedelta(0), description="how long a firing rule stays firing after the breach clears"
    )
    interval: Duration = Field(timedelta(seconds=15), description="how often the rule is evaluated")
    on_no_data: Policy = Field(
        "ok", description="a target missing from the result: ok | hold | breach"
    )
    on_error: Policy = Field("hold", description="a failed query: ok | hold | breach")
    min_traffic: Condition | None = Field(
        None, description="below this request rate a target cannot breach"
    )
    target_labels: TargetLabels = Field(
        default_factory=TargetLabels, description="labels mapping each series to a Deployment"
    )
    severity: str = Field("warning", description="severity shown in messages")
    action: Action = Field("rollback", description="rollback | notify")

    @field_validator("interval")
    @classmethod
    def _sane_interval(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=1):
            raise ValueError(f"interval {format_duration(value)} must be between 1s and 1h")
        return value

    @field_validator("for_", "keep_firing_for")
    @classmethod
    def _sane_hold(cls, value: timedelta) -> timedelta:
        if value > timedelta(hours=24):
            raise ValueError(f"{format_duration(value)} is longer than 24h")
        return value


class HmacAuth(_Section):
    secret: Secret | None = Field(None, description="shared signing secret")
    secret_file: SecretFile = Field("", description="file holding the shared secret")
    max_skew: Duration = Field(
        timedelta(minutes=5), description="largest accepted clock difference (replay window)"
    )

    @model_validator(mode="after")
    def _one_secret(self) -> HmacAuth:
        _exactly_one(self, ("secret", "secret_file"), required=True)
        return self


class WebhookAuth(_Section):
    bearer_token: Secret | None = Field(None, description="token in Authorization: Bearer")
    bearer_token_file: SecretFile = Field("", description="file holding the bearer token")
    basic_auth: BasicAuth | None = Field(None, description="HTTP basic authentication")
    hmac: HmacAuth | None = Field(None, description="HMAC-SHA256 request signatures")

    @model_validator(mode="after")
    def _one_method(self) -> WebhookAuth:
        _exactly_one(
            self, ("bearer_token", "bearer_token_file", "basic_auth", "hmac"), required=True
        )
        return self


class Trigger(_Section):
    match: dict[str, str] = Field(default_factory=dict, description="labels that must be equal")
    match_re: dict[str, Regex] = Field(
        default_factory=dict, description="labels that must match a regex (anchored)"
    )
    action: Action = Field("rollback", description="rollback | notify")
    pending_for: Duration | None = Field(
        None,
        description="the alerting rule's `for`, used when Prometheus cannot tell when the "
        "breach began (ALERTS_FOR_STATE); unset and unknown: notify only",
    )

    @model_validator(mode="after")
    def _some_matcher(self) -> Trigger:
        if not self.match and not self.match_re:
            raise ValueError("a trigger needs match or match_re, or it would match every alert")
        return self


class AlertmanagerSettings(_Section):
    enabled: bool = Field(False, description="accept Alertmanager webhooks")
    path: str = Field("/api/v1/alertmanager", description="HTTP path of the webhook receiver")
    auth: WebhookAuth | None = Field(
        None, description="how senders authenticate: bearer token, basic auth or hmac"
    )
    triggers: list[Trigger] = Field(default_factory=list, description="alerts that act, and how")
    target_labels: TargetLabels = Field(
        default_factory=TargetLabels, description="labels mapping an alert to a Deployment"
    )

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must start with /")
        return value

    @model_validator(mode="after")
    def _authenticated(self) -> AlertmanagerSettings:
        if self.enabled and self.auth is None:
            raise ValueError(
                "auth is required when enabled: an open receiver lets anyone trigger rollbacks"
            )
        return self


class Budget(_Section):
    max: int = Field(5, ge=0, description="automatic rollbacks allowed per period, cluster-wide")
    per: Duration = Field(timedelta(hours=1), description="the budget's period")


class BlastRadius(_Section):
    max_targets: int = Field(
        3, ge=1, description="more workloads breaching together than this is an outage: notify"
    )
    window: Duration = Field(
        timedelta(minutes=5), description="how close together breaches count as together"
    )


class OwnerPolicies(_Section):
    """What a rollback does when a GitOps controller or Helm owns the workload."""

    argocd: Literal["notify", "pause"] = Field(
        "notify",
        description="notify: no rollback (Argo CD would revert it); pause: turn off the "
        "Application's automated sync, then roll back (needs deploy/overlays/argocd)",
    )
    flux: Literal["pause", "notify"] = Field(
        "pause",
        description="pause: the rollback also sets kustomize.toolkit.fluxcd.io/reconcile: "
        "disabled on the workload; notify: no rollback",
    )
    helm: Literal["notify", "rollback"] = Field(
        "notify",
        description="notify: no rollback; rollback: undo the live object and warn that the "
        "next helm upgrade re-applies it",
    )
    default: Literal["notify", "rollback"] = Field(
        "notify",
        description="an owner that is only hinted at or ambiguous (a guess never pauses)",
    )
    max_pause: Duration = Field(
        timedelta(hours=24), description="a pause rollbackd set is lifted after this at the latest"
    )
    check_every: Duration = Field(
        timedelta(seconds=30),
        description="how often the leader reads a paused owner's revision (lifts the pause "
        "when it moved on)",
    )
    argocd_namespace: str = Field(
        "argocd", description="where Argo CD's Applications live (tracking ids name no namespace)"
    )


class RollbackSettings(_Section):
    dry_run: bool = Field(False, description="go through every step except the write")
    change_window: Duration = Field(
        timedelta(minutes=30),
        description="act only if the template changed this recently before the breach",
    )
    cooldown: Duration = Field(
        timedelta(minutes=15), description="no second automatic rollback of a Deployment before"
    )
    budget: Budget = Field(default_factory=Budget, description="cluster-wide rollback budget")
    blast_radius: BlastRadius = Field(
        default_factory=BlastRadius,
        description="many workloads breaching together is an outage, not a bad release",
    )
    wait_for_rollout: Duration = Field(
        timedelta(minutes=5), description="how long to wait for the rolled-back Deployment"
    )
    verify_window: Duration = Field(
        timedelta(minutes=10), description="after a rollback: recovered within this, or escalate"
    )
    owners: OwnerPolicies = Field(
        default_factory=OwnerPolicies,
        description="per owner (Argo CD, Flux, Helm): pause it, notify only, or roll back",
    )


class _RobotBase(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = Field(
        description="unique robot name"
    )
    at_mobiles: list[str] = Field(default_factory=list, description="mobiles @-mentioned")
    at_all_on: list[Event] = Field(default_factory=list, description="events that @ everyone")
    match: dict[str, Regex] = Field(
        default_factory=dict,
        description="send only for targets whose labels match these regexes (anchored)",
    )
    events: list[Event] | None = Field(
        None, description="events this robot receives; empty: notifications.events"
    )


class WebhookRobot(_RobotBase):
    kind: Literal["webhook"] = Field(description="custom group robot")
    url: Secret = Field(description="webhook URL with its access_token")
    secret: Secret | None = Field(None, description="signing secret (SEC...)")
    keyword: str = Field("", description="security keyword put in every message")

    @field_validator("url")
    @classmethod
    def _robot_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not re.match(r"^https?://[^/\s]+/\S*[?&]access_token=[^&\s]+", url):
            raise ValueError("url must be an http(s) robot webhook URL with access_token=...")
        return value


class AppRobot(_RobotBase):
    kind: Literal["app"] = Field(description="org app robot via the DingTalk OpenAPI")
    app_key: Secret = Field(description="the app's AppKey (Client ID)")
    app_secret: Secret = Field(description="the app's AppSecret (Client Secret)")
    robot_code: str = Field("", description="robot code; empty: the AppKey")
    api_url: str = Field(
        "https://api.dingtalk.com", description="OpenAPI base URL (api.dingtalk.io abroad)"
    )
    open_conversation_id: str = Field(description="target group (cid...)")

    @field_validator("open_conversation_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("open_conversation_id is required for an app robot")
        return value


Robot = Annotated[WebhookRobot | AppRobot, Field(discriminator="kind")]


class NotificationSettings(_Section):
    language: Literal["zh", "en"] = Field("zh", description="message language: zh | en")
    events: list[Event] = Field(
        default_factory=lambda: list(ALL_EVENTS), description="incident events that are sent"
    )
    robots: list[Robot] = Field(default_factory=list, description="where messages go")
    templates_dir: str = Field(
        "", description="folder of *.md.j2 templates overriding the built-in ones"
    )

    @field_validator("templates_dir")
    @classmethod
    def _templates_compile(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        base = Path((info.context or {}).get("base_dir", "."))
        folder = Path(value) if Path(value).is_absolute() else base / value
        if not folder.is_dir():
            raise ValueError(f"templates folder {value!r} does not exist")
        env = jinja2.Environment(autoescape=False)  # noqa: S701 - markdown, not HTML
        for template in sorted(folder.glob("*.j2")):
            try:
                env.parse(template.read_text(encoding="utf-8"))
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(
                    f"template {template.name} line {exc.lineno}: {exc.message}"
                ) from exc
        return str(folder)


class ServerSettings(_Section):
    listen: str = Field("0.0.0.0:8080", description="host:port of the HTTP listener")
    max_body_bytes: int = Field(
        1_048_576, gt=0, le=64 * 1_048_576, description="largest accepted webhook body"
    )
    header_timeout: Duration = Field(
        timedelta(seconds=10),
        description="a connection whose request headers are not complete by then is closed",
    )
    body_timeout: Duration = Field(
        timedelta(seconds=30), description="a request body not complete by then gets 408"
    )
    max_connections: int = Field(
        512, gt=0, description="open connections beyond this are closed at once"
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (port 0 picks a free one)")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


LEASE_JITTER = 1.2
"""client-go's leader-election jitter factor: retries wait ``retry_period * (1 + 1.2 r)``."""


class LeaderElectionSettings(_Section):
    enabled: bool = Field(True, description="only the holder of the Lease evaluates and acts")
    namespace: str = Field("rollbackd", description="namespace of the Lease")
    lease_name: str = Field("rollbackd", description="name of the Lease")
    lease_duration: Duration = Field(
        timedelta(seconds=15), description="how long a Lease holds without renewal"
    )
    renew_deadline: Duration = Field(
        timedelta(seconds=10), description="the leader gives up if it cannot renew in this time"
    )
    retry_period: Duration = Field(
        timedelta(seconds=2), description="time between acquire and renew attempts"
    )

    @field_validator("renew_deadline")
    @classmethod
    def _renew_before_expiry(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        lease = info.data.get("lease_duration")
        if lease is not None and value >= lease:
            raise ValueError(
                f"renew_deadline {format_duration(value)} must be shorter than "
                f"lease_duration {format_duration(lease)}"
            )
        return value

    @field_validator("retry_period")
    @classmethod
    def _retry_before_deadline(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        deadline = info.data.get("renew_deadline")
        if value <= timedelta(0):
            raise ValueError("retry_period must be positive")
        if deadline is not None and deadline <= value * LEASE_JITTER:
            # client-go's rule: a retry waits up to 1.2 x retry_period past the period, and
            # a leader must get a renewal in before its deadline.
            raise ValueError(
                f"retry_period {format_duration(value)} must be shorter than "
                f"renew_deadline {format_duration(deadline)} / {LEASE_JITTER:g}"
            )
        return value


class LoggingSettings(_Section):
    format: Literal["json", "console"] = Field("json", description="json | console")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")


class Settings(_Section):
    """The whole configuration file."""

    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    rules: list[RuleSettings] = Field(default_factory=list, description="PromQL rules")
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    rollback: RollbackSettings = Field(default_factory=RollbackSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @model_validator(mode="after")
    def _queries_fit_their_interval(self) -> Settings:
        for rule in self.rules:
            if self.prometheus.timeout >= rule.interval:
                raise ValueError(
                    f"prometheus.timeout {format_duration(self.prometheus.timeout)} must be "
                    f"shorter than rule {rule.name!r}'s interval {format_duration(rule.interval)}"
                )
        return self

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds or points to, for redaction.

        Basic auth adds ``user:password`` too, whose Base64 form is what travels.
        """
        found: list[str] = []

        def walk(node: object) -> None:
            if isinstance(node, SecretStr):
                found.append(node.get_secret_value())
            elif isinstance(node, BaseModel):
                for name in type(node).model_fields:
                    value = getattr(node, name)
                    if name.endswith("_file") and name != "ca_file" and value:
                        with contextlib.suppress(SecretUnavailable):
                            found.append(read_secret_file(value))
                    walk(value)
                if isinstance(node, PrometheusSettings):
                    found.extend(node.header_secrets())
                if isinstance(node, BasicAuth):
                    with contextlib.suppress(SecretUnavailable):
                        password = secret_from(node.password, node.password_file)
                        if password is not None:
                            found.append(f"{node.username}:{password.get_secret_value()}")
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(self)
        return [value for value in found if value]


# --- loading -------------------------------------------------------------------------


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
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
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
