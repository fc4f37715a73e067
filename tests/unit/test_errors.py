"""The error tree: stable, unique codes that operators can search for."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import rollbackd
from rollbackd import errors


def test_codes_are_unique_and_well_formed() -> None:
    """Every error class has its own ERR_<AREA>_<NAME> code."""
    codes = [cls.code for cls in errors.all_error_classes()]
    assert len(codes) == len(set(codes))
    assert all(re.fullmatch(r"ERR_[A-Z]+(_[A-Z]+)+|ERR_INTERNAL", code) for code in codes)


def test_docstring_draws_the_whole_tree() -> None:
    """The module docstring names every class with its code, so the drawing cannot drift."""
    doc = errors.__doc__ or ""
    for cls in errors.all_error_classes():
        assert re.search(rf"\b{cls.__name__}\s+{cls.code}\b", doc), cls.__name__


def test_message_carries_the_code() -> None:
    """An error printed anywhere shows its code."""
    exc = errors.PrometheusTimeout("query took longer than 10s", error_type="timeout")
    assert str(exc) == "query took longer than 10s [ERR_PROM_TIMEOUT]"
    assert exc.transient
    assert isinstance(exc, errors.PrometheusError)


def test_every_error_class_is_raised_or_names_an_area() -> None:
    """An operator who looks up a code in docs/error-codes.md can meet it: every leaf class
    of the tree is used by the product (raised, caught or mapped) outside the tree and the
    test fakes; a class that is never used but has children names an area."""
    root = Path(rollbackd.__file__).parent
    used: set[str] = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).parts
        if relative[0] in ("errors", "errors.py", "testing"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
    unused = [
        cls.__name__
        for cls in errors.all_error_classes()
        if cls.__name__ not in used and not cls.__subclasses__()
    ]
    assert unused == []
