"""What the watch cache keeps of a Deployment: what guards, plans and owners read.

A Deployment as the API server returns it carries ``managedFields`` (about half of its
size) and often ``kubectl.kubernetes.io/last-applied-configuration`` (a second copy of its
spec). The cache reads neither, except the field managers' names for owner detection, and
every write plans from a fresh GET: so objects are shaped as they arrive, and 50,000
Deployments fit in one process.

What is kept is rebuilt as a compact copy: its short strings (keys, and values such as
``"True"``, ``"RollingUpdate"``, ``"25%"``) are interned, so 50,000 Deployments share one
copy of each, and the parsed page the object came from is freed whole instead of leaving
the kept parts scattered through it.
"""

from __future__ import annotations

import sys
from typing import Any

from rollbackd.model import Obj

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SHARED_UP_TO = 64  # characters: longer strings are seldom repeated between Deployments


def cache_shape(obj: Obj) -> Obj:
    """A compact copy of ``obj`` without what the cache never reads (``obj`` is changed).

    ``managedFields`` keeps one entry per field manager, with its name only: the owner
    of a workload is told from them (Argo CD, Flux, Helm).
    """
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    fields = meta.get("managedFields")
    if fields:
        managers = dict.fromkeys(str(m.get("manager", "")) for m in fields if isinstance(m, dict))
        meta["managedFields"] = [{"manager": name} for name in managers]
    annotations = meta.get("annotations")
    if annotations:
        annotations.pop(LAST_APPLIED, None)
    compact: Obj = _compact(obj)
    return compact


def _compact(value: Any) -> Any:
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= SHARED_UP_TO else value
    if isinstance(value, dict):
        return {sys.intern(k): _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value
