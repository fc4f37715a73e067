"""Executing a rollback: read fresh, plan, patch with a precondition, record, verify.

The patch carries a ``test`` of the generation that was read, so a change landing between
the read and the write is never overwritten, while the controller's status writes (all the
time during a rollout) do not disturb it. When the test fails the Deployment is read
again: if only its annotations or scale moved, the plan is rebuilt and sent again; if its
template changed, a newer change landed and the rollback ends with reason
``newer_change``. It is never decided again here: a
second decision on a lagging picture could pick the bad revision.

Transient API failures (timeouts, lost connections, 5xx, 429) are retried with the one
backoff policy (``rollbackd.retry``) until ``wait_for_rollout`` runs out. A write whose
answer was lost is recognised on the next read by the incident id it carries.

rollbackd's state annotations (``state/annotations.py``) ride in the same patch, so the
rollback and its record land together: a crash cannot leave one without the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from rollbackd.errors import (
    KubeConflict,
    KubeError,
    LeadershipLost,
    RollbackdError,
    RolloutNotAvailable,
)
from rollbackd.incidents.lifecycle import EVENT_FAILED, EVENT_ROLLBACK, EVENT_SKIPPED
from rollbackd.incidents.owners import FLUX_RECONCILE, RECONCILE_LEVER, SYNC_LEVER, Kind
from rollbackd.model import Obj
from rollbackd.ports import EventRecorder, OwnerObjects, RolloutWatcher, Workloads
from rollbackd.retry import Backoff, Sleep, retrying
from rollbackd.rollbacks.plan import Plan, Skip, deployment_state, plan_rollback, selector_of
from rollbackd.rollbacks.results import (
    Outcome,
    ResultCode,
    ResultReason,
    RollbackRequest,
    RollbackResult,
    error_code,
    owner_refused,
    result_of,
    summary_of,
)
from rollbackd.rollbacks.status import rollout_status
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import RollbackSettings
from rollbackd.state.annotations import (
    MESSAGES,
    PAUSED_OWNER,
    PausedOwner,
    after_rollback,
    format_messages,
    format_time,
)

log = get_logger(__name__)


MIN_RETRY_SECONDS = 5.0


class RollbackExecutor:
    """Carries out rollback requests against the cluster through the ports."""

    def __init__(
        self,
        *,
        workloads: Workloads,
        watcher: RolloutWatcher,
        events: EventRecorder,
        settings: RollbackSettings,
        wall_clock: Callable[[], datetime],
        may_write: Callable[[], bool] = lambda: True,
        attempts: int = 3,
        sleep: Sleep = asyncio.sleep,
        delivered: Callable[[str], tuple[str, ...]] = lambda incident: (),
        owners: OwnerObjects | None = None,
    ) -> None:
        self._workloads = workloads
        self._watcher = watcher
        self._events = events
        self._settings = settings
        self._now = wall_clock
        self._may_write = may_write
        self._attempts = attempts
        self._sleep = sleep
        self._delivered = delivered
        self._owners = owners

    async def execute(self, request: RollbackRequest) -> RollbackResult:
        started = time.monotonic()
        try:
            result = await self._execute(request)
        except KubeError as exc:  # reading failed for good before anything was written
            result = RollbackResult(
                request, Outcome.FAILED, error_code(exc), f"{exc}; nothing was written"
            )
        return replace(result, seconds=round(time.monotonic() - started, 3))

    async def _execute(self, request: RollbackRequest) -> RollbackResult:
        pause = await self._pause_owner(request)
        if isinstance(pause, RollbackResult):  # refused: a rollback would not last
            deployment = await self._workloads.get_deployment(*request.target)
            return await self._skipped(request, deployment, pause.code, pause.message)
        result = await self._roll_back(request, pause)
        if pause is not None and pause.lever == SYNC_LEVER and not result.written:
            await self._restore_application(pause)  # nothing to protect: undo the pause
        return replace(result, paused=pause is not None and result.written)

    async def _roll_back(
        self, request: RollbackRequest, pause: PausedOwner | None
    ) -> RollbackResult:
        sent: list[Plan] = []  # a patch whose answer was lost may have landed

        def retry_logged(exc: RollbackdError, wait: float) -> None:
            log.warning("rollback_retry", code=exc.code, error=exc.message, retry_in=round(wait, 2))

        outcome = await retrying(
            lambda: self._attempt(request, sent, pause),
            policy=Backoff(
                deadline=max(MIN_RETRY_SECONDS, self._settings.wait_for_rollout.total_seconds())
            ),
            sleep=self._sleep,
            on_retry=retry_logged,
        )
        if isinstance(outcome, RollbackResult):
            return outcome
        deployment, plan = outcome
        await self._record(deployment, EVENT_ROLLBACK, request, f"rolled back {summary_of(plan)}")
        return await self._verify(request, plan)

    async def _attempt(
        self, request: RollbackRequest, sent: list[Plan], pause: PausedOwner | None
    ) -> RollbackResult | tuple[Obj, Plan]:
        """One read-plan-write; a transient error raised here retries it from the read."""
        namespace, name = request.target
        for _ in range(self._attempts):
            deployment = await self._workloads.get_deployment(namespace, name)
            replicasets = await self._workloads.list_replicasets(namespace, selector_of(deployment))
            last = deployment_state(deployment, replicasets).last_rollback
            if sent and last is not None and last.incident == request.incident:
                return deployment, sent[-1]  # the earlier write landed; its answer was lost
            plan = self._plan(request, deployment, replicasets, pause)
            if isinstance(plan, Skip):
                return await self._skipped(request, deployment, plan.reason, plan.message)
            if request.expected_hash and plan.from_revision.template_hash != request.expected_hash:
                return await self._skipped(
                    request,
                    deployment,
                    ResultReason.NEWER_CHANGE,
                    f"a newer change (revision {plan.from_revision.number}) landed after the "
                    "decision; not rolling it back unasked",
                )
            if request.dry_run:
                return result_of(
                    request,
                    plan,
                    Outcome.DRY_RUN,
                    ResultReason.OK,
                    f"DRY-RUN: would roll back {summary_of(plan)}; nothing was written",
                )
            if not self._may_write():
                return result_of(
                    request,
                    plan,
                    Outcome.FAILED,
                    error_code(LeadershipLost),
                    "leadership lost before the write; nothing was written",
                )
            try:
                await self._workloads.patch_deployment(namespace, name, plan.patch)
            except KubeConflict:
                continue  # read again: status moved, or a newer change landed
            except KubeError as exc:
                if exc.transient:
                    sent.append(plan)
                    raise
                await self._record(
                    deployment, EVENT_FAILED, request, f"rollback failed: {exc}", warning=True
                )
                return result_of(
                    request, plan, Outcome.FAILED, error_code(exc), f"{exc}; nothing was written"
                )
            return deployment, plan
        return result_of(
            request,
            None,
            Outcome.FAILED,
            error_code(KubeConflict),
            f"the Deployment kept changing; gave up after {self._attempts} attempts; "
            "nothing was written",
        )

    def _plan(
        self,
        request: RollbackRequest,
        deployment: Obj,
        replicasets: list[Obj],
        pause: PausedOwner | None,
    ) -> Plan | Skip:
        state = deployment_state(deployment, replicasets)
        plan = plan_rollback(
            deployment,
            replicasets,
            known_bad=frozenset(state.bad_templates),
            to_revision=request.to_revision,
        )
        if isinstance(plan, Skip):
            return plan
        now = self._now()
        record = plan.record(
            incident=request.incident,
            at=format_time(now),
            rule=request.rule,
            value=request.value,
            threshold=request.threshold,
            op=request.op,
            by=request.by,
            dry_run=request.dry_run,
            manual=request.manual,
            note=request.note,
        )
        annotations = after_rollback(
            state, record, now=now, cooldown=self._settings.cooldown, automatic=not request.manual
        )
        # What was already said rides along, so a new leader after a crash says only the rest.
        annotations[MESSAGES] = format_messages(request.incident, self._delivered(request.incident))
        if pause is not None:  # the pause and its record land with the rollback, or neither
            annotations[PAUSED_OWNER] = replace(pause, at=record.at).to_json()
            if pause.lever == RECONCILE_LEVER:
                annotations[FLUX_RECONCILE] = "disabled"
        return replace(plan.with_annotations(annotations), record_at=record.at)

    # --- the owner's pause -------------------------------------------------------------

    async def _pause_owner(self, request: RollbackRequest) -> PausedOwner | RollbackResult | None:
        """The pause to set with the rollback; Argo CD's is set first, or nothing is done.

        Flux's lever is an annotation riding in the rollback's own patch. Argo CD's is the
        Application's automated sync, turned off before the rollback: with selfHeal the
        undo would be reverted within seconds otherwise. When that write is refused, no
        rollback is made (it would not last) and the result says why.
        """
        owner = request.pause
        if owner is None or request.dry_run:
            return None
        paused = PausedOwner(
            incident=request.incident,
            at="",
            tool=str(owner.tool),
            kind=str(owner.kind),
            name=owner.name,
            namespace=owner.namespace,
            lever=RECONCILE_LEVER,
            revision=owner.revision,
        )
        if owner.kind is not Kind.APPLICATION:
            deployment = await self._workloads.get_deployment(*request.target)
            annotations = deployment["metadata"].get("annotations") or {}
            if annotations.get(FLUX_RECONCILE) == "disabled":
                return None  # a person paused it already: nothing of ours to lift later
            return paused
        if self._owners is None or not self._may_write():
            return owner_refused(request, "no access to owner objects")
        try:
            app = await self._owners.get_owner(owner.kind, owner.namespace, owner.name)
            automated = ((app.get("spec") or {}).get("syncPolicy") or {}).get("automated")
            if automated is None:
                return None  # no automated sync: nothing re-applies the bad template
            patch = {"spec": {"syncPolicy": {"automated": None}}}
            await self._owners.patch_owner(owner.kind, owner.namespace, owner.name, patch)
        except KubeError as exc:
            return owner_refused(request, f"{exc.code}: {exc.message}")
        log.info("owner_paused", owner=owner.label, lever=SYNC_LEVER)
        return replace(paused, lever=SYNC_LEVER, restore={"automated": automated})

    async def _restore_application(self, paused: PausedOwner) -> None:
        if self._owners is None:
            return
        patch = {"spec": {"syncPolicy": paused.restore}}
        try:
            await self._owners.patch_owner(paused.kind, paused.namespace, paused.name, patch)
        except KubeError as exc:
            log.error("owner_not_restored", owner=paused.name, code=exc.code, error=exc.message)

    async def _verify(self, request: RollbackRequest, plan: Plan) -> RollbackResult:
        wait = self._settings.wait_for_rollout.total_seconds()
        if wait <= 0:
            return result_of(
                request,
                plan,
                Outcome.SUCCEEDED,
                ResultReason.OK,
                f"rolled back {summary_of(plan)}",
                written=True,
            )
        try:
            final = await self._watcher.wait_deployment(
                plan.namespace, plan.name, lambda d: rollout_status(d).done, wait
            )
        except KubeError as exc:
            return result_of(
                request,
                plan,
                Outcome.FAILED,
                error_code(exc),
                f"rolled back {summary_of(plan)}, but its rollout could not be followed: {exc}",
                written=True,
            )
        status = rollout_status(final)
        if status.done and not status.failed:
            return result_of(
                request,
                plan,
                Outcome.SUCCEEDED,
                ResultReason.OK,
                f"rolled back {summary_of(plan)}; {status.message}",
                written=True,
            )
        message = (
            f"rolled back {summary_of(plan)}, but the rollout did not finish: {status.message}"
        )
        await self._record(final, EVENT_FAILED, request, message, warning=True)
        return result_of(
            request, plan, Outcome.FAILED, error_code(RolloutNotAvailable), message, written=True
        )

    async def _skipped(
        self, request: RollbackRequest, deployment: Obj, reason: ResultCode, message: str
    ) -> RollbackResult:
        if not request.dry_run:
            await self._record(deployment, EVENT_SKIPPED, request, f"skipped ({reason}): {message}")
        return RollbackResult(request, Outcome.SKIPPED, reason, message)

    async def _record(
        self,
        deployment: Obj,
        reason: str,
        request: RollbackRequest,
        text: str,
        *,
        warning: bool = False,
    ) -> None:
        if not self._may_write():
            return
        values = ""
        if request.rule:
            values = f"; rule {request.rule}"
            if request.value is not None:
                values += f" value {request.value:.4g} threshold {request.threshold}"
        if request.note:
            values += f"; reason: {request.note}"
        note = f"incident {request.incident}: {text}{values}"
        try:
            await self._events.record_event(deployment, reason=reason, note=note, warning=warning)
        except KubeError as exc:  # an Event is a courtesy: it never fails a rollback
            log.warning("event_not_recorded", reason=reason, code=exc.code, error=exc.message)
