"""What a replay found, as JSON, as a table, and as one self-contained HTML file.

The HTML report holds a chart per breach, drawn here as SVG: the rule's value and its
threshold over time, the releases of the workload (deploy markers) and the moment rollbackd
would have acted. No script, no font, no stylesheet from elsewhere: it opens offline, and
reads in the configured language (``zh`` or ``en``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from rollbackd.incidents.decide import duration
from rollbackd.model import Target
from rollbackd.replay.past import Release

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Breach:
    """A rule firing for a target: from its hold's start to its resolution."""

    rule: str
    target: Target
    op: str
    threshold: float
    began: datetime
    fired: datetime | None
    ended: datetime | None  # None: still firing when the replay ended
    peak: float | None
    incident: str = ""
    points: list[tuple[float, float | None]] = field(default_factory=list, compare=False)

    @property
    def chart_start(self) -> datetime:
        return _at(self.points[0][0]) if self.points else self.began

    @property
    def chart_end(self) -> datetime:
        return _at(self.points[-1][0]) if self.points else (self.ended or self.began)


@dataclass(frozen=True)
class Choice:
    """What rollbackd would have decided for one incident, and what it would have said."""

    incident: str
    target: Target
    at: datetime
    action: str  # rollback | notify | skip
    reason: str
    message: str
    dry_run: bool = False
    from_revision: int | None = None
    to_revision: int | None = None
    said: tuple[str, ...] = ()


@dataclass(frozen=True)
class Flap:
    """Holds of a (rule, target) that cleared before ``for`` was up: never acted on."""

    rule: str
    target: Target
    count: int
    first: datetime
    last: datetime


@dataclass(frozen=True)
class Gap:
    """A span of a rule's history that cannot be judged as data: ``no_data`` (no series
    at all: no data and no history look the same) or ``error`` (the query failed)."""

    rule: str
    start: datetime
    end: datetime
    kind: str
    code: str


@dataclass(frozen=True)
class Report:
    start: datetime
    end: datetime
    rules: list[str]
    cluster: bool  # False: breaches only (``--no-cluster``)
    breaches: list[Breach]
    decisions: list[Choice]
    flaps: list[Flap]
    gaps: list[Gap]
    releases: dict[tuple[str, Target, datetime], list[Release]] = field(default_factory=dict)

    def decision_of(self, breach: Breach) -> Choice | None:
        return next((d for d in self.decisions if d.incident == breach.incident), None)

    @property
    def failed(self) -> bool:
        """Whether some of the history could not be read."""
        return any(gap.kind == "error" for gap in self.gaps)


