"""Kubernetes label selectors, parsed and matched the way the API server does."""

from __future__ import annotations

import re

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)"
    r"|\s+(?P<setop>in|notin)\s+\((?P<values>[^)]*)\))?\s*$"
)
_TERMS = re.compile(r",(?![^()]*\))")  # commas inside "in (a,b)" do not split terms


class SelectorError(ValueError):
    """The text is not a label selector."""


def split_terms(selector: str) -> list[str]:
    """The requirements of a selector, checked for syntax."""
    terms = _TERMS.split(selector)
    for term in terms:
        if not _REQUIREMENT.match(term):
            raise SelectorError(f"unable to parse requirement: {term.strip()!r}")
    return terms


def matches(labels: dict[str, str], selector: str) -> bool:
    """Whether ``labels`` satisfy every requirement of ``selector`` (empty matches all)."""
    if not selector.strip():
        return True
    for term in split_terms(selector):
        match = _REQUIREMENT.match(term)
        assert match is not None  # split_terms checked every term
        key, value = match["key"], labels.get(match["key"])
        if match["setop"]:
            values = {v.strip() for v in match["values"].split(",")}
            ok = value in values if match["setop"] == "in" else value not in values
        elif match["op"]:
            ok = value == match["value"] if match["op"] != "!=" else value != match["value"]
        else:
            ok = (key in labels) != bool(match["neg"])
        if not ok:
            return False
    return True
