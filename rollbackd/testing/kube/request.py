"""One request against one resource type: its parts, authorization, and the shared reads."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rollbackd.model import Obj
from rollbackd.testing.kube.api import (
    ApiError,
    Resource,
    matches_fields,
    matches_selector,
    not_found,
    status_details,
)
from rollbackd.testing.kube.shapes import event_to_v1

if TYPE_CHECKING:
    from rollbackd.testing.kube.server import Handler


class Request:
    """The parts of a request to one resource type, and what every verb needs."""

    def __init__(
        self,
        handler: Handler,
        resource: Resource,
        *,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
    ) -> None:
        self.h, self.r, self.ns, self.name, self.sub, self.query = (
            handler,
            resource,
            namespace or "",
            name,
            sub,
            query,
        )
        self.api = handler.api
        self.cluster = handler.api.cluster
        # Both event APIs store core/v1 Events.
        self.store = resource.plural

    def _authorize(self, verb: str) -> None:
        if (verb, self.r.plural) not in self.api.faults.forbidden:
            return
        target = (
            f'{self.r.qualified} "{self.name}" is forbidden'
            if self.name
            else (f"{self.r.qualified} is forbidden")
        )
        where = f' in the namespace "{self.ns}"' if self.ns else " at the cluster scope"
        group = f'"{self.r.group}"' if self.r.group else '""'
        raise ApiError(
            403,
            "Forbidden",
            f'{target}: User "system:serviceaccount:rollbackd:rollbackd" cannot {verb} resource '
            f'"{self.r.plural}" in API group {group}{where}',
            status_details(self.r, self.name or ""),
        )

    # --- shapes -------------------------------------------------------------------------

    def _out(self, obj: Obj) -> Obj:
        if self.r.group == "events.k8s.io":
            return event_to_v1(obj)
        return obj

    def _existing(self) -> Obj:
        assert self.name is not None
        obj = self.cluster.get(self.store, self.ns, self.name)
        if obj is None:
            raise not_found(self.r, self.name)
        return obj

    def _check_namespace(self) -> None:
        if self.r.namespaced and self.cluster.get("namespaces", "", self.ns) is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{self.ns}" not found',
                {"name": self.ns, "kind": "namespaces"},
            )

    def _selected(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.r.namespaced and self.ns and obj["metadata"].get("namespace") != self.ns:
            return False
        return matches_selector(
            obj["metadata"].get("labels", {}), self.query.get("labelSelector", "")
        ) and matches_fields(obj, self.query.get("fieldSelector", ""))

    def _line(self, payload: Obj) -> None:
        data = json.dumps(payload).encode() + b"\n"
        self.h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.h.wfile.flush()
