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

from rollbackd.errors.base import RollbackdError
from rollbackd.errors.config import (
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
from rollbackd.errors.kube import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeGone,
    KubeInvalid,
    KubeNotFound,
    KubeThrottled,
    KubeTimeout,
    KubeUnreachable,
    LeaderError,
    LeadershipLost,
    RollbackError,
    RolloutNotAvailable,
)
from rollbackd.errors.messages import (
    DingTalkBadSignature,
    DingTalkBadToken,
    DingTalkBusy,
    DingTalkError,
    DingTalkKeywordMissing,
    DingTalkRateLimited,
    DingTalkRejected,
    DingTalkRobotDisabled,
    DingTalkUnexpected,
    DingTalkUnreachable,
    NotificationError,
    TemplateFailed,
)
from rollbackd.errors.prometheus import (
    PrometheusBadQuery,
    PrometheusBadResponse,
    PrometheusCredentials,
    PrometheusError,
    PrometheusExecution,
    PrometheusPartial,
    PrometheusTimeout,
    PrometheusUnreachable,
)
from rollbackd.errors.replay import ReplayBadArguments, ReplayError
from rollbackd.errors.webhook import (
    ListenerExhausted,
    WebhookBadAlert,
    WebhookBadPayload,
    WebhookBusy,
    WebhookError,
    WebhookNotJson,
    WebhookTimeout,
    WebhookTooLarge,
    WebhookUnauthorized,
)


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
        "Generated from `rollbackd/errors/` by `make docs`; a test keeps it in sync.",
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


__all__ = [
    "ConfigEmpty",
    "ConfigEnvMissing",
    "ConfigError",
    "ConfigFileMissing",
    "ConfigNotFound",
    "ConfigProblem",
    "ConfigSecretEmpty",
    "ConfigSyntaxError",
    "DingTalkBadSignature",
    "DingTalkBadToken",
    "DingTalkBusy",
    "DingTalkError",
    "DingTalkKeywordMissing",
    "DingTalkRateLimited",
    "DingTalkRejected",
    "DingTalkRobotDisabled",
    "DingTalkUnexpected",
    "DingTalkUnreachable",
    "KubeConflict",
    "KubeError",
    "KubeForbidden",
    "KubeGone",
    "KubeInvalid",
    "KubeNotFound",
    "KubeThrottled",
    "KubeTimeout",
    "KubeUnreachable",
    "LeaderError",
    "LeadershipLost",
    "ListenerExhausted",
    "NotificationError",
    "PrometheusBadQuery",
    "PrometheusBadResponse",
    "PrometheusCredentials",
    "PrometheusError",
    "PrometheusExecution",
    "PrometheusPartial",
    "PrometheusTimeout",
    "PrometheusUnreachable",
    "ReplayBadArguments",
    "ReplayError",
    "RollbackError",
    "RollbackdError",
    "RolloutNotAvailable",
    "SecretUnavailable",
    "TemplateFailed",
    "WebhookBadAlert",
    "WebhookBadPayload",
    "WebhookBusy",
    "WebhookError",
    "WebhookNotJson",
    "WebhookTimeout",
    "WebhookTooLarge",
    "WebhookUnauthorized",
    "all_error_classes",
    "error_table_markdown",
]
