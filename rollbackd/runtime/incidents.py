"""The incident shell: feeds the pure core (``incidents/lifecycle.py``) and carries out its
effects. It decides nothing.

Events go through ``submit`` one at a time, in order. Effects that need the cluster (reading
a workload for a decision, a rollback, an Event, the delivery record) run as tasks whose
results come back as events, so a rollout that takes minutes never holds up evaluation,
and the core sees every result in a definite order: the budget is reserved before a
rollback starts, however many fire in the same tick.

Messages delivered for an incident whose rollback was written are recorded on the workload
(``rollbackd.io/messages``), so a new leader sends only the missing ones.
"""

from __future__ import annotations

import asyncio
import queue
import secrets
from collections.abc import Callable, Collection, Coroutine, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from rollbackd.errors import KubeError, RollbackdError, all_error_classes
from rollbackd.incidents import lifecycle as core
from rollbackd.incidents.decide import Undo
from rollbackd.incidents.owners import OWNER_RESOURCES, Owner, owner_revision
from rollbackd.model import Incident, Obj, Target, Verdict
from rollbackd.notifications.render import graph_url
from rollbackd.ports import Clock, DeploymentView, EventRecorder, Notify, OwnerObjects, Workloads
from rollbackd.rollbacks.execute import RollbackExecutor
from rollbackd.rollbacks.plan import owner_of_workload, selector_of, situation_of
from rollbackd.rollbacks.results import Outcome, RollbackRequest, RollbackResult, error_code
from rollbackd.runtime.deliveries import DeliveryRecord
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import Settings
from rollbackd.state.annotations import (
    LAST_ROLLBACK,
    MESSAGES,
    RECENT_ROLLBACKS,
    parse_messages,
    read_state,
)
from rollbackd.state.changes import ChangeTimes

log = get_logger(__name__)

TRANSIENT_CODES = frozenset(cls.code for cls in all_error_classes() if cls.transient)


EPOCH = secrets.token_hex(4)  # this process's start, for incident ids


def core_config(settings: Settings) -> core.Config:
    """What the core needs of ``settings``."""
    base = settings.prometheus.external_url or settings.prometheus.url
    election = settings.leader_election
    return core.Config(
        kube=settings.kubernetes,
        rollback=settings.rollback,
        installation=f"{election.namespace}/{election.lease_name}",
        rules=frozenset(rule.name for rule in settings.rules),
        graph_urls={rule.name: graph_url(base, rule.expr) for rule in settings.rules},
        epoch=EPOCH,
        warmup=max((rule.interval for rule in settings.rules), default=timedelta(0)),
    )


