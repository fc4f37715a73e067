"""Errors of the Kubernetes edge, of rollbacks and of leader election."""

from __future__ import annotations

from rollbackd.errors.base import RollbackdError


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


class RollbackError(RollbackdError):
    """A rollback could not be planned or did not complete."""

    code = "ERR_ROLLBACK_FAILED"


class RolloutNotAvailable(RollbackError):
    """The rolled-back Deployment did not become available within wait_for_rollout."""

    code = "ERR_ROLLBACK_NOT_AVAILABLE"


class LeaderError(RollbackdError):
    """Leader election failed."""

    code = "ERR_LEADER_FAILED"
    transient = True


class LeadershipLost(LeaderError):
    """This replica is no longer the leader, so it must not write."""

    code = "ERR_LEADER_LOST"
