"""The whole configuration file, one field per section."""

from __future__ import annotations

import contextlib

from pydantic import BaseModel, Field, SecretStr, model_validator

from rollbackd.errors import SecretUnavailable
from rollbackd.settings.alertmanager import AlertmanagerSettings
from rollbackd.settings.kubernetes import KubernetesSettings, LeaderElectionSettings
from rollbackd.settings.notifications import NotificationSettings
from rollbackd.settings.prometheus import PrometheusSettings
from rollbackd.settings.rollback import RollbackSettings
from rollbackd.settings.rules import RuleSettings
from rollbackd.settings.server import LoggingSettings, ServerSettings
from rollbackd.settings.values import (
    BasicAuth,
    Section,
    format_duration,
    read_secret_file,
    secret_from,
)

RESTART_SECTIONS = ("kubernetes", "prometheus", "server", "leader_election")
"""Sections a reload cannot change in a running process: they take effect at a restart."""


class Settings(Section):
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

    @model_validator(mode="after")
    def _approvals_can_be_reached(self) -> Settings:
        asking = [f"rule {rule.name!r}" for rule in self.rules if rule.action == "approve"]
        asking += [
            f"alertmanager trigger {index}"
            for index, trigger in enumerate(self.alertmanager.triggers)
            if trigger.action == "approve"
        ]
        if asking and not (self.server.external_url and self.server.approval_secret_file):
            raise ValueError(
                f"{', '.join(asking)} has action approve: set server.external_url (where "
                "people open the approval links) and server.approval_secret_file (the key "
                "that signs them)"
            )
        return self

    def needs_restart(self, fresh: Settings) -> list[str]:
        """The sections ``fresh`` changes that take effect only at a restart."""
        return [s for s in RESTART_SECTIONS if getattr(fresh, s) != getattr(self, s)]

    def reloaded(self, fresh: Settings) -> Settings:
        """``fresh``, with the sections that need a restart kept as they run now."""
        kept = {section: getattr(self, section) for section in self.needs_restart(fresh)}
        return fresh.model_copy(update=kept)

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