class IncidentRunner:
    """Runs the incident core against the cluster, the outboxes and the clock."""

    def __init__(
        self,
        settings: Settings,
        *,
        deployments: DeploymentView,
        workloads: Workloads,
        events: EventRecorder,
        executor: RollbackExecutor,
        notifications: Notify,
        telemetry: Telemetry,
        clock: Clock,
        changes: ChangeTimes,
        is_leader: Callable[[], bool] = lambda: True,
        owners: OwnerObjects | None = None,
    ) -> None:
        self.state = core.initial(core_config(settings))
        self._owners = owners
        self._deployments = deployments
        self._workloads = workloads
        self._events = events
        self.notifications = notifications
        self._telemetry = telemetry
        self._clock = clock
        self._changes = changes
        self._is_leader = is_leader
        self.executor = executor
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._deliveries = DeliveryRecord(
            deployments=deployments, workloads=workloads, is_leader=is_leader
        )
        # Workloads whose rollback record changed, handed over from the watch thread.
        self._touched: queue.SimpleQueue[Target] = queue.SimpleQueue()
        self.stepped = asyncio.Condition()  # notified after every step of the core
        self.link: Callable[[Incident], Incident] | None = None
        """Signs an approval request's links (the approval desk), when approvals are on."""
        self.threads: Callable[[Incident], Incident] | None = None
        """Names the release each message is about (the release desk)."""

    @property
    def open(self) -> dict[Target, core.Case]:
        return dict(self.state.cases)

    def open_targets(self) -> Collection[Target]:
        """Workloads with an open incident: the evaluation reports them even when healthy."""
        return self.state.cases.keys()

    def _now(self) -> datetime:
        return self._clock.now().wall

    # --- intake ------------------------------------------------------------------------

    async def submit(self, event: core.Input, at: datetime | None = None) -> None:
        """Step the core with ``event`` (at ``at``, or now) and carry out what it says."""
        async with self._lock:
            self.state, effects = core.step(self.state, event, at or self._now())
        for effect in effects:
            self._perform(effect)
        async with self.stepped:
            self.stepped.notify_all()

    async def handle(self, verdicts: list[Verdict], *, at: datetime | None = None) -> None:
        """One batch of verdicts (one evaluation cycle, or one webhook payload).

        ``at`` is the time the evaluation was due: its windows are judged on it.
        """
        await self.submit(core.Signals(tuple(verdicts)), at)
        touched = self._take_touched()
        if touched:
            await self.adopt(touched)

    def reconfigure(
        self, settings: Settings, *, executor: RollbackExecutor, notifications: Notify
    ) -> None:
        """A reload: the open incidents and their picture carry over."""
        self.executor, self.notifications = executor, notifications
        self.state, _ = core.step(self.state, core.Reconfigured(core_config(settings)), self._now())

    async def lead(self, leading: bool) -> None:
        """Leadership changed; a new leader adopts the open incidents from the records."""
        await self.submit(core.Leadership(leading))
        if leading:
            await self.adopt(self._deployments.all())

    async def adopt(self, deployments: Iterable[Obj]) -> int:
        records = []
        for deployment in deployments:
            meta = deployment["metadata"]
            annotations = meta.get("annotations") or {}
            last = read_state(annotations).last_rollback
            if last is None:
                continue
            incident, said = parse_messages(annotations.get(MESSAGES, ""))
            target = Target(meta["namespace"], meta["name"])
            owner = owner_of_workload(
                deployment, argocd_namespace=self.state.config.rollback.owners.argocd_namespace
            )
            said = said if incident == last.incident else ()
            records.append(core.Record(target, last, said, owner))
        before = set(self.state.cases)
        await self.submit(core.Adopt(tuple(records)))
        adopted = [t for t in self.state.cases if t not in before]
        for target in adopted:
            case = self.state.cases[target]
            self._deliveries.track(case.id, target)
            log.info("incident_adopted", incident_id=case.id, target=str(target))
        return len(adopted)

    def observe(self, old: Obj | None, new: Obj | None) -> None:
        """The watch saw a change (called from the watch thread): note new records."""
        if new is None:
            return
        before = ((old or {}).get("metadata") or {}).get("annotations") or {}
        after = new["metadata"].get("annotations") or {}
        if before.get(LAST_ROLLBACK) != after.get(LAST_ROLLBACK):
            self._touched.put(Target(new["metadata"]["namespace"], new["metadata"]["name"]))

    def _take_touched(self) -> list[Obj]:
        touched: set[Target] = set()
        while not self._touched.empty():
            touched.add(self._touched.get_nowait())
        found = (self._deployments.get(*target) for target in touched)
        return [d for d in found if d is not None]

    async def idle(self, deadline: float) -> bool:
        """Wait for running rollbacks and reads to finish, at most ``deadline`` seconds."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while self._tasks:
            left = end - loop.time()
            if left <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=left)
        return True

    # --- effects -----------------------------------------------------------------------

    def _perform(self, effect: core.Effect) -> None:
        match effect:
            case core.Assess(target, incident):
                self._spawn(self._assess(target, incident))
            case core.StartRollback():
                self._spawn(self._roll_back(effect))
            case core.Say(facts):
                self.say(facts)
            case core.Note():
                self._spawn(self._note(effect))
            case core.Decided(target, incident, decision):
                self._telemetry.decisions.labels(str(decision.action), str(decision.reason)).inc()
                with _bound(target, incident):
                    log.info(
                        "decision",
                        decision=str(decision.action),
                        reason=str(decision.reason),
                        message=decision.message,
                        dry_run=decision.dry_run,
                    )
            case core.Deferred(target, incident, reason):
                self._telemetry.decisions.labels("deferred", reason).inc()
                with _bound(target, incident):
                    log.info("decision_deferred", reason=reason)
            case core.Closed(target, incident, phase):
                with _bound(target, incident):
                    log.info("incident_closed", target=str(target), phase=str(phase))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _assess(self, target: Target, incident: str) -> None:
        if not self._deployments.synced:
            await self.submit(core.Assessed(target, incident, None, synced=False))
            return
        deployment = self._deployments.get(*target)
        if deployment is None:  # not managed: not in the cache of opted-in workloads
            await self.submit(core.Assessed(target, incident, None))
            return
        try:
            replicasets = await self._workloads.list_replicasets(
                target.namespace, selector_of(deployment)
            )
        except KubeError as exc:
            with _bound(target, incident):
                log.warning("assessment_failed", code=exc.code, error=exc.message)
            await self.submit(
                core.Assessed(target, incident, None, error_code=exc.code, error=exc.message)
            )
            return
        situation = situation_of(
            deployment,
            replicasets,
            observed_change=self._changes.changed_at(deployment),
            argocd_namespace=self.state.config.rollback.owners.argocd_namespace,
        )
        if situation.owner is not None:
            situation = replace(situation, owner=await self._owner_revision(situation.owner))
        if situation.state.problems:
            with _bound(target, incident):
                log.error("state_unreadable", problems=list(situation.state.problems))
        # A gap that opened while reading makes the read as doubtful as one before it.
        synced = self._deployments.synced
        await self.submit(core.Assessed(target, incident, situation, self._recent(), synced=synced))

    async def _owner_revision(self, owner: Owner) -> Owner:
        """The owner with the source revision its status names, when it can be read (the
        optional RBAC of ``deploy/overlays/argocd``, or Flux's read access)."""
        if self._owners is None or not owner.certain or not owner.name:
            return owner
        if owner.kind not in OWNER_RESOURCES:
            return owner
        try:
            found = await self._owners.get_owner(owner.kind, owner.namespace, owner.name)
        except KubeError as exc:
            log.info("owner_unreadable", owner=owner.label, code=exc.code)
            return owner
        return replace(owner, revision=owner_revision(owner.kind, found))

    def _recent(self) -> frozenset[tuple[Target, str]]:
        """Every automatic rollback recorded on the managed workloads, for the budget."""
        found: set[tuple[Target, str]] = set()
        for deployment in self._deployments.annotated(RECENT_ROLLBACKS):
            meta = deployment["metadata"]
            text = (meta.get("annotations") or {}).get(RECENT_ROLLBACKS)
            if text:
                target = Target(meta["namespace"], meta["name"])
                found.update((target, at) for at in text.split(",") if at)
        return frozenset(found)

    async def _roll_back(self, start: core.StartRollback) -> None:
        config = self.state.config
        request = RollbackRequest(
            target=start.target,
            incident=start.incident,
            rule=start.rule,
            value=start.value,
            threshold=start.threshold,
            op=start.op,
            dry_run=start.dry_run,
            expected_hash=start.expected_hash,
            by=config.installation,
            pause=start.pause,
        )
        with _bound(start.target, start.incident):
            try:
                result = await self.executor.execute(request)
            except RollbackdError as exc:
                result = RollbackResult(request, Outcome.FAILED, error_code(exc), exc.message)
            self._telemetry.rollbacks.labels(str(result.outcome)).inc()
            self._telemetry.rollback_seconds.observe(result.seconds)
            log.info(
                "rollback_result",
                outcome=str(result.outcome),
                code=result.code,
                message=result.message,
                seconds=result.seconds,
                written=result.written,
            )
        if result.written:  # the patch carried what was delivered; later writes the rest
            self._deliveries.track(start.incident, start.target)
        await self.submit(
            core.RolledBack(
                target=start.target,
                incident=start.incident,
                outcome=str(result.outcome),
                code=result.code,
                message=result.message,
                written=result.written,
                transient=result.code in TRANSIENT_CODES,
                at=result.at,
                paused=result.paused,
                undo=Undo(
                    result.from_revision,
                    result.to_revision,
                    result.from_images,
                    result.to_images,
                )
                if result.from_revision is not None and result.to_revision is not None
                else None,
            )
        )
        if result.written:
            await self._deliveries.write(start.incident)

    async def _note(self, note: core.Note) -> None:
        deployment = self._deployments.get(*note.target)
        if deployment is None or not self._is_leader():
            return
        try:
            await self._events.record_event(
                deployment,
                reason=note.reason,
                note=f"incident {note.incident}: {note.text}",
                warning=note.warning,
            )
        except KubeError as exc:  # an Event is a courtesy: it never blocks anything
            log.warning("event_not_recorded", reason=note.reason, code=exc.code)

    def say(self, facts: Incident) -> list[str]:
        """Send a message, on the leader only: an incident's, or a release's. Returns the
        robots it was queued for."""
        if not self._is_leader():
            log.warning("notification_withheld", reason="not the leader", kind=str(facts.event))
            return []
        if self.threads is not None:
            facts = self.threads(facts)
        if self.link is not None:  # the desk signs approval requests, passes the rest
            facts = self.link(facts)
        return self.notifications.notify(facts)

    # --- the delivery record -----------------------------------------------------------

    def said(self, incident: str) -> tuple[str, ...]:
        """The messages of ``incident`` delivered so far (the rollback patch records them)."""
        return self._deliveries.said(incident)

    def delivered(self, incident: str, event: str) -> None:
        """Every robot is done with this message (the outboxes call it)."""
        if self._deliveries.delivered(incident, event):
            self._spawn(self._deliveries.write(incident))


def _bound(target: Target, incident: str) -> Any:
    return structlog.contextvars.bound_contextvars(
        incident_id=incident, namespace=target.namespace, deployment=target.deployment
    )
