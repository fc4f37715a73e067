"""rollbackd's one error tree.

Every failure that rollbackd reports carries a stable ``code`` of the form
``ERR_<AREA>_<NAME>``. Codes appear in logs, metrics and messages, and operators
search for them, so a code never changes meaning once released. Edge modules wrap
SDK exceptions (``raise ... from exc``) so that no third-party exception escapes
into the core.

::

    RollbackdError                         ERR_INTERNAL
    ├── ConfigError                        ERR_CONFIG_INVALID
    │   ├── ConfigNotFound                 ERR_CONFIG_NOT_FOUND
    │   ├── ConfigSyntaxError              ERR_CONFIG_YAML
    │   ├── ConfigEmpty                    ERR_CONFIG_EMPTY
    │   ├── ConfigEnvMissing               ERR_CONFIG_ENV_MISSING
    │   ├── ConfigFileMissing              ERR_CONFIG_FILE_MISSING
    │   └── ConfigSecretEmpty              ERR_CONFIG_SECRET_EMPTY
    ├── SecretUnavailable                  ERR_SECRET_UNAVAILABLE
    ├── PrometheusError                    ERR_PROM_FAILED
    │   ├── PrometheusUnreachable          ERR_PROM_UNREACHABLE
    │   ├── PrometheusTimeout              ERR_PROM_TIMEOUT
    │   ├── PrometheusBadQuery             ERR_PROM_BAD_QUERY
    │   ├── PrometheusExecution            ERR_PROM_EXECUTION
    │   ├── PrometheusBadResponse          ERR_PROM_BAD_RESPONSE
    │   ├── PrometheusPartial              ERR_PROM_PARTIAL
    │   └── PrometheusCredentials          ERR_PROM_CREDENTIALS
    ├── KubeError                          ERR_KUBE_FAILED
    │   ├── KubeUnreachable                ERR_KUBE_UNREACHABLE
    │   ├── KubeTimeout                    ERR_KUBE_TIMEOUT
    │   ├── KubeConflict                   ERR_KUBE_CONFLICT
    │   ├── KubeNotFound                   ERR_KUBE_NOT_FOUND
    │   ├── KubeForbidden                  ERR_KUBE_FORBIDDEN
    │   ├── KubeInvalid                    ERR_KUBE_INVALID
    │   ├── KubeGone                       ERR_KUBE_GONE
    │   └── KubeThrottled                  ERR_KUBE_THROTTLED
    ├── RollbackError                      ERR_ROLLBACK_FAILED
    │   ├── NoRollbackTarget               ERR_ROLLBACK_NO_TARGET
    │   └── RolloutNotAvailable            ERR_ROLLBACK_NOT_AVAILABLE
    ├── LeaderError                        ERR_LEADER_FAILED
    │   └── LeadershipLost                 ERR_LEADER_LOST
    ├── DingTalkError                      ERR_DINGTALK_FAILED
    │   ├── DingTalkUnreachable            ERR_DINGTALK_UNREACHABLE
    │   ├── DingTalkRateLimited            ERR_DINGTALK_RATE_LIMITED
    │   ├── DingTalkBadSignature           ERR_DINGTALK_BAD_SIGNATURE
    │   ├── DingTalkBadToken               ERR_DINGTALK_BAD_TOKEN
    │   ├── DingTalkKeywordMissing         ERR_DINGTALK_KEYWORD_MISSING
    │   ├── DingTalkRobotDisabled          ERR_DINGTALK_ROBOT_DISABLED
    │   ├── DingTalkBusy                   ERR_DINGTALK_BUSY
    │   ├── DingTalkRejected               ERR_DINGTALK_REJECTED
    │   └── DingTalkUnexpected             ERR_DINGTALK_UNEXPECTED
    ├── ReplayError                        ERR_REPLAY_FAILED
    │   └── ReplayBadArguments             ERR_REPLAY_BAD_ARGUMENTS
    ├── NotificationError                  ERR_NOTIFY_FAILED
    │   └── TemplateFailed                 ERR_NOTIFY_TEMPLATE
    └── WebhookError                       ERR_WEBHOOK_FAILED
        ├── WebhookUnauthorized            ERR_WEBHOOK_UNAUTHORIZED
        ├── WebhookTooLarge                ERR_WEBHOOK_TOO_LARGE
        ├── WebhookNotJson                 ERR_WEBHOOK_NOT_JSON
        ├── WebhookBadPayload              ERR_WEBHOOK_BAD_PAYLOAD
        ├── WebhookBadAlert                ERR_WEBHOOK_BAD_ALERT
        ├── WebhookTimeout                 ERR_WEBHOOK_TIMEOUT
        ├── WebhookBusy                    ERR_WEBHOOK_BUSY
        └── ListenerExhausted              ERR_WEBHOOK_EXHAUSTED

``transient`` says whether retrying the same operation later may succeed; the
outbox and the executors use it to choose between backoff and giving up. ``retry_after``
is the server's own word on when to try again (HTTP ``Retry-After``), when it gave one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from rollbackd.model import QueryResult


class RollbackdError(Exception):
    """Base of every error rollbackd raises on purpose."""

    code: ClassVar[str] = "ERR_INTERNAL"
    transient: ClassVar[bool] = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


# --- configuration -----------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration file, where it is, and its error code."""

    path: str
    message: str
    code: str
    line: int | None = None

    def render(self, file: str) -> str:
        """``FILE:LINE: key.path: message [ERR_...]``, the line check-config prints."""
        where = f"{file}:{self.line}" if self.line is not None else file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message} [{self.code}]"


