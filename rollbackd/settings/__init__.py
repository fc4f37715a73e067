"""The configuration file: its schema by section, and loading it into validated values.

One module per top-level section (``kubernetes``, ``prometheus``, ``rules``, ``alertmanager``,
``rollback``, ``notifications``, ``server``), the value types they share (``values``), the
whole file (``root``) and the loader (``load``): one YAML parse with line numbers, ``${VAR}``
expansion, secret files, and every problem reported at once with its line.
"""

from rollbackd.settings.alertmanager import AlertmanagerSettings, HmacAuth, Trigger, WebhookAuth
from rollbackd.settings.kubernetes import LEASE_JITTER, KubernetesSettings, LeaderElectionSettings
from rollbackd.settings.load import key_line, load_settings, redacted_yaml, render_path, warnings_of
from rollbackd.settings.notifications import AppRobot, NotificationSettings, Robot, WebhookRobot
from rollbackd.settings.prometheus import PrometheusSettings
from rollbackd.settings.rollback import (
    ApprovalSettings,
    BlastRadius,
    Budget,
    OwnerPolicies,
    RollbackSettings,
)
from rollbackd.settings.root import Settings
from rollbackd.settings.rules import Condition, RuleSettings, TargetLabels
from rollbackd.settings.server import LoggingSettings, ServerSettings
from rollbackd.settings.values import (
    Action,
    BasicAuth,
    Duration,
    Op,
    Policy,
    format_duration,
    parse_duration,
    read_secret_file,
    secret_from,
)

__all__ = [
    "LEASE_JITTER",
    "Action",
    "AlertmanagerSettings",
    "AppRobot",
    "ApprovalSettings",
    "BasicAuth",
    "BlastRadius",
    "Budget",
    "Condition",
    "Duration",
    "HmacAuth",
    "KubernetesSettings",
    "LeaderElectionSettings",
    "LoggingSettings",
    "NotificationSettings",
    "Op",
    "OwnerPolicies",
    "Policy",
    "PrometheusSettings",
    "Robot",
    "RollbackSettings",
    "RuleSettings",
    "ServerSettings",
    "Settings",
    "TargetLabels",
    "Trigger",
    "WebhookAuth",
    "WebhookRobot",
    "format_duration",
    "key_line",
    "load_settings",
    "parse_duration",
    "read_secret_file",
    "redacted_yaml",
    "render_path",
    "secret_from",
    "warnings_of",
]
