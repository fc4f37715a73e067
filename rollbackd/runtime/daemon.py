"""The daemon: ports wired to the stages, leadership, signals, and an orderly shutdown.

Start-up: logging, the Deployment watch cache, the Lease, the HTTP listener, the outboxes,
the webhook intake and the scheduler. Only the leader with a synced cache evaluates, acts
and speaks; ``/readyz`` says so, which sends Alertmanager's webhooks to the leader.

Shutdown on SIGTERM or SIGINT, in order, each step bounded: not ready -> stop intake (the
HTTP listener) -> stop the scheduler -> finish the in-flight rollback -> flush the outboxes
-> release the Lease. SIGHUP reloads the configuration: validated first, the old one stays
on any error; rules, rollback guards and notification routing change live, while changes
to kubernetes, prometheus, server or leader_election are reported as needing a restart.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from rollbackd.errors import ConfigError
from rollbackd.model import Verdict
from rollbackd.notifications.dingtalk import sender_for
from rollbackd.notifications.outbox import Notifications, Outbox
from rollbackd.notifications.render import Renderer
from rollbackd.rollbacks.execute import RollbackExecutor
from rollbackd.rollbacks.kubernetes import DeploymentCache, KubernetesWorkloads, api_client
from rollbackd.runtime.clock import SystemClock
from rollbackd.runtime.evaluation import RuleRunner, check_rule_syntax
from rollbackd.runtime.incidents import IncidentRunner, with_breach_starts
from rollbackd.runtime.leader import LeaderElector
from rollbackd.runtime.logs import configure_logging, get_logger
from rollbackd.runtime.scheduler import EvaluationScheduler
from rollbackd.runtime.server import HttpServer, WebhookIntake, build_app
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import Settings, load_settings
from rollbackd.signals.prometheus import PrometheusSource
from rollbackd.state.changes import ChangeTimes

log = get_logger(__name__)

SHUTDOWN_STEP_SECONDS = 10.0
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
        api = api_client(settings.kubernetes)
        self.workloads = KubernetesWorkloads(api)
        self.cache = DeploymentCache(api, settings.kubernetes, on_change=self._observe)
        self.leader = LeaderElector(api, settings.leader_election, on_change=self._leadership)
        self.source = PrometheusSource(settings.prometheus)
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
        """The watch thread's view of a change: template change times, new records."""
        self.changes.observe(old, new, now=self.clock.now().wall)
        if self.incidents is not None:
            self.incidents.observe(old, new)

    def _delivered(self, incident: str) -> tuple[str, ...]:
        return self.incidents.said(incident) if self.incidents is not None else ()

    def _leadership(self, leading: bool) -> None:
        self.telemetry.leader.set(1 if leading else 0)
        if not leading and self.incidents is not None:  # drop the acting set at once
            self._spawn(self.incidents.lead(False), "leadership-lost")

    def is_leader(self) -> bool:
        if not self.settings.leader_election.enabled:
            return True
        return self.leader.is_leader

    def ready(self) -> bool:
        return not self._shutting_down and self.cache.synced and self.is_leader()

    def _build(self) -> None:
        """Build the stages from ``self.settings``; on reload, queued messages and open
        incidents carry over."""
        settings = self.settings
        assert self.http_client is not None
        renderer = Renderer(settings.notifications.language, settings.notifications.templates_dir)
        previous, self.outboxes = self.outboxes, {}
        for robot in settings.notifications.robots:
            sender = sender_for(robot, self.http_client)
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
        self.executor = RollbackExecutor(
            workloads=self.workloads,
            watcher=self.workloads,
            events=self.workloads,
            settings=settings.rollback,
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
            self.runner, sink=self._sink, telemetry=self.telemetry, active=self.ready
        )

    async def _follow_leadership(self) -> bool:
        """Bring the incident core and the hold windows in line with leadership (leading
        with a synced cache). True when this replica has just become the leader: its hold
        windows were seeded from history and it adopted the open incidents."""
        assert self.incidents is not None
        assert self.runner is not None
        leading = self.ready()
        if leading == self.incidents.state.leading:
            return False
        if leading:
            if self.leader.inherited:  # the last leader may have just spent a burst
                self.notifications.after_takeover()
            await self.runner.seed()
        await self.incidents.lead(leading)
        return leading

    async def _sink(self, verdicts: list[Verdict]) -> None:
        """An evaluation's verdicts into the incident core, on the leader only."""
        assert self.incidents is not None
        if await self._follow_leadership():
            return  # judged before the hold windows were seeded; the next one counts
        if self.incidents.state.leading:
            await self.incidents.handle(verdicts)

    async def _alert_sink(self, verdicts: list[Verdict]) -> None:
        """A webhook payload's verdicts, dated from ALERTS_FOR_STATE, on the leader only."""
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
            if self.once:
                return await self._run_once()
            if settings.leader_election.enabled:
                self._spawn(self.leader.run(self.stop), "leader")
            intake = None
            if settings.alertmanager.enabled:
                intake = WebhookIntake(
                    settings.alertmanager,
                    clock=self.clock,
                    telemetry=self.telemetry,
                    sink=self._alert_sink,
                )
                self._spawn(intake.run(), "webhook-intake")
            app = build_app(
                server=settings.server,
                alertmanager=settings.alertmanager,
                telemetry=self.telemetry,
                intake=intake,
                ready=self.ready,
            )
            self.http = HttpServer(app, settings.server)
            await self.http.start()
            log.info("listening", address=settings.server.listen, port=self.http.port)
            if await _until(lambda: self.cache.synced, 60):
                tune_gc()
            self.scheduler.start()
            await self.stop.wait()
            await self._shutdown()
        return EXIT_OK

    async def _run_once(self) -> int:
        assert self.incidents is not None
        assert self.runner is not None
        await _until(lambda: self.cache.synced, 30)
        await self._follow_leadership()
        verdicts = await self.runner.run()
        await self._sink(verdicts)
        await self.incidents.idle(self.settings.rollback.wait_for_rollout.total_seconds() + 30)
        await self.notifications.drain(SHUTDOWN_STEP_SECONDS)
        self.cache.stop()
        log.info("once_finished", verdicts=len(verdicts), incidents=len(self.incidents.open))
        return EXIT_OK

    async def _shutdown(self) -> None:
        started = time.monotonic()
        log.info("shutdown_started")
        self._shutting_down = True  # not ready: the Service stops sending webhooks here
        await _bounded(self.http.stop(), "stop_listener")
        self.scheduler.shutdown()
        assert self.incidents is not None
        await self.incidents.idle(SHUTDOWN_STEP_SECONDS * 3)
        await self.notifications.drain(SHUTDOWN_STEP_SECONDS)
        await self.leader.release()
        self.cache.stop()
        for task in self._tasks:
            task.cancel()
        self.source.close()
        log.info("shutdown_finished", seconds=round(time.monotonic() - started, 2))

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
        restart = [
            section
            for section in ("kubernetes", "prometheus", "server", "leader_election")
            if getattr(fresh, section) != getattr(self.settings, section)
        ]
        self.scheduler.shutdown()
        # Sections that need a restart keep their running values until then.
        self.settings = self._forced(
            fresh.model_copy(
                update={section: getattr(self.settings, section) for section in restart}
            )
        )
        self._build()
        self.scheduler.start()
        log.info(
            "reloaded",
            rules=[r.name for r in self.settings.rules],
            restart_needed_for=restart or None,
        )


def tune_gc() -> None:
    """Keep garbage collection off the evaluation path.

    Each tick parses a result per rule (10,000 series each at scale) into short-lived
    objects; with the default gen-0 threshold of 700 that triggers hundreds of collections
    that walk everything alive, the Deployment cache included. Objects alive after start-up
    are frozen out of collection and young collections run less often; cycles are still
    collected.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def _bounded(step: Any, name: str) -> None:
    try:
        await asyncio.wait_for(step, SHUTDOWN_STEP_SECONDS)
    except TimeoutError:
        log.error("shutdown_step_timed_out", step=name)


def run_daemon(settings: Settings, *, config_file: str, once: bool, dry_run: bool = False) -> int:
    """``rollbackd run``: configure logging and run until stopped."""
    configure_logging(
        level=settings.logging.level, fmt=settings.logging.format, secrets=settings.secret_values()
    )
    structlog.contextvars.clear_contextvars()
    daemon = Daemon(settings, config_file=config_file, once=once, force_dry_run=dry_run)
    return asyncio.run(daemon.run())
