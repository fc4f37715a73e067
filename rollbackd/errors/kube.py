"""Errors of the Kubernetes edge, of rollbacks and of leader election."""

from __future__ import annotations

from rollbackd.errors.base import RollbackdError


class KubeError(RollbackdError, code="ERR_KUBE_FAILED", transient=True):
    """The Kubernetes API refused or failed a request."""


class KubeUnreachable(KubeError, code="ERR_KUBE_UNREACHABLE"):
    """No connection to the Kubernetes API server."""


class KubeTimeout(KubeError, code="ERR_KUBE_TIMEOUT"):
    """The Kubernetes API server did not answer in time."""


class KubeConflict(KubeError, code="ERR_KUBE_CONFLICT"):
    """The object changed since rollbackd read it (409, or a failed patch precondition)."""


class KubeNotFound(KubeError, code="ERR_KUBE_NOT_FOUND", transient=False):
    """The Deployment or object does not exist."""


class KubeForbidden(KubeError, code="ERR_KUBE_FORBIDDEN", transient=False):
    """RBAC refused the request: the message names the missing verb and resource."""


class KubeInvalid(KubeError, code="ERR_KUBE_INVALID", transient=False):
    """The API server rejected the object as invalid (422)."""


class KubeGone(KubeError, code="ERR_KUBE_GONE"):
    """A watch's resourceVersion expired (410): rollbackd lists again."""


class KubeThrottled(KubeError, code="ERR_KUBE_THROTTLED"):
    """The API server asked rollbackd to slow down (429); retried after its Retry-After."""


class RollbackError(RollbackdError, code="ERR_ROLLBACK_FAILED"):
    """A rollback could not be planned or did not complete."""


class RolloutNotAvailable(RollbackError, code="ERR_ROLLBACK_NOT_AVAILABLE"):
    """The rolled-back Deployment did not become available within wait_for_rollout."""


class LeaderError(RollbackdError, code="ERR_LEADER_FAILED", transient=True):
    """Leader election failed."""


class LeadershipLost(LeaderError, code="ERR_LEADER_LOST"):
    """This replica is no longer the leader, so it must not write."""