class ConfigError(RollbackdError):
    """The configuration cannot be used as written; carries every problem found."""

    code = "ERR_CONFIG_INVALID"

    def __init__(
        self, file: str, problems: list[ConfigProblem], *, secrets: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{file}: {len(problems)} problem(s) in the configuration")
        self.file = file
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path))
        self.secrets = secrets
        """Values the file holds that may be secret (from ${VAR}, secret keys, secret
        files): whoever prints the problems masks them, wherever they were put."""

    def lines(self) -> list[str]:
        return [problem.render(self.file) for problem in self.problems]


# The codes below name kinds of ConfigProblem; a load raises one ConfigError holding them.


class ConfigNotFound(ConfigError):
    """The configuration file is missing or unreadable: check the path and permissions."""

    code = "ERR_CONFIG_NOT_FOUND"


class ConfigSyntaxError(ConfigError):
    """The file is not valid YAML: the line number points at the problem."""

    code = "ERR_CONFIG_YAML"


class ConfigEmpty(ConfigError):
    """The file holds nothing: start from config.example.yaml."""

    code = "ERR_CONFIG_EMPTY"


class ConfigEnvMissing(ConfigError):
    """A ${VAR} names an environment variable that is unset or empty."""

    code = "ERR_CONFIG_ENV_MISSING"


class ConfigFileMissing(ConfigError):
    """A *_file key names a file that does not exist or cannot be read."""

    code = "ERR_CONFIG_FILE_MISSING"


class ConfigSecretEmpty(ConfigError):
    """A credential (inline, ${VAR} or the file a *_file key names) is empty or only
    whitespace: an empty secret would let anything through, so it is refused."""

    code = "ERR_CONFIG_SECRET_EMPTY"


# --- secrets at runtime --------------------------------------------------------------


class SecretUnavailable(RollbackdError):
    """A credential file that was valid at start-up disappeared, became unreadable or empty:
    what needs it is refused (webhook: 401) or fails (Prometheus) until the file is back."""

    code = "ERR_SECRET_UNAVAILABLE"


# --- Prometheus ----------------------------------------------------------------------