def _at(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _target(target: Target) -> dict[str, str]:
    return {"namespace": target.namespace, "deployment": target.deployment}


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON data (times in RFC 3339, UTC)."""

    def decision(d: Choice | None) -> dict[str, Any] | None:
        if d is None:
            return None
        return {
            "incident": d.incident,
            "at": _time(d.at),
            "action": d.action,
            "reason": d.reason,
            "message": d.message,
            "dry_run": d.dry_run,
            "from_revision": d.from_revision,
            "to_revision": d.to_revision,
            "said": list(d.said),
        }

    return {
        "from": _time(report.start),
        "to": _time(report.end),
        "rules": report.rules,
        "cluster": report.cluster,
        "breaches": [
            {
                "rule": b.rule,
                **_target(b.target),
                "from": _time(b.began),
                "fired": _time(b.fired),
                "to": _time(b.ended),
                "peak": _number(b.peak),
                "op": b.op,
                "threshold": b.threshold,
                "decision": decision(report.decision_of(b)),
            }
            for b in report.breaches
        ],
        "decisions": [{**_target(d.target), **(decision(d) or {})} for d in report.decisions],
        "flaps": [
            {
                "rule": f.rule,
                **_target(f.target),
                "count": f.count,
                "first": _time(f.first),
                "last": _time(f.last),
            }
            for f in report.flaps
        ],
        "gaps": [
            {
                "rule": g.rule,
                "from": _time(g.start),
                "to": _time(g.end),
                "kind": g.kind,
                "code": g.code or None,
            }
            for g in report.gaps
        ],
    }


TABLE_COLUMNS = ("rule", "target", "from", "to", "peak", "threshold", "decision", "reason")


def to_table(report: Report) -> str:
    """One line per breach with what rollbackd would have done; flaps and gaps after."""
    rows: list[list[str]] = [list(TABLE_COLUMNS)]
    for breach in report.breaches:
        decided = report.decision_of(breach)
        rows.append(
            [
                breach.rule,
                str(breach.target),
                _time(breach.began) or "-",
                _time(breach.ended) or "(firing)",
                f"{breach.peak:.6g}" if breach.peak is not None else "-",
                f"{breach.op} {breach.threshold:g}",
                (decided.action if decided else "-") if report.cluster else "-",
                (f"{decided.reason}: {decided.message}" if decided else "-")
                if report.cluster
                else "no cluster history: breaches only",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS) - 1)]
    lines = [
        "  ".join([*(v.ljust(w) for v, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in rows
    ]
    if not report.breaches:
        lines.append("(no breach)")
    for flap in report.flaps:
        lines.append(
            f"flapping: {flap.rule} {flap.target}: {flap.count} holds cleared before `for` "
            f"({_time(flap.first)} .. {_time(flap.last)}), never acted on"
        )
    for gap in report.gaps:
        what = f"query failed [{gap.code}]" if gap.kind == "error" else "no series at all"
        lines.append(f"gap: {gap.rule} {_time(gap.start)} .. {_time(gap.end)}: {what}")
    return "\n".join(lines)


# --- HTML ------------------------------------------------------------------------------------

WORDS: dict[str, dict[str, Any]] = {
    "en": {
        "title": "rollbackd replay",
        "span": "History",
        "rules": "Rules",
        "breaches": "Breaches",
        "none": "No rule fired over this span.",
        "decision": "What rollbackd would have done",
        "no_cluster": "No cluster history: breaches only, no decisions.",
        "value": "value",
        "threshold": "threshold",
        "release": "rev",
        "acted": "rollbackd acts",
        "flaps": "Flapping (held, cleared before `for`: never acted on)",
        "gaps": "Gaps in the history",
        "no_data": "no series at all",
        "error": "query failed",
        "from": "from",
        "to": "to",
        "firing": "still firing",
        "peak": "peak",
        "actions": {"rollback": "roll back", "notify": "notify only", "skip": "skip"},
    },
    "zh": {
        "title": "rollbackd 回放",
        "span": "时间范围",
        "rules": "规则",
        "breaches": "告警",
        "none": "此时间范围内没有规则触发。",
        "decision": "rollbackd 会做什么",
        "no_cluster": "没有集群历史：只列出告警，没有决策。",
        "value": "数值",
        "threshold": "阈值",
        "release": "版本",
        "acted": "rollbackd 动作",
        "flaps": "抖动（未持续到 `for` 即恢复：不处理）",
        "gaps": "历史数据缺口",
        "no_data": "没有任何序列",
        "error": "查询失败",
        "from": "从",
        "to": "到",
        "firing": "仍在触发",
        "peak": "峰值",
        "actions": {"rollback": "回滚", "notify": "仅通知", "skip": "跳过"},
    },
}


def chart(
    breach: Breach,
    releases: Sequence[Release],
    decision: Choice | None,
    words: dict[str, Any],
    *,
    width: int = 760,
    height: int = 220,
) -> str:
    """One breach as an SVG: the value, the threshold, the releases and the action."""
    left, right, top, bottom = 56, 12, 14, 28
    points = breach.points
    start = points[0][0] if points else breach.began.timestamp()
    end = points[-1][0] if points else start + 1
    end = max(end, start + 1)
    values = [v for _, v in points if v is not None and math.isfinite(v)]
    low = min([0.0, breach.threshold, *values])
    high = max([breach.threshold, *values])
    high = high + (high - low) * 0.1 or 1.0

    def x(stamp: float) -> float:
        return left + (stamp - start) / (end - start) * (width - left - right)

    def y(value: float) -> float:
        return top + (high - value) / (high - low) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(breach.rule)} {escape(str(breach.target))}">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" class="plot"/>',
    ]
    fired_end = (breach.ended or _at(end)).timestamp()
    parts.append(
        f'<rect class="held" x="{x(breach.began.timestamp()):.1f}" y="{top}" '
        f'width="{max(x(fired_end) - x(breach.began.timestamp()), 1):.1f}" '
        f'height="{height - top - bottom}"/>'
    )
    for mark in (low, breach.threshold, high):
        parts.append(
            f'<text class="axis" x="{left - 4}" y="{y(mark) + 4:.1f}" '
            f'text-anchor="end">{mark:.3g}</text>'
        )
    parts.append(
        f'<line class="threshold" x1="{left}" x2="{width - right}" '
        f'y1="{y(breach.threshold):.1f}" y2="{y(breach.threshold):.1f}"/>'
    )
    segment: list[str] = []
    segments = []
    for stamp, value in points:
        if value is None or not math.isfinite(value):
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{x(stamp):.1f},{y(value):.1f}")
    if segment:
        segments.append(segment)
    for line in segments:
        parts.append(f'<polyline class="value" points="{" ".join(line)}"/>')
    for release in releases:
        at = x(release.at.timestamp())
        parts.append(
            f'<line class="release" x1="{at:.1f}" x2="{at:.1f}" y1="{top}" '
            f'y2="{height - bottom}"/><text class="release" x="{at + 3:.1f}" y="{top + 12}">'
            f"{words['release']} {release.revision}</text>"
        )
    if decision is not None:
        at = x(decision.at.timestamp())
        action = words["actions"].get(decision.action, decision.action)
        parts.append(
            f'<line class="acted" x1="{at:.1f}" x2="{at:.1f}" y1="{top}" '
            f'y2="{height - bottom}"/><text class="acted" x="{at + 3:.1f}" '
            f'y="{height - bottom - 6}">{escape(words["acted"])}: {escape(action)}</text>'
        )
    for stamp in (start, end):
        parts.append(
            f'<text class="axis" x="{x(stamp):.1f}" y="{height - 10}" '
            f'text-anchor="{"start" if stamp == start else "end"}">'
            f"{_at(stamp):%m-%d %H:%M}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def to_html(report: Report, *, language: str, cluster_name: str = "") -> str:
    """The report as one HTML file: no script, no external asset."""
    words = WORDS.get(language, WORDS["en"])
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    items = []
    for breach in report.breaches:
        decided = report.decision_of(breach)
        releases = report.releases.get((breach.rule, breach.target, breach.began), [])
        items.append(
            {
                "breach": breach,
                "decision": decided,
                "action": words["actions"].get(decided.action, decided.action) if decided else "",
                # every text in the SVG is escaped where it is drawn
                "svg": Markup(chart(breach, releases, decided, words)),  # noqa: S704
                "held": duration((breach.ended or report.end) - breach.began),
            }
        )
    return environment.get_template("report.html.j2").render(
        words=words,
        language="zh-CN" if language == "zh" else "en",
        report=report,
        items=items,
        cluster_name=cluster_name,
        time=_time,
    )


def dumps(report: Report) -> str:
    return json.dumps(to_json(report), indent=2, ensure_ascii=False)
