"""Replay: what rollbackd would have done over a span of history.

The daemon's own rule runner and incident core are fed Prometheus's ``query_range`` columns
(``recorded.py``) with a clock set to each column's time, against the cluster's change
history (``past.py``): a replay cannot disagree with the daemon on the same data.
``run.py`` drives it, ``report.py`` writes the table, the JSON and the HTML report.
"""
