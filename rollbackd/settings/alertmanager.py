"""The ``alertmanager`` section: the webhook receiver, its auth and its triggers."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from rollbackd.settings.rules import TargetLabels
from rollbackd.settings.values import (
    Action,
    BasicAuth,
    Duration,
    Regex,
    Secret,
    SecretFile,
    Section,
    exactly_one,
)


class HmacAuth(Section):
    secret: Secret | None = Field(None, description="shared signing secret")
    secret_file: SecretFile = Field("", description="file holding the shared secret")
    max_skew: Duration = Field(
        timedelta(minutes=5), description="largest accepted clock difference (replay window)"
    )

    @model_validator(mode="after")
    def _one_secret(self) -> HmacAuth:
        exactly_one(self, ("secret", "secret_file"), required=True)
        return self


class WebhookAuth(Section):
    bearer_token: Secret | None = Field(None, description="token in Authorization: Bearer")
    bearer_token_file: SecretFile = Field("", description="file holding the bearer token")
    basic_auth: BasicAuth | None = Field(None, description="HTTP basic authentication")
    hmac: HmacAuth | None = Field(None, description="HMAC-SHA256 request signatures")

    @model_validator(mode="after")
    def _one_method(self) -> WebhookAuth:
        exactly_one(
            self, ("bearer_token", "bearer_token_file", "basic_auth", "hmac"), required=True
        )
        return self


class Trigger(Section):
    match: dict[str, str] = Field(default_factory=dict, description="labels that must be equal")
    match_re: dict[str, Regex] = Field(
        default_factory=dict, description="labels that must match a regex (anchored)"
    )
    action: Action = Field(
        "rollback", description="rollback | notify | approve (ask on DingTalk first)"
    )
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


class AlertmanagerSettings(Section):
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
