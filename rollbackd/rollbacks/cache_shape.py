"""What the watch cache keeps of a Deployment: what guards, plans and owners read.

A Deployment as the API server returns it carries ``managedFields`` (about half of its
size) and often ``kubectl.kubernetes.io/last-applied-configuration`` (a second copy of its
spec). The cache reads neither, except the field managers' names for owner detection, and
every write plans from a fresh GET: so objects are shaped as they arrive, and 50,000
Deployments fit in one process.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def cache_shape(obj: Obj) -> Obj:
    """``obj`` without what the cache never reads (changed in place and returned).

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
    return obj
