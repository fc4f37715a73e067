"""Incident messages as DingTalk markdown, from Jinja2 templates in Chinese and English.

Built-in templates live beside this module as ``<event>.<language>.md.j2``; an operator's
``notifications.templates_dir`` holding a file of the same name replaces it. Every message
shows the incident id, the Deployment, the rule with its value against the threshold, since
when, the revisions and images, the decision's reason, a DRY-RUN mark when so, and a link to
the rule's graph in Prometheus. Pure: no I/O beyond reading templates once.

Every value that comes from outside rollbackd (alert labels and annotations, names, notes,
images) reaches a template escaped (``escape_markdown``): one line, markdown punctuation
backslash-escaped as CommonMark reads it, ``@`` broken so that it mentions no one. A label
cannot become a heading, a link, an image or a mention in an on-call group.
"""

from __future__ import annotations

import dataclasses
import math
import re
import traceback
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from rollbackd.errors import TemplateFailed
from rollbackd.model import Entry, Event, Incident, Message, Target

MAX_BYTES = 20_000
"""DingTalk refuses a body over 20,000 UTF-8 bytes; text is cut below it with a marker."""
TRUNCATED = {"en": "\n\n… (truncated)", "zh": "\n\n……（已截断）"}
_TITLES = {
    "en": {
        Event.BREACH: "Breach",
        Event.ROLLBACK_STARTED: "Rolling back",
        Event.ROLLBACK_SUCCEEDED: "Rolled back",
        Event.ROLLBACK_FAILED: "Rollback FAILED",
        Event.SKIPPED: "Not rolled back",
        Event.RECOVERED: "Recovered",
        Event.ESCALATED: "Still breaching after rollback",
        Event.OUTAGE: "Outage, not rolling back",
        Event.OWNER_PAUSED: "Owner paused",
        Event.OWNER_RESUMED: "Owner resumed",
        Event.APPROVAL_REQUESTED: "Approve rollback?",
        Event.APPROVED: "Rollback approved",
        Event.HELD: "Held",
        Event.DEPLOY_STARTED: "Rolling out",
        Event.DEPLOY_SUCCEEDED: "Rolled out",
        Event.DEPLOY_FAILED: "Rollout stalled",
    },
    "zh": {
        Event.BREACH: "指标异常",
        Event.ROLLBACK_STARTED: "开始回滚",
        Event.ROLLBACK_SUCCEEDED: "已回滚",
        Event.ROLLBACK_FAILED: "回滚失败",
        Event.SKIPPED: "未回滚",
        Event.RECOVERED: "已恢复",
        Event.ESCALATED: "回滚后仍异常",
        Event.OUTAGE: "大面积异常，不回滚",
        Event.OWNER_PAUSED: "已暂停属主同步",
        Event.OWNER_RESUMED: "已恢复属主同步",
        Event.APPROVAL_REQUESTED: "请审批回滚",
        Event.APPROVED: "已批准回滚",
        Event.HELD: "已暂缓回滚",
        Event.DEPLOY_STARTED: "开始发布",
        Event.DEPLOY_SUCCEEDED: "发布完成",
        Event.DEPLOY_FAILED: "发布停滞",
    },
}


BUTTONS = {
    "en": (("Roll back now", "rollback"), ("Hold", "hold")),
    "zh": (("立即回滚", "rollback"), ("暂不回滚", "hold")),
}
"""An approval request's buttons: each opens its page with that answer preselected."""

_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]{}()#!<>|~])")
_URL_UNSAFE = re.compile(r"[\s()<>\[\]]")


def escape_markdown(value: str) -> str:
    """``value`` as literal text in DingTalk markdown: one line, punctuation escaped, and
    ``@`` followed by a zero-width space so that ``@13800000000`` mentions nobody."""
    flat = " ".join(value.splitlines())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", flat).replace("@", "@\u200b")


def _safe_url(value: str) -> str:
    """A link target that cannot close the markdown link around it."""
    return _URL_UNSAFE.sub(lambda m: urllib.parse.quote(m.group(0)), value)


def _escaped(incident: Incident) -> Incident:
    """The incident as templates see it: every outside value escaped for markdown."""
    text = escape_markdown
    return dataclasses.replace(
        incident,
        target=Target(text(incident.target.namespace), text(incident.target.deployment)),
        rule=text(incident.rule),
        cluster=text(incident.cluster),
        reason=text(incident.reason),
        note=text(incident.note),
        owner=text(incident.owner),
        next_step=text(incident.next_step),
        change_cause=text(incident.change_cause),
        from_images=tuple(text(image) for image in incident.from_images),
        to_images=tuple(text(image) for image in incident.to_images),
        graph_url=_safe_url(incident.graph_url),
        labels={text(key): text(value) for key, value in incident.labels.items()},
    )


