"""The approval desk: signs the links of an approval request, and checks and carries out what a
person answers on the page behind them.

A link is refused, in this order: the signing key unreadable 503; unknown (forged,
truncated, another key) 404; expired 410; already answered, or its incident over (or held by
another replica) 410; the workload's template changed since the question 409, and nothing is
done. "Roll back now" goes through every guard again, fresh, in the incident core. Every
answer is logged with the client's address and user agent, counted, and told in the
incident's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from datetime import datetime

from rollbackd.errors import SecretUnavailable
from rollbackd.incidents import lifecycle as core
from rollbackd.model import Event, Incident
from rollbackd.ports import Clock, DeploymentView
from rollbackd.runtime.incidents import IncidentRunner
from rollbackd.runtime.logs import get_logger
from rollbackd.runtime.telemetry import Telemetry
from rollbackd.settings import ServerSettings, Settings, read_secret_file
from rollbackd.state.changes import workload_digest
from rollbackd.web.tokens import Question, read, sign

log = get_logger(__name__)

SETTLE_SECONDS = 10.0
"""How long the answer's page waits for the core's decision before saying it is on its way."""


@dataclass(frozen=True)
class Look:
    """What a link shows now: ``status`` 200 with its case, or the refusal and why."""

    status: int
    why: str = ""
    question: Question | None = None
    case: core.Case | None = None
    value: float | None = None  # the rule's latest value for the workload
    now: datetime | None = None


class ApprovalDesk:
    """Approval links for one daemon: signed with ``server.approval_secret_file``."""

    def __init__(
        self,
        server: ServerSettings,
        *,
        incidents: IncidentRunner,
        deployments: DeploymentView,
        clock: Clock,
        telemetry: Telemetry,
    ) -> None:
        self._server = server
        self._incidents = incidents
        self._deployments = deployments
        self._clock = clock
        self._telemetry = telemetry

    def _key(self) -> bytes | None:
        """Read when used, so that a rotated Secret takes effect (old links then fail);
        None while the file is gone or empty: nothing is signed or accepted then."""
        try:
            return read_secret_file(self._server.approval_secret_file).encode()
        except SecretUnavailable as exc:
            log.error("approval_key_unavailable", code=exc.code, error=exc.message)
            return None

    def link(self, facts: Incident) -> Incident:
        """An approval request's facts with the URL of its page, signed for its template."""
        if facts.event is not Event.APPROVAL_REQUESTED or facts.expires is None:
            return facts  # every other message passes through untouched
        deployment = self._deployments.get(*facts.target)
        if deployment is None or not self._server.external_url:
            return facts
        key = self._key()
        if key is None:  # asked without buttons: on_timeout decides
            return facts
        question = Question(
            facts.id,
            facts.target,
            workload_digest(deployment),
            facts.expires,
        )
        token = sign(key, question)
        return replace(facts, approval_url=f"{self._server.external_url}/approvals/{token}")

    def look(self, token: str) -> Look:
        """Whether ``token`` may be answered now, with what its page shows."""
        now = self._clock.now().wall
        key = self._key()
        if key is None:
            return Look(503, "key", now=now)
        question = read(key, token)
        if question is None:
            return Look(404, "unknown link", now=now)
        if now >= question.expires:
            return Look(410, "expired", question, now=now)
        case = self._incidents.state.cases.get(question.target)
        if case is None or case.id != question.incident:
            return Look(410, "over", question, now=now)
        if case.phase is not core.Phase.AWAITING_APPROVAL:
            return Look(410, "answered", question, case, now=now)
        deployment = self._deployments.get(*question.target)
        if deployment is None or workload_digest(deployment) != question.template:
            return Look(409, "changed", question, case, now=now)
        held = self._incidents.state.picture.get(question.target, {})
        verdict = held.get(case.facts.rule)
        value = verdict.value if verdict is not None else case.facts.value
        return Look(200, "", question, case, value, now)

    async def answer(self, token: str, *, approve: bool, client: str, agent: str) -> Look:
        """Carry out an answer; the look after it (the case as the core left it)."""
        look = self.look(token)
        choice = "rollback" if approve else "hold"
        question = look.question
        fields = {"client": client, "user_agent": agent[:200], "answer": choice}
        if look.status != 200 or question is None:
            self._telemetry.approvals.labels(str(look.status)).inc()
            log.warning("approval_refused", status=look.status, why=look.why, **fields)
            return look
        self._telemetry.approvals.labels(choice).inc()
        log.info(
            "approval_answered",
            incident_id=question.incident,
            namespace=question.target.namespace,
            deployment=question.target.deployment,
            **fields,
        )
        by = f"a DingTalk link opened from {client}"
        await self._incidents.submit(
            core.Answered(question.target, question.incident, approve=approve, by=by)
        )
        return replace(look, case=await self._settled(question), now=self._clock.now().wall)

    async def _settled(self, question: Question) -> core.Case | None:
        """The question's case once the core decided on it (it is not being assessed), or
        as it stands after ``SETTLE_SECONDS``; None when it is closed."""
        incidents = self._incidents

        def current() -> core.Case | None:
            case = incidents.state.cases.get(question.target)
            return case if case is not None and case.id == question.incident else None

        def decided() -> bool:
            case = current()
            return case is None or case.phase is not core.Phase.ASSESSING

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_SECONDS), incidents.stepped:
                await incidents.stepped.wait_for(decided)
        return current()


def approval_desk(
    settings: Settings,
    *,
    incidents: IncidentRunner,
    deployments: DeploymentView,
    clock: Clock,
    telemetry: Telemetry,
) -> ApprovalDesk | None:
    """The daemon's desk, linked into its incident runner; None without
    ``server.external_url`` and ``server.approval_secret_file`` (then no buttons)."""
    server = settings.server
    if not (server.external_url and server.approval_secret_file):
        return None
    desk = ApprovalDesk(
        server, incidents=incidents, deployments=deployments, clock=clock, telemetry=telemetry
    )
    incidents.link = desk.link
    return desk
