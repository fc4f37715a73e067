"""The ``notifications`` section: DingTalk robots, events and templates."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import jinja2
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from rollbackd.model import DEPLOY_EVENTS, Event
from rollbackd.settings.values import Regex, Secret, Section


class _RobotBase(Section):
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
        None,
        description="events this robot receives (its own list decides); empty: "
        "notifications.events",
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


def default_events() -> list[Event]:
    """Every event but the deploy-status ones, which a group hears only when it asks."""
    return [event for event in Event if event not in DEPLOY_EVENTS]


Robot = Annotated[WebhookRobot | AppRobot, Field(discriminator="kind")]


class NotificationSettings(Section):
    language: Literal["zh", "en"] = Field("zh", description="message language: zh | en")
    events: list[Event] = Field(
        default_factory=default_events,
        description="events sent to robots without their own list; default: every incident "
        "event (the deploy_* events only where listed)",
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