def graph_url(prometheus_url: str, expr: str) -> str:
    """A Prometheus graph link for a rule's expression."""
    query = urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": "1h"})
    return f"{prometheus_url.rstrip('/')}/graph?{query}"


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "NaN"
    return f"{value:.4g}"


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def truncate(text: str, *, limit: int, marker: str) -> str:
    """Cut ``text`` so that its UTF-8 form fits ``limit`` bytes, ending with ``marker``."""
    data = text.encode()
    if len(data) <= limit:
        return text
    room = limit - len(marker.encode())
    return data[:room].decode(errors="ignore") + marker


def sample_incident(event: Event) -> Incident:
    """An incident with every fact filled in, to try templates on (``check-config``)."""
    return Incident(
        id="rb-20261127-153052-7f3a",
        event=event,
        target=Target("shop", "web"),
        rule="high-error-rate",
        value=0.31,
        op=">",
        threshold=0.05,
        since=datetime(2026, 11, 27, 15, 28, 52, tzinfo=UTC),
        reason="the breach began 1m30s after the change",
        reason_code="breach_after_change",
        from_revision=3,
        to_revision=2,
        from_images=("registry.example/web:2.0",),
        to_images=("registry.example/web:1.9",),
        graph_url="http://prometheus.monitoring:9090/graph",
        note="sample",
        labels={"team": "shop"},
        owner="Flux Kustomization flux-system/shop at revision main@sha1:4f2a9c1",
        next_step="revert commit main@sha1:4f2a9c1 in the source of Kustomization shop",
        change_cause="deploy web 2.0 (pipeline #812)",
        release="rb-20261127-152722-0c5e",
    )


def template_problems(language: str, templates_dir: str) -> list[tuple[str, int, str]]:
    """Render every event's template with a sample incident: (file, line, problem) each.

    The operator's overrides and the built-in templates are tried alike, so a template
    that parses but fails to render (an unknown field, a bad filter) is found before a
    real incident needs it.
    """
    renderer = Renderer(language, templates_dir)
    problems = []
    for event in Event:
        try:
            renderer.render_text(sample_incident(event))
        except Exception as exc:  # every failure is reported, with where it happened
            file, line = _template_frame(exc)
            problems.append((file, line, f"{type(exc).__name__}: {exc}"))
    return problems