class PrometheusError(RollbackdError):
    """A query against Prometheus did not produce a usable answer."""

    code = "ERR_PROM_FAILED"

    def __init__(self, message: str, *, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type


class PrometheusUnreachable(PrometheusError):
    """No connection to Prometheus, or it answered 5xx: check prometheus.url and the network."""

    code = "ERR_PROM_UNREACHABLE"
    transient = True


class PrometheusTimeout(PrometheusError):
    """Prometheus did not answer within prometheus.timeout: a slow query or an overloaded server."""

    code = "ERR_PROM_TIMEOUT"
    transient = True


class PrometheusBadQuery(PrometheusError):
    """Prometheus refused the rule's PromQL (bad_data): fix the expression."""

    code = "ERR_PROM_BAD_QUERY"


class PrometheusExecution(PrometheusError):
    """The query failed while running (execution), e.g. many-to-many matching."""

    code = "ERR_PROM_EXECUTION"
    transient = True


class PrometheusBadResponse(PrometheusError):
    """Prometheus answered something rollbackd cannot read (4xx, not JSON, no result)."""

    code = "ERR_PROM_BAD_RESPONSE"
    transient = True


class PrometheusPartial(PrometheusError):
    """The answer carried ``warnings`` (partial data, e.g. a Thanos store or a
    VictoriaMetrics node was down): judged by the rule's on_error, never as a clean answer."""

    code = "ERR_PROM_PARTIAL"
    transient = True

    def __init__(
        self, message: str, *, warnings: tuple[str, ...], partial: QueryResult | None = None
    ) -> None:
        super().__init__(message, error_type="warnings")
        self.warnings = warnings
        self.partial = partial
        """What the answer did hold: shown (in ``eval``), never judged as clean."""


class PrometheusCredentials(PrometheusError):
    """The bearer token or password file for Prometheus is missing or empty at runtime:
    restore the mounted Secret; the next tick reads it again."""

    code = "ERR_PROM_CREDENTIALS"
    transient = True


# --- Kubernetes ----------------------------------------------------------------------


class KubeError(RollbackdError):
    """The Kubernetes API refused or failed a request."""

    code = "ERR_KUBE_FAILED"
    transient = True


class KubeUnreachable(KubeError):
    """No connection to the Kubernetes API server."""

    code = "ERR_KUBE_UNREACHABLE"


class KubeTimeout(KubeError):
    """The Kubernetes API server did not answer in time."""

    code = "ERR_KUBE_TIMEOUT"


class KubeConflict(KubeError):
    """The object changed since rollbackd read it (409, or a failed patch precondition)."""

    code = "ERR_KUBE_CONFLICT"


class KubeNotFound(KubeError):
    """The Deployment or object does not exist."""

    code = "ERR_KUBE_NOT_FOUND"
    transient = False


class KubeForbidden(KubeError):
    """RBAC refused the request: the message names the missing verb and resource."""

    code = "ERR_KUBE_FORBIDDEN"
    transient = False


class KubeInvalid(KubeError):
    """The API server rejected the object as invalid (422)."""

    code = "ERR_KUBE_INVALID"
    transient = False


class KubeGone(KubeError):
    """A watch's resourceVersion expired (410): rollbackd lists again."""

    code = "ERR_KUBE_GONE"


class KubeThrottled(KubeError):
    """The API server asked rollbackd to slow down (429); retried after its Retry-After."""

    code = "ERR_KUBE_THROTTLED"


# --- rollbacks -----------------------------------------------------------------------


class RollbackError(RollbackdError):
    """A rollback could not be planned or did not complete."""

    code = "ERR_ROLLBACK_FAILED"


class NoRollbackTarget(RollbackError):
    """There is no revision to return to."""

    code = "ERR_ROLLBACK_NO_TARGET"


class RolloutNotAvailable(RollbackError):
    """The rolled-back Deployment did not become available within wait_for_rollout."""

    code = "ERR_ROLLBACK_NOT_AVAILABLE"


# --- leader election ----------------------------------------------------------------


class LeaderError(RollbackdError):
    """Leader election failed."""

    code = "ERR_LEADER_FAILED"
    transient = True


class LeadershipLost(LeaderError):
    """This replica is no longer the leader, so it must not write."""

    code = "ERR_LEADER_LOST"


# --- DingTalk ------------------------------------------------------------------------


class DingTalkError(RollbackdError):
    """DingTalk did not accept a message."""

    code = "ERR_DINGTALK_FAILED"


class DingTalkUnreachable(DingTalkError):
    """No connection to DingTalk."""

    code = "ERR_DINGTALK_UNREACHABLE"
    transient = True


class DingTalkRateLimited(DingTalkError):
    """DingTalk throttled the robot (130101/410100): the outbox waits at least a minute."""

    code = "ERR_DINGTALK_RATE_LIMITED"
    transient = True


class DingTalkBadSignature(DingTalkError):
    """Signature or timestamp refused (310000): check the robot secret and the clock."""

    code = "ERR_DINGTALK_BAD_SIGNATURE"


class DingTalkBadToken(DingTalkError):
    """The access_token or app credentials are wrong or the token expired."""

    code = "ERR_DINGTALK_BAD_TOKEN"


class DingTalkKeywordMissing(DingTalkError):
    """The robot's security keyword is not in the message: set notifications.robots[].keyword."""

    code = "ERR_DINGTALK_KEYWORD_MISSING"


class DingTalkRobotDisabled(DingTalkError):
    """The robot is disabled or removed, or its group was disbanded."""

    code = "ERR_DINGTALK_ROBOT_DISABLED"


class DingTalkBusy(DingTalkError):
    """DingTalk answered "system busy" (errcode -1) or a 5xx: retry later."""

    code = "ERR_DINGTALK_BUSY"
    transient = True


class DingTalkRejected(DingTalkError):
    """DingTalk refused this message for good (content, size, IP allow list, unknown code)."""

    code = "ERR_DINGTALK_REJECTED"


class DingTalkUnexpected(DingTalkError):
    """Sending failed in a way nobody foresaw (an odd answer, a bug): logged with its
    traceback and retried like a transient failure, so the robot's queue keeps going."""

    code = "ERR_DINGTALK_UNEXPECTED"
    transient = True


# --- notifications ------------------------------------------------------------------


class ReplayError(RollbackdError):
    """``rollbackd replay`` could not run."""

    code = "ERR_REPLAY_FAILED"


class ReplayBadArguments(ReplayError):
    """A ``--from``/``--to`` that is not a time (RFC 3339, ``now``, ``-24h``), a span that
    is not forwards, or a ``--rule`` the configuration does not have (exit status 2)."""

    code = "ERR_REPLAY_BAD_ARGUMENTS"


class NotificationError(RollbackdError):
    """A message could not be prepared."""

    code = "ERR_NOTIFY_FAILED"


class TemplateFailed(NotificationError):
    """A message template failed to render: a plain built-in message was sent instead;
    fix the template (``check-config`` renders every one with a sample incident)."""

    code = "ERR_NOTIFY_TEMPLATE"


# --- Alertmanager webhook ------------------------------------------------------------


class WebhookError(RollbackdError):
    """An incoming webhook request was refused."""

    code = "ERR_WEBHOOK_FAILED"


class WebhookUnauthorized(WebhookError):
    """A webhook request without valid credentials (answered 401)."""

    code = "ERR_WEBHOOK_UNAUTHORIZED"


class WebhookTooLarge(WebhookError):
    """A webhook body over server.max_body_bytes (answered 413)."""

    code = "ERR_WEBHOOK_TOO_LARGE"


class WebhookNotJson(WebhookError):
    """A webhook request whose Content-Type is not JSON (answered 415)."""

    code = "ERR_WEBHOOK_NOT_JSON"


class WebhookBadPayload(WebhookError):
    """A webhook body that is not Alertmanager payload version 4 (answered 400)."""

    code = "ERR_WEBHOOK_BAD_PAYLOAD"


class WebhookBusy(WebhookError):
    """Not the leader, or the queue is full: the sender should retry."""

    code = "ERR_WEBHOOK_BUSY"
    transient = True


class WebhookBadAlert(WebhookError):
    """One alert of a payload was invalid (e.g. a ``startsAt`` without a timezone): it is
    named with its reason in the answer and skipped; the other alerts are processed."""

    code = "ERR_WEBHOOK_BAD_ALERT"


class WebhookTimeout(WebhookError):
    """A request's body did not arrive within server.body_timeout (answered 408)."""

    code = "ERR_WEBHOOK_TIMEOUT"
    transient = True


class ListenerExhausted(WebhookError):
    """The listener ran out of file descriptors or connections: new connections are shed,
    and this is logged once per burst; raise the pod's file limit or server.max_connections."""

    code = "ERR_WEBHOOK_EXHAUSTED"
    transient = True


def all_error_classes() -> list[type[RollbackdError]]:
    """Every class of the tree, parents before children, for docs and tests."""
    found: list[type[RollbackdError]] = []
    pending: list[type[RollbackdError]] = [RollbackdError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def error_table_markdown() -> str:
    """docs/error-codes.md, generated from this tree (``make docs`` writes it)."""
    lines = [
        "# rollbackd error codes",
        "",
        "Generated from `rollbackd/errors.py` by `make docs`; a test keeps it in sync.",
        "Every code appears in logs (`code`), metrics (`result`, `reason`) and messages.",
        "",
        "| code | area | retried | meaning and what to do |",
        "|---|---|---|---|",
    ]
    for cls in all_error_classes():
        area = cls.__mro__[1].__name__ if cls is not RollbackdError else "-"
        doc = " ".join((cls.__doc__ or "").split())
        retried = "yes" if cls.transient else "no"
        lines.append(f"| `{cls.code}` | {area} | {retried} | {doc} |")
    return "\n".join(lines) + "\n"
