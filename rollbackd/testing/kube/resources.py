"""The verbs of the fake API server: get, list, create, update, patch, apply, delete."""

from __future__ import annotations

import copy

from rollbackd.model import Obj
from rollbackd.testing.kube.api import (
    APPLY,
    ApiError,
    Items,
    conflict,
    fields_of,
    invalid,
    matches_fields,
    matches_selector,
    status_details,
    verb_of,
)
from rollbackd.testing.kube.cluster import Cluster, now_rfc3339
from rollbackd.testing.kube.patch import (
    PatchError,
    PatchTestFailed,
    json_patch,
    merge_patch,
    strategic_merge,
)
from rollbackd.testing.kube.revisions import KINDS, TEMPLATE_GENERATION, sync_revisions
from rollbackd.testing.kube.shapes import (
    WORKLOAD_DEFAULTS,
    apply_scale,
    event_to_core,
    event_to_v1,
    scale_of,
    unchanged,
    validate_workload,
)
from rollbackd.testing.kube.watch import Watching


class Resources(Watching):
    """One request against one resource type."""

    def serve(self, method: str) -> None:
        verb = verb_of(method, self.query, named=bool(self.name))
        self._authorize(verb)
        if verb == "watch":
            self.watch()
            return
        with self.cluster.lock:
            getattr(self, verb)()

    # --- verbs -----------------------------------------------------------------------------

    def get(self) -> None:
        obj = self._existing()
        if self.sub == "scale":
            self.h._send(200, scale_of(obj))
            return
        self.h._send(200, self._out(obj))

    def list(self) -> None:
        token = self.query.get("continue", "")
        if token:
            rv, items = self.api.continued(token)
        else:
            self._check_list_rv()
            rv, items = self.cluster.rv, self._matching()
        limit = int(self.query.get("limit") or 0)
        metadata: Obj = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            # The rest is served later from this same snapshot, as etcd serves a paged list
            # at the first page's revision.
            metadata["continue"] = self.api.remember_list(rv, items[limit:])
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        self.h._send(
            200,
            {
                "kind": f"{self.r.kind}List",
                "apiVersion": self.r.api_version,
                "metadata": metadata,
                "items": items,
            },
        )

    def _matching(self) -> Items:
        namespace = self.ns if self.r.namespaced and self.ns else None
        items = [
            self._out(obj)
            for obj in self.cluster.list_objects(self.store, namespace)
            if matches_selector(
                obj["metadata"].get("labels", {}), self.query.get("labelSelector", "")
            )
            and matches_fields(obj, self.query.get("fieldSelector", ""))
        ]
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return items

    def _check_list_rv(self) -> None:
        """``resourceVersion`` with ``resourceVersionMatch=NotOlderThan``: at least that new."""
        wanted = self.query.get("resourceVersion", "")
        if not wanted.isdigit() or int(wanted) <= self.cluster.rv:
            return
        raise ApiError(
            504,
            "Timeout",
            f"Too large resource version: {wanted}, current: {self.cluster.rv}",
            {
                "causes": [
                    {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
                ]
            },
            retry_after=1,
        )

    def create(self, body: Obj | None = None) -> None:
        body = self.h._body() if body is None else body
        if self.r.group == "events.k8s.io":
            if not body.get("eventTime"):
                raise invalid(
                    self.r, body.get("metadata", {}).get("name", ""), "eventTime", "Required value"
                )
            body = event_to_core(body)
        elif self.r.plural == "events":
            body = event_to_core(event_to_v1(body))
        name = body.get("metadata", {}).get("name") or ""
        if not name and body.get("metadata", {}).get("generateName"):
            name = (
                body["metadata"]["generateName"]
                + Cluster.new_object("x", "v1", "x", "", {})["metadata"]["uid"][:5]
            )
        self._check_namespace()
        if self.cluster.get(self.store, self.ns, name) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{self.r.qualified} "{name}" already exists',
                status_details(self.r, name),
            )
        kind = "Event" if self.r.plural == "events" else self.r.kind
        api_version = "v1" if self.r.plural == "events" else self.r.api_version
        obj = Cluster.new_object(
            kind, api_version, name, self.ns, body, created=self.cluster.stamp()
        )
        obj["metadata"].pop("resourceVersion", None)
        if self.r.plural in WORKLOAD_DEFAULTS:
            obj["metadata"]["generation"] = 1
            WORKLOAD_DEFAULTS[self.r.plural](obj)
            validate_workload(self.r, obj)
            obj["status"] = {}
            if self.r.plural == "daemonsets":
                obj["metadata"].setdefault("annotations", {})[TEMPLATE_GENERATION] = "1"
        if self.query.get("dryRun") == "All":
            self.h._send(201, self._out(obj))
            return
        stored = self.cluster.put(self.store, self.ns, obj)
        self.h._send(201, self._out(stored))
        self._controller(stored)

    def update(self) -> None:
        current = self._existing()
        body = self.h._body()
        if self.sub == "scale":
            body = apply_scale(current, body)
        elif self.r.group == "events.k8s.io":
            body = event_to_core(body)
        sent_rv = body.get("metadata", {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise conflict(self.r, current["metadata"]["name"])
        self._replace(current, body)

    def patch(self) -> None:
        content_type = self.h.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == APPLY:
            self._apply()
            return
        current = self._existing()
        patch = self.h._body()
        base = scale_of(current) if self.sub == "scale" else self._out(current)
        try:
            if content_type == "application/json-patch+json":
                patched = json_patch(base, patch)
            elif content_type == "application/merge-patch+json":
                patched = merge_patch(base, patch)
            elif content_type == "application/strategic-merge-patch+json":
                patched = strategic_merge(base, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", "415: Unsupported Media Type")
        except PatchTestFailed:
            raise ApiError(
                422, "Invalid", "the server rejected our request due to an error in our request"
            ) from None
        except PatchError as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from None
        if self.sub == "scale":
            patched = apply_scale(current, patched)
        elif self.r.group == "events.k8s.io":
            patched = event_to_core(patched)
        if patched.get("metadata", {}).get("resourceVersion") != current["metadata"][
            "resourceVersion"
        ] and patched.get("metadata", {}).get("resourceVersion"):
            raise conflict(self.r, current["metadata"]["name"])
        self._replace(current, patched)

    def _apply(self) -> None:
        """Server-side apply, as a GitOps controller writes: the applied configuration's
        fields win (lists whole), an entry for its ``fieldManager`` goes into
        ``managedFields``, and a missing object is created. Ownership conflicts between
        managers are not modelled: every apply behaves as ``force=true``."""
        manager = self.query.get("fieldManager", "")
        if not manager:
            raise ApiError(400, "BadRequest", "fieldManager is required for apply requests")
        applied = self.h._body()
        entry = {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": self.r.api_version,
            "time": now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_of(
                {k: v for k, v in applied.items() if k not in ("apiVersion", "kind")}
            ),
        }
        assert self.name is not None
        current = self.cluster.get(self.store, self.ns, self.name)
        if current is None:
            applied.setdefault("metadata", {})["managedFields"] = [entry]
            self.create(applied)
            return
        patched = merge_patch(current, applied)
        others = [
            m
            for m in current["metadata"].get("managedFields") or []
            if (m.get("manager"), m.get("operation")) != (manager, "Apply")
        ]
        patched["metadata"]["managedFields"] = [*others, entry]
        self._replace(current, patched)

    def _replace(self, current: Obj, body: Obj) -> None:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        for immutable in ("name", "namespace", "uid", "creationTimestamp"):
            if immutable in current["metadata"]:
                meta[immutable] = current["metadata"][immutable]
        obj["kind"], obj["apiVersion"] = current["kind"], current["apiVersion"]
        if self.r.plural in WORKLOAD_DEFAULTS:
            WORKLOAD_DEFAULTS[self.r.plural](obj)
            validate_workload(self.r, obj)
            obj["status"] = current.get("status", {})  # status changes only through /status
            # As the real strategies count (captured): a Deployment's annotations are copied
            # to its ReplicaSets, so changing them bumps its generation like a spec change
            # does; a StatefulSet's or DaemonSet's do not; labels never do.
            before = current["metadata"].get("annotations") or {}
            bumped = obj["spec"] != current["spec"] or (
                self.r.plural == "deployments" and (meta.get("annotations") or {}) != before
            )
            meta["generation"] = current["metadata"].get("generation", 1) + bumped
            if (
                self.r.plural == "daemonsets"
                and obj["spec"]["template"] != current["spec"]["template"]
            ):
                annotations = meta.setdefault("annotations", {})
                annotations[TEMPLATE_GENERATION] = str(
                    int(before.get(TEMPLATE_GENERATION, "0")) + 1
                )
        if unchanged(current, obj):  # a no-op write keeps its resourceVersion, as etcd does
            self.h._send(200, scale_of(current) if self.sub == "scale" else self._out(current))
            return
        if self.query.get("dryRun") == "All":
            self.h._send(200, scale_of(obj) if self.sub == "scale" else self._out(obj))
            return
        stored = self.cluster.put(self.store, self.ns, obj)
        self.h._send(200, scale_of(stored) if self.sub == "scale" else self._out(stored))
        self._controller(stored)

    def _controller(self, stored: Obj) -> None:
        """After a client wrote a workload, its controller catches up."""
        if self.r.plural == "deployments":
            self.api.write_deployment(self.ns, stored)
        elif self.r.plural in KINDS:
            sync_revisions(self.cluster, self.r.plural, self.ns, stored["metadata"]["name"])

    def delete(self) -> None:
        current = self._existing()
        self.cluster.delete(self.store, self.ns, current["metadata"]["name"])
        self.h._send(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    **status_details(self.r, current["metadata"]["name"]),
                    "uid": current["metadata"]["uid"],
                },
            },
        )