def _template_frame(exc: BaseException) -> tuple[str, int]:
    """The template file and line where ``exc`` was raised (Jinja2 rewrites tracebacks)."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.filename or exc.name or "?", exc.lineno
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    if frames:
        return frames[-1].filename, frames[-1].lineno or 1
    return "?", 1


def plain_text(incident: Incident, *, code: str) -> str:
    """The built-in message, without templates: what is sent when a template fails."""
    lines = [f"### {incident.event}: {incident.target}", "", f"- incident: {incident.id}"]
    if incident.cluster:
        lines.append(f"- cluster: {incident.cluster}")
    if incident.rule:
        value = f" {_number(incident.value)} {incident.op} {_number(incident.threshold)}"
        lines.append(f"- rule: {incident.rule}{value if incident.value is not None else ''}")
    if incident.from_revision:
        lines.append(
            f"- revisions: {incident.from_revision} ({', '.join(incident.from_images)}) -> "
            f"{incident.to_revision} ({', '.join(incident.to_images)})"
        )
    for label, text in (
        ("reason", incident.reason),
        ("owner", incident.owner),
        ("next step", incident.next_step),
        ("change cause", incident.change_cause),
        ("release", incident.release),
        ("note", incident.note),
    ):
        if text:
            lines.append(f"- {label}: {text}")
    lines.append(f"- (template failed, {code}: plain message sent)")
    return "\n".join(lines) + "\n"


class Renderer:
    """Renders incidents in one language, with the operator's overrides if any."""

    def __init__(self, language: str = "zh", templates_dir: str = "", cluster: str = "") -> None:
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir:
            loaders.append(jinja2.FileSystemLoader(templates_dir))
        loaders.append(jinja2.FileSystemLoader(Path(__file__).with_name("templates")))
        self._env = jinja2.Environment(  # noqa: S701 - markdown for DingTalk, not HTML
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            trim_blocks=False,
            keep_trailing_newline=False,
        )
        self._env.filters["num"] = _number
        self._env.filters["when"] = _when
        self.language = language
        self.cluster = cluster
        """The cluster every message is about (``kubernetes.cluster_name``), or empty."""

    def render(self, incident: Incident) -> Message:
        """The incident's message; a template that fails gives the plain built-in text.

        Rendering never fails the caller: a message is always produced, and ``problem``
        carries the template's error with its code so that it is logged and fixed.
        """
        if self.cluster and not incident.cluster:
            incident = dataclasses.replace(incident, cluster=self.cluster)
        safe = _escaped(incident)
        problem = ""
        try:
            text = self.render_text(safe)
        except Exception as exc:  # any failure of an operator's template falls back
            problem = f"{TemplateFailed.code}: {type(exc).__name__}: {exc}"
            text = plain_text(safe, code=TemplateFailed.code)
        title = f"{'[DRY-RUN] ' if incident.dry_run else ''}{_prefix(safe.cluster)}"
        title += f"{_TITLES[self.language][incident.event]} {safe.target}"
        return Message(
            incidents=(incident.id,),
            event=str(incident.event),
            title=title,
            text=text,
            labels={
                **({"cluster": incident.cluster} if incident.cluster else {}),
                "namespace": incident.target.namespace,
                "deployment": incident.target.deployment,
                **incident.labels,
            },
            problem=problem,
            entries=(Entry(incident.id, (str(incident.event),), _outcome(title, safe)),),
            buttons=tuple(
                (label, f"{incident.approval_url}?choice={choice}")
                for label, choice in BUTTONS[self.language]
            )
            if incident.approval_url
            else (),
        )

    def render_text(self, incident: Incident) -> str:
        """The template's text; raises what the template raises."""
        template = self._env.get_template(f"{incident.event}.{self.language}.md.j2")
        return template.render(i=incident).strip() + "\n"

    def digests(self, messages: list[Message], *, limit: int, dropped: int = 0) -> list[Message]:
        """Many messages as few, each under ``limit`` bytes, together naming every incident.

        Used when a robot is backed up: one DingTalk message can carry dozens of incidents.
        Each incident keeps one line with its latest outcome and the events it went
        through; a digest of digests keeps the same, so nothing is reduced to a title.
        """
        latest: dict[str, Entry] = {}
        for number, message in enumerate(messages):
            for entry in message.entries or (Entry("", (message.event,), message.title),):
                key = entry.incident or f"#{number}"
                before = latest.pop(key, None)
                events = entry.events if before is None else _joined(before.events, entry.events)
                latest[key] = Entry(entry.incident, events, entry.line)
        lines: list[tuple[str, Entry | None]] = [
            (self._digest_line(entry), entry) for entry in latest.values()
        ]
        if dropped:
            more = f"- … {dropped} more" if self.language == "en" else f"- ……另有 {dropped} 条"
            lines.append((more, None))
        chunks: list[tuple[list[str], list[Entry]]] = [([], [])]
        for line, owner in lines:
            body, kept = chunks[-1]
            if body and len(("\n".join([*body, line])).encode()) > limit - 200:
                chunks.append(([], []))
                body, kept = chunks[-1]
            body.append(line)
            if owner is not None:
                kept.append(owner)
        result = []
        for body, kept in chunks:
            ids = tuple(dict.fromkeys(e.incident for e in kept if e.incident))
            if self.language == "zh":
                head = f"汇总：{len(body)} 条通知，{len(ids)} 个事件"
            else:
                head = f"Digest: {len(body)} messages, {len(ids)} incidents"
            head = _prefix(escape_markdown(self.cluster)) + head
            text = "\n".join([f"### {head}", "", *body]) + "\n"
            result.append(Message(ids, "digest", head, text, entries=tuple(kept)))
        return result

    def _digest_line(self, entry: Entry) -> str:
        line = f"- {entry.line}" + (f" ({entry.incident})" if entry.incident else "")
        if len(entry.events) > 1:
            titles = _TITLES[self.language]
            path = [titles[Event(e)] if e in _EVENTS else e for e in entry.events]
            line += f" · {' → '.join(path)}"
        return line


_EVENTS = {str(event) for event in Event}


def _prefix(cluster: str) -> str:
    """A title's cluster marker, ``[prod-bj] ``, when several clusters share a group."""
    return f"[{cluster}] " if cluster else ""


def _joined(first: tuple[str, ...], then: tuple[str, ...]) -> tuple[str, ...]:
    """Two event paths as one, without repeating the event where they meet."""
    if first and then and first[-1] == then[0]:
        return (*first, *then[1:])
    return (*first, *then)


def _outcome(title: str, safe: Incident) -> str:
    """The incident in one line: what happened, and why."""
    line = title
    if safe.rule and safe.value is not None:
        line += f": {safe.rule} {_number(safe.value)} {safe.op} {_number(safe.threshold)}"
    if safe.from_revision and safe.to_revision:
        line += f", revision {safe.from_revision} → {safe.to_revision}"
    if safe.reason:
        line += f" — {safe.reason}"
    return line
