"""The error tree: stable, unique codes that operators can search for."""

from __future__ import annotations

import re

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
