"""The ``kubernetes`` and ``leader_election`` sections."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, ValidationInfo, field_validator

from rollbackd.settings.values import (
    ClusterName,
    Duration,
    FilePath,
    Section,
    Selector,
    format_duration,
)


class KubernetesSettings(Section):
    kubeconfig: FilePath = Field(
        "", description="kubeconfig file; empty: in-cluster, then $KUBECONFIG, then ~/.kube/config"
    )
    namespaces: list[str] = Field(
        default_factory=list, description="namespaces to manage; empty: all namespaces"
    )
    selector: Selector = Field(
        "rollbackd.io/enabled=true",
        description="label selector of the Deployments rollbackd manages (opt-in)",
    )
    cluster_name: ClusterName = Field(
        "",
        description="this cluster's name, shown in every message, Event, log line and history;"
        " set it when several clusters share one group or one query backend",
    )


LEASE_JITTER = 1.2
"""client-go's leader-election jitter factor: retries wait ``retry_period * (1 + 1.2 r)``."""


class LeaderElectionSettings(Section):
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
