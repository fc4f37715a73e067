"""The daemon: ports wired to the stages, leadership, signals, and an orderly shutdown.

Start-up: logging, the Deployment informer, the Lease, the HTTP listener, the outboxes,
the webhook intake and the scheduler. The ports come from the composition root
(``runtime.wiring``). Only the Lease holder evaluates, acts and speaks, once its cache was
listed; while the cache has a gap the incident core defers every decision. ``/readyz`` is
true on every replica whose cache is synced, so a PodDisruptionBudget lets a drain evict
the leader; Alertmanager's webhooks reach the leader by the label it sets on its own pod.

Shutdown on SIGTERM or SIGINT, in order, each step bounded (``shutdown_seconds``): not
ready and unlabelled -> stop intake (the HTTP listener) -> stop the scheduler -> finish the
in-flight rollback (up to ``wait_for_rollout``) -> flush the outboxes -> stop renewing and
release the Lease, the very last step: until then the rollback may write and its messages
may be sent. SIGHUP reloads the configuration: validated first, the old one stays
on any error; rules, rollback guards and notification routing change live, while changes
to kubernetes, prometheus, server or leader_election are reported as needing a restart.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx

from rollbackd.errors import ConfigError
from rollbackd.model import Instant, Verdict
from rollbackd.notifications.outbox import Notifications, Outbox
from rollbackd.rollbacks.pauses import PauseKeeper
from rollbackd.rollbacks.rollouts import Rollouts
from rollbackd.rules.syntax import check_rule_syntax
from rollbackd.runtime.approvals import approval_desk
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.evaluation import RuleRunner
from rollbackd.runtime.incidents import IncidentRunner
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.process import (
    SHUTDOWN_STEP_SECONDS,
    bounded,
    shutdown_seconds,
    tune_gc,
    until,
)
from rollbackd.runtime.rollouts import ReleaseDesk
from rollbackd.runtime.scheduler import EvaluationScheduler
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.runtime.wiring import Edges, renderer_for
from rollbackd.settings import Settings, load_settings
from rollbackd.signals.breach_starts import with_breach_starts
from rollbackd.state.changes import ChangeTimes
from rollbackd.web import HttpServer, WebhookIntake, build_app

log = get_logger(__name__)

EXIT_OK, EXIT_FATAL = 0, 1


class Daemon:
    """One rollbackd process."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_file: str = "",
        once: bool = False,
        force_dry_run: bool = False,
    ) -> None:
        self.force_dry_run = force_dry_run  # `run --dry-run` outlives reloads
        self.settings = self._forced(settings)
        self.config_file = config_file
        self.once = once
        self.clock = SystemClock()
        self.telemetry = Telemetry()
        self.stop = asyncio.Event()
        self.changes = ChangeTimes()
        self.releases = ReleaseDesk(
            Rollouts(lambda: self.settings.rollback),
            clock=self.clock,
            leading=self.leading,
            judge=self._alert_sink,
        )
        self.edges = Edges(settings)
        self.workloads = self.edges.workloads
        self.cache = self.edges.deployments(on_change=self._observe)
        self.leader = self.edges.leader(on_change=self._leadership)
        self.label = self.edges.leader_label()
        self.source = self.edges.prometheus()
        self._renewing = asyncio.Event()  # set: stop renewing the Lease (the last step)
        self._lease_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._shutting_down = False
        self.outboxes: dict[str, Outbox] = {}
        self.http_client: httpx.AsyncClient | None = None
        self.incidents: IncidentRunner | None = None  # built once; survives reloads
        self.runner: RuleRunner | None = None

    def _forced(self, settings: Settings) -> Settings:
        if not self.force_dry_run:
            return settings
        rollback = settings.rollback.model_copy(update={"dry_run": True})
        return settings.model_copy(update={"rollback": rollback})

    # --- wiring -------------------------------------------------------------------------------

    def _observe(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """The watch thread's view of a change: template change times, releases, records."""
        self.changes.observe(old, new, now=self.clock.now().wall)
        self.releases.observe(old, new)
        if self.incidents is not None:
            self.incidents.observe(old, new)

    def _delivered(self, incident: str) -> tuple[str, ...]:
        return self.incidents.said(incident) if self.incidents is not None else ()

    def _leadership(self, leading: bool) -> None:
        self.telemetry.leader.set(1 if leading else 0)
        if not leading and self.incidents is not None:  # drop the acting set at once
            self._spawn(self.incidents.lead(False), "leadership-lost")

    def is_leader(self) -> bool:
        """Holds the Lease (renewed in time). True until the Lease is released, also while
        shutting down: the rollback in flight may still write and speak."""
        if not self.settings.leader_election.enabled:
            return True
        return self.leader.is_leader

    def leading(self) -> bool:
        """Acts: holds the Lease, has listed the cluster once, and is not shutting down."""
        return not self._shutting_down and self.cache.listed.is_set() and self.is_leader()

    def ready(self) -> bool:
        """``/readyz``: this replica's caches are synced and it is not shutting down."""
        return not self._shutting_down and self.cache.synced

    def _build(self) -> None:
        """Build the stages from ``self.settings``; on reload, queued messages and open
        incidents carry over."""
        settings = self.settings
        assert self.http_client is not None
        renderer = renderer_for(settings)
        previous, self.outboxes = self.outboxes, {}
        for robot in settings.notifications.robots:
            sender = self.edges.sender(robot, self.http_client)
            outbox = previous.get(robot.name)
            if outbox is None:
                outbox = Outbox(
                    robot.name,
                    sender,
                    renderer,
                    clock=self.clock,
                    sleep=asyncio.sleep,
                    telemetry=self.telemetry,
                )
                self._spawn(outbox.run(), f"outbox-{robot.name}")
            outbox.sender, outbox.renderer = sender, renderer
            self.outboxes[robot.name] = outbox
        self.notifications = Notifications(settings.notifications, renderer, self.outboxes)
        self.executor = self.edges.executor(
            settings.rollback,
            wall_clock=lambda: self.clock.now().wall,
            may_write=self.is_leader,
            delivered=self._delivered,
        )
        if self.incidents is None:
            self.incidents = IncidentRunner(
                settings,
                deployments=self.cache,
                workloads=self.workloads,
                events=self.workloads,
                executor=self.executor,
                notifications=self.notifications,
                telemetry=self.telemetry,
                clock=self.clock,
                changes=self.changes,
                is_leader=self.is_leader,
                owners=self.workloads,
            )
        else:
            self.incidents.reconfigure(
                settings, executor=self.executor, notifications=self.notifications
            )
        self.notifications.on_delivered = self.incidents.delivered
        runner = RuleRunner(
            settings.rules,
            source=self.source,
            clock=self.clock,
            telemetry=self.telemetry,
            previous=self.runner,  # unchanged rules keep their hold windows
        )
        # Only Deployments with something to say, and those with open incidents, get verdicts.
        runner.focus = self.incidents.open_targets
        runner.managed = self.cache.manages
        self.runner = runner
        self.scheduler = EvaluationScheduler(
            self.runner,
            sink=self._sink,
            telemetry=self.telemetry,
            active=self.leading,
            clock=self.clock,
        )

    async def _follow_leadership(self) -> bool:
        """Bring the incident core and the hold windows in line with leadership (``leading``).
        True when this replica has just become the leader: its hold windows were seeded
        from history, it adopted the open incidents and heard the stalls going on."""
        assert self.incidents is not None
        assert self.runner is not None
        if self._shutting_down:  # the incidents in flight finish as they are
            return False
        leading = self.leading()
        if leading == self.incidents.state.leading:
            return False
        if leading:
            if self.leader.inherited:  # the last leader may have just spent a burst
                self.notifications.after_takeover()
            await self.runner.seed()
        await self.incidents.lead(leading)
        stalls = self.releases.rollouts.stalls() if leading else ()
        if stalls:  # stalls going on before this replica led are breaches all the same
            await self.incidents.handle(list(stalls))
        return leading

    async def _sink(self, verdicts: list[Verdict], at: Instant) -> None:
        """A tick's verdicts into the incident core (judged at ``at``), on the leader only."""
        assert self.incidents is not None
        if await self._follow_leadership():
            return  # judged before the hold windows were seeded; the next one counts
        if self.incidents.state.leading:
            await self.incidents.handle(verdicts, at=at.wall)

    async def _alert_sink(self, verdicts: list[Verdict]) -> None:
        """A webhook payload's verdicts, dated from ALERTS_FOR_STATE (a stall's are dated
        already), on the leader only."""
        assert self.incidents is not None
        await self._follow_leadership()
        if self.incidents.state.leading:
            await self.incidents.handle(
                await with_breach_starts(
                    verdicts, source=self.source, settings=self.settings.alertmanager
                )
            )

    def _spawn(self, coroutine: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    # --- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> int:
        settings = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload(), "reload"))
        log.info(
            "starting",
            identity=self.leader.identity,
            dry_run=settings.rollback.dry_run,
            rules=[rule.name for rule in settings.rules],
            once=self.once,
        )
        problems = await check_rule_syntax(self.source, settings.rules)
        if problems:
            for problem in problems:
                log.error("rule_invalid", problem=problem)
            return EXIT_FATAL
        self.cache.start()
        async with httpx.AsyncClient() as http_client:
            self.http_client = http_client
            self._build()
            assert self.incidents is not None
            self.releases.open(self.incidents)
            if self.once:
                return await self._run_once()
            if settings.leader_election.enabled:
                self._lease_task = asyncio.create_task(self.leader.run(self._renewing))
            if self.label.enabled:
                self._spawn(self._keep_label(), "leader-label")
            self._spawn(self._keep_pauses(), "owner-pauses")
            intake = None
            if settings.alertmanager.enabled:
                intake = WebhookIntake(
                    settings.alertmanager,
                    clock=self.clock,
                    telemetry=self.telemetry,
                    sink=self._alert_sink,
                )
                self._spawn(intake.run(), "webhook-intake")
            desk = approval_desk(
                settings,
                incidents=self.incidents,
                deployments=self.cache,
                clock=self.clock,
                telemetry=self.telemetry,
            )
            app = build_app(
                server=settings.server,
                alertmanager=settings.alertmanager,
                telemetry=self.telemetry,
                intake=intake,
                ready=self.ready,
                leading=self.leading,
                approvals=desk,
                language=settings.notifications.language,
            )
            self.http = HttpServer(app, settings.server)
            await self.http.start()
            log.info("listening", address=settings.server.listen, port=self.http.port)
            if await until(self.cache.listed.is_set, 60):
                tune_gc()
            self.scheduler.start()
            await self.stop.wait()
            await self._shutdown()
        return EXIT_OK

    async def _run_once(self) -> int:
        assert self.incidents is not None
        assert self.runner is not None
        await until(self.cache.listed.is_set, 30)
        await self._follow_leadership()
        at = self.clock.now()
        verdicts = await self.runner.run(at=at)
        await self._sink(verdicts, at)
        await self.incidents.idle(self.settings.rollback.wait_for_rollout.total_seconds() + 30)
        await self.notifications.drain(SHUTDOWN_STEP_SECONDS)
        self.cache.stop()
        log.info("once_finished", verdicts=len(verdicts), incidents=len(self.incidents.open))
        return EXIT_OK

    async def _shutdown(self) -> None:
        started = time.monotonic()
        log.info("shutdown_started", within=shutdown_seconds(self.settings))
        self._shutting_down = True  # not ready, not leading: no new decision from here
        await bounded(self.label.apply(False), "unlabel")  # webhooks go elsewhere
        await bounded(self.http.stop(), "stop_listener")
        self.scheduler.shutdown()
        assert self.incidents is not None
        rollout = self.settings.rollback.wait_for_rollout.total_seconds()
        if not await self.incidents.idle(rollout + SHUTDOWN_STEP_SECONDS):
            log.error("shutdown_step_timed_out", step="finish_rollbacks")
        await self.notifications.drain(SHUTDOWN_STEP_SECONDS)
        await self._release_lease()
        self.cache.stop()
        for task in self._tasks:
            task.cancel()
        self.source.close()
        log.info("shutdown_finished", seconds=round(time.monotonic() - started, 2))

    async def _keep_label(self) -> None:
        """The pod's leader label follows leadership, re-applied after a failed write."""
        period = self.settings.leader_election.retry_period.total_seconds()
        while not self._shutting_down:
            await self.label.apply(self.leading())
            await asyncio.sleep(period / 2)

    async def _keep_pauses(self) -> None:
        """On the leader: lift the owner pauses whose owner moved on or that lasted long."""
        keeper = PauseKeeper(
            deployments=self.cache.all,
            workloads=self.workloads,
            owners=self.workloads,
            notifications=lambda: self.notifications,
            policies=lambda: self.settings.rollback.owners,
            now=lambda: self.clock.now().wall,
        )
        while not self._shutting_down:
            if self.leading() and self.cache.synced:
                await keeper.check()
            await asyncio.sleep(self.settings.rollback.owners.check_every.total_seconds())

    async def _release_lease(self) -> None:
        """Stop renewing, after the round in flight, then release: the very last step."""
        self._renewing.set()
        if self._lease_task is not None:
            round_seconds = self.settings.leader_election.renew_deadline.total_seconds()
            try:
                await asyncio.wait_for(self._lease_task, round_seconds + 1)
            except TimeoutError:
                log.error("shutdown_step_timed_out", step="stop_renewing")
        await self.leader.release()

    async def reload(self) -> None:
        """SIGHUP: validate the file, then apply what can change without a restart."""
        if not self.config_file:
            log.warning("reload_ignored", reason="no configuration file")
            return
        try:
            fresh = load_settings(self.config_file)
        except ConfigError as exc:
            log.error("reload_rejected", code=exc.code, problems=exc.lines())
            return
        restart = self.settings.needs_restart(fresh)
        self.scheduler.shutdown()
        self.settings = self._forced(self.settings.reloaded(fresh))
        self._build()
        self.scheduler.start()
        names = [r.name for r in self.settings.rules]
        log.info("reloaded", rules=names, restart_needed_for=restart or None)
