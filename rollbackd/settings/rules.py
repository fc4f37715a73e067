"""The ``rules`` section: PromQL rules with their hold windows and policies."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from rollbackd.settings.values import (
    Action,
    Duration,
    LabelName,
    Op,
    Policy,
    Section,
    format_duration,
)


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


class Condition(Section):
    expr: PromQL = Field(description="PromQL returning one series per target")
    op: Op = Field(">=", description="comparison: > >= < <=")
    threshold: Threshold = Field(description="value compared with op")


class TargetLabels(Section):
    namespace: LabelName = Field(
        "namespace", description="label holding the Deployment's namespace"
    )
    deployment: LabelName = Field("deployment", description="label holding the Deployment's name")


BUILT_IN_RULE = "progress-deadline"
"""The rule a stalled rollout breaches (``rollback.on_progress_deadline``)."""


class RuleSettings(Section):
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
    action: Action = Field(
        "rollback", description="rollback | notify | approve (ask on DingTalk first)"
    )

    @field_validator("name")
    @classmethod
    def _not_built_in(cls, value: str) -> str:
        if value == BUILT_IN_RULE:
            raise ValueError(
                f"{BUILT_IN_RULE!r} is the built-in rule of stalled rollouts "
                "(rollback.on_progress_deadline); choose another name"
            )
        return value

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
