"""What a rollback is asked to do and what came of it: requests, outcomes and results."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NewType

from rollbackd.errors import RollbackdError
from rollbackd.incidents.owners import Owner
from rollbackd.model import DecisionReason, Obj, Target
from rollbackd.rollbacks.plan import Plan, SkipReason


class ResultReason(StrEnum):
    """The executor's own result codes, beside decision reasons, skip reasons and errors."""

    OK = "ok"
    NEWER_CHANGE = "newer_change"  # a change landed after the decision: not rolled back
    OWNER_PAUSE_FAILED = "owner_pause_failed"  # the owner's sync could not be turned off


ErrorCode = NewType("ErrorCode", str)
"""An ``ERR_`` code of the error tree (``rollbackd.errors``)."""

ResultCode = ResultReason | DecisionReason | SkipReason | ErrorCode
"""What a ``RollbackResult`` reports: a reason (``ok`` included), or an error's code."""


def error_code(error: RollbackdError | type[RollbackdError]) -> ErrorCode:
    """The result code of an error (an instance or its class)."""
    return ErrorCode(error.code)


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class RollbackRequest:
    """What to roll back and why."""

    target: Target
    incident: str
    rule: str = ""
    value: float | None = None
    threshold: float | None = None
    dry_run: bool = False
    to_revision: int | None = None
    manual: bool = False
    note: str = ""  # an operator's --reason
    expected_hash: str = ""  # the template the decision judged; another one means a new deploy
    op: str = ""
    by: str = ""  # this installation, so that another one never adopts the incident
    pause: Owner | None = None  # the owner whose re-apply is paused with the rollback


@dataclass(frozen=True)
class RollbackResult:
    """What happened, with everything a message or an Event needs."""

    request: RollbackRequest
    outcome: Outcome
    code: ResultCode
    message: str
    from_revision: int | None = None
    to_revision: int | None = None
    from_images: tuple[str, ...] = ()
    to_images: tuple[str, ...] = ()
    from_hash: str = ""
    to_hash: str = ""
    patch: tuple[Obj, ...] = ()
    seconds: float = 0.0
    written: bool = False  # the rollback reached the cluster (even if it did not finish)
    at: str = ""  # the time in the record written with it
    paused: bool = False  # the owner's re-apply was paused with it

    @property
    def dry_run(self) -> bool:
        return self.outcome is Outcome.DRY_RUN


def owner_refused(request: RollbackRequest, why: str) -> RollbackResult:
    """Skipped: the owner's automated sync could not be turned off, so nothing was written."""
    owner = request.pause
    assert owner is not None
    return RollbackResult(
        request,
        Outcome.SKIPPED,
        ResultReason.OWNER_PAUSE_FAILED,
        f"could not turn off the automated sync of {owner.label} ({why}); a rollback would "
        "be reverted at once, so nothing was written",
    )


def summary_of(plan: Plan) -> str:
    """``ns/name from revision 3 (img:v2) to revision 2 (img:v1)``."""

    def images(value: tuple[str, ...]) -> str:
        return ", ".join(value) or "?"

    return (
        f"{plan.namespace}/{plan.name} from revision {plan.from_revision.number} "
        f"({images(plan.from_revision.images)}) to revision {plan.to_revision.number} "
        f"({images(plan.to_revision.images)})"
    )


def result_of(
    request: RollbackRequest,
    plan: Plan | None,
    outcome: Outcome,
    code: ResultCode,
    message: str,
    *,
    written: bool = False,
) -> RollbackResult:
    """A result carrying the plan's revisions, images, patch and record time, if planned."""
    if plan is None:
        return RollbackResult(request, outcome, code, message)
    return RollbackResult(
        request,
        outcome,
        code,
        message,
        written=written,
        from_revision=plan.from_revision.number,
        to_revision=plan.to_revision.number,
        from_images=plan.from_revision.images,
        to_images=plan.to_revision.images,
        from_hash=plan.from_revision.template_hash,
        to_hash=plan.to_revision.template_hash,
        patch=tuple(plan.patch),
        at=plan.record_at,
    )
