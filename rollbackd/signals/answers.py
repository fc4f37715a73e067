"""Prometheus's answers as values per target: instant vectors and range matrices mapped
through a rule's ``target_labels``. Pure: the edge decodes, this maps."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from rollbackd.errors import PrometheusBadQuery, PrometheusBadResponse
from rollbackd.model import QueryResult, SeriesValues, Target
from rollbackd.settings import TargetLabels


def to_query_result(series: list[Any], target_labels: TargetLabels) -> QueryResult:
    """Map an instant vector's series to values per target.

    Raises ``PrometheusBadQuery`` when an item is not an instant-vector sample (a range
    query's matrix, a scalar), ``PrometheusBadResponse`` when a sample holds no number.
    """
    values: dict[Target, float] = {}
    ignored = 0
    ns_label, name_label = target_labels.namespace, target_labels.deployment
    new = tuple.__new__  # Target(a, b) without the named tuple's Python-level __new__
    try:
        columns = columns_of(series, ns_label, name_label)
        if columns is not None:
            return QueryResult(values=SeriesValues(*columns))
        for item in series:
            labels = item["metric"]
            namespace, name = labels.get(ns_label), labels.get(name_label)
            if not namespace or not name:
                ignored += 1
                continue
            # float() parses "NaN", "+Inf" and "-Inf" as Prometheus writes them
            values[new(Target, (namespace, name))] = float(item["value"][1])
    except (KeyError, TypeError, IndexError, AttributeError, ValueError):
        if all(isinstance(item, dict) and "value" in item for item in series):
            raise PrometheusBadResponse(
                "unexpected answer from Prometheus: a sample without a number"
            ) from None
        raise PrometheusBadQuery(
            "the query must return an instant vector (one sample per series)",
            error_type="bad_data",
        ) from None
    if len(values) + ignored < len(series):  # a target named by more than one series
        return without_repeats(series, values, ignored, ns_label, name_label)
    return QueryResult(values=values, ignored=ignored)


def to_range_results(
    series: list[Any], target_labels: TargetLabels
) -> list[tuple[float, QueryResult]]:
    """Map a range query's matrix to one ``QueryResult`` per time, oldest first.

    When every series carries exactly the two target labels and the same times (a dense
    history: the usual case), the matrix is turned into columns in C (``zip``), each a
    ``SeriesValues`` sharing one list of namespaces and one of names. Otherwise each time's
    samples are gathered and mapped as an instant vector.
    """
    try:
        dense = densecolumns_of(series, target_labels.namespace, target_labels.deployment)
        if dense is not None:
            return dense
        by_time: dict[float, list[Any]] = {}
        for item in series:
            metric = item.get("metric", {})
            for stamp, value in item.get("values", []):
                by_time.setdefault(float(stamp), []).append(
                    {"metric": metric, "value": [stamp, value]}
                )
    except (KeyError, TypeError, IndexError, AttributeError, ValueError):
        raise PrometheusBadResponse(
            "unexpected answer from Prometheus: not a matrix of numbers"
        ) from None
    return [
        (stamp, to_query_result(points, target_labels)) for stamp, points in sorted(by_time.items())
    ]


def densecolumns_of(
    series: list[Any], ns_label: str, name_label: str
) -> list[tuple[float, QueryResult]] | None:
    if not series:
        return []
    namespaces, names, numbers = [], [], []
    stamps: list[Any] | None = None
    first, second = itemgetter(0), itemgetter(1)
    for item in series:
        metric = item["metric"]
        if len(metric) != 2 or not metric.get(ns_label) or not metric.get(name_label):
            return None
        values = item["values"]
        times = list(map(first, values))
        if stamps is None:
            stamps = times
        elif times != stamps:
            return None
        namespaces.append(metric[ns_label])
        names.append(metric[name_label])
        numbers.append(list(map(float, map(second, values))))
    assert stamps is not None
    return [
        (float(stamp), QueryResult(values=SeriesValues(namespaces, names, list(column))))
        for stamp, column in zip(stamps, zip(*numbers, strict=True), strict=True)
    ]


def columns_of(
    series: list[Any], ns_label: str, name_label: str
) -> tuple[list[str], list[str], list[float]] | None:
    """Namespaces, names and numbers of a vector whose every series has exactly the two
    target labels, both set (one target per series, none ambiguous); None otherwise.

    One pass with bound appends: at 50,000 series each pass over a freshly decoded answer
    costs more than the work done in it."""
    namespaces: list[str] = []
    names: list[str] = []
    numbers: list[float] = []
    add_namespace, add_name, add_number = namespaces.append, names.append, numbers.append
    for item in series:
        metric = item["metric"]
        if len(metric) != 2:
            return None
        namespace, name = metric.get(ns_label), metric.get(name_label)
        if not namespace or not name:
            return None
        add_namespace(namespace)
        add_name(name)
        add_number(float(item["value"][1]))
    return namespaces, names, numbers


def without_repeats(
    series: list[Any], values: dict[Target, float], ignored: int, ns_label: str, name_label: str
) -> QueryResult:
    counts: dict[tuple[str, str], int] = {}
    for item in series:
        labels = item["metric"]
        key = (labels.get(ns_label), labels.get(name_label))
        if key[0] and key[1]:
            counts[key] = counts.get(key, 0) + 1
    repeated = frozenset(Target(*key) for key, count in counts.items() if count > 1)
    for target in repeated:
        del values[target]
    return QueryResult(values=values, ignored=ignored, ambiguous=repeated)
