"""Errors of ``rollbackd replay``."""

from __future__ import annotations

from rollbackd.errors.base import RollbackdError


class ReplayError(RollbackdError, code="ERR_REPLAY_FAILED"):
    """``rollbackd replay`` could not run."""


class ReplayBadArguments(ReplayError, code="ERR_REPLAY_BAD_ARGUMENTS"):
    """A ``--from``/``--to`` that is not a time (RFC 3339, ``now``, ``-24h``), a span that
    is not forwards, or a ``--rule`` the configuration does not have (exit status 2)."""
