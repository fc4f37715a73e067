"""Incident messages in Chinese and English: everything an on-call engineer needs to see."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rollbackd.model import DEPLOY_EVENTS, Event
from rollbackd.notifications.render import Renderer, graph_url, truncate
from tests.integration.test_dingtalk import incident


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("event", [e for e in Event if e not in DEPLOY_EVENTS])
def test_every_event_renders_every_fact(language: str, event: Event) -> None:
    """Each event, in each language, shows id, target, rule, value/threshold, since,
    revisions with images, the reason and the graph link."""
    item = replace(incident(7, event), graph_url=graph_url("http://prom:9090", "up > 0"))
    message = Renderer(language).render(item)
    for fact in (
        item.id,
        "shop/web-7",
        "high-error-rate",
        "0.31 > 0.05",
        "2026-11-27 12:00:00",
        "3 (nginx:3.0)",
        "2 (nginx:2.0)",
        "2m00s after the change",
        "http://prom:9090/graph?g0.expr=up+%3E+0",
    ):
        assert fact in message.text, (fact, message.text)
    assert message.incidents == (item.id,)
    assert "DRY-RUN" not in message.text


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("event", sorted(DEPLOY_EVENTS))
def test_every_deploy_event_renders_the_release(language: str, event: Event) -> None:
    """A deploy-status message shows the release id, the workload, the revision it moves
    from and to with their images, the change-cause, the owner, the start and the status;
    a change-cause is outside text, so it arrives escaped."""
    item = replace(
        incident(7, event),
        change_cause="deploy *web* 3.0 @all",
        owner="Argo CD Application argocd/shop",
        reason='deployment "web-7" successfully rolled out',
    )
    message = Renderer(language).render(item)
    for fact in (
        item.id,
        "shop/web-7",
        "3 (nginx:3.0) → 2 (nginx:2.0)",
        "deploy \\*web\\* 3.0",
        "Argo CD Application argocd/shop",
        "2026-11-27 12:00:00",
        'deployment "web-7" successfully rolled out',
    ):
        assert fact in message.text, (fact, message.text)
    assert "@all" not in message.text
    assert message.title.endswith("shop/web-7")


def test_an_incident_names_its_release() -> None:
    """A breach about a revision whose deploy was told names that release, in both
    languages, so the group finds the deploy that caused it."""
    item = replace(incident(3, Event.BREACH), release="rb-20261127-115800-0c5e")
    assert "Release**: rb-20261127-115800-0c5e" in Renderer("en").render(item).text
    assert "发布编号**：rb-20261127-115800-0c5e" in Renderer("zh").render(item).text


def test_dry_run_is_marked_in_title_and_text() -> None:
    """A dry-run incident says DRY-RUN where people look first."""
    message = Renderer("zh").render(replace(incident(1), dry_run=True))
    assert message.title.startswith("[DRY-RUN]")
    assert "DRY-RUN" in message.text


def test_operator_templates_override_builtins(tmp_path: Path) -> None:
    """A template of the same name in templates_dir replaces the built-in one."""
    (tmp_path / "rollback_succeeded.en.md.j2").write_text("Undone {{ i.target }} ({{ i.id }})")
    message = Renderer("en", str(tmp_path)).render(incident(2))
    assert message.text == f"Undone shop/web-2 ({incident(2).id})\n"
    other = Renderer("en", str(tmp_path)).render(incident(2, Event.BREACH))
    assert "Breach" in other.text  # others keep the built-in template


def test_digests_name_every_incident_and_fit() -> None:
    """A digest of 300 messages is split under the size limit and names all 300 incidents."""
    renderer = Renderer("en")
    messages = [renderer.render(incident(n % 100)) for n in range(300)]
    digests = renderer.digests(messages, limit=5000, dropped=12)
    assert all(len(d.text.encode()) <= 5000 for d in digests)
    named = {i for d in digests for i in d.incidents}
    assert named == {incident(n).id for n in range(100)}
    assert "12 more" in digests[-1].text


def test_a_burst_of_releases_folds_into_digests_that_name_each_release() -> None:
    """Many deploys at once go out as digests like every message: one line per release,
    with its latest state (started, then rolled out) and its revisions."""
    renderer = Renderer("en")
    messages = [
        renderer.render(replace(incident(n, event), rule="", value=None, reason=""))
        for event in (Event.DEPLOY_STARTED, Event.DEPLOY_SUCCEEDED)
        for n in range(40)
    ]
    digests = renderer.digests(messages, limit=5000)
    lines = [line for d in digests for line in d.text.splitlines() if "shop/web-7," in line]
    assert len(lines) == 1, lines
    assert lines[0].endswith("Rolling out → Rolled out")
    assert "revision 3 → 2" in lines[0]
    assert {i for d in digests for i in d.incidents} == {incident(n).id for n in range(40)}


def test_truncate_respects_utf8_bytes() -> None:
    """Chinese text is cut on byte size, never in the middle of a character."""
    text = "回滚" * 5000
    cut = truncate(text, limit=1000, marker="…")
    assert len(cut.encode()) <= 1000
    assert cut.endswith("…")


@pytest.mark.parametrize(("language", "fact"), [("en", "**Cluster**: "), ("zh", "**集群**：")])
def test_the_cluster_is_named_in_title_facts_digests_and_labels(language: str, fact: str) -> None:
    """Two clusters posting to one group: every title starts with the cluster's name, the
    facts name it in the message's language, a digest's head names it, and robots can
    route on its label; without a name nothing changes."""
    renderer = Renderer(language, cluster="prod-bj")
    message = renderer.render(incident(1))
    assert message.title.startswith("[prod-bj] ")
    assert f"{fact}prod-bj" in message.text
    assert message.labels["cluster"] == "prod-bj"
    (digest,) = renderer.digests([message, renderer.render(incident(2))], limit=20_000)
    assert digest.title.startswith("[prod-bj] ")
    assert "- [prod-bj] " in digest.text

    plain = Renderer(language).render(incident(1))
    assert not plain.title.startswith("[")
    assert fact not in plain.text
    assert "cluster" not in plain.labels
