"""Edge: ``DeploymentCache``, the managed Deployments in memory with list + watch.

An informer written here rather than ``kubernetes.informer.SharedInformer``, which builds a
model object per Deployment, hands its handlers only the new object, keeps no synced state
and lists without pages: one paged LIST at start and after a 410 Gone, then watches that
resume from the last event applied, so a steady state costs no LISTs.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client

from rollbackd.errors import KubeError, KubeGone
from rollbackd.model import Obj, Target
from rollbackd.retry import KUBE_WATCH
from rollbackd.rollbacks.cache_shape import cache_shape
from rollbackd.rollbacks.kubernetes import json_body, kube_error, watch_events
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import KubernetesSettings
from rollbackd.state.annotations import RECENT_ROLLBACKS

log = get_logger(__name__)


class DeploymentCache:
    """The managed Deployments, kept current by an informer per namespace (list + watch).

    - The resume point is the resourceVersion of the last event or BOOKMARK applied, kept
      across broken streams: a reconnect continues where the cache is and never replays an
      event already applied, so the cache never goes back in time.
    - A LIST comes in pages of ``page_size``; a relist after 410 Gone asks for a state at
      least as new as the cache's (``resourceVersionMatch=NotOlderThan``).
    - ``synced`` is true only while every namespace is listed and its watch is open. It
      turns false at a gap (a broken stream, a 410, a relist, a disconnect of any length)
      and true again once the server accepted the next watch, whose first lines carry what
      the gap missed (a watch it ends at once with 410 turns it false again): while it is
      false the incident core makes no automatic decision.
    - Reconnects wait with the one retry policy (``rollbackd.retry.KUBE_WATCH``), honouring
      the server's Retry-After.
    - A watch lasts 5 to 10 minutes (chosen at random each time, as client-go's reflector
      does), kept current in between by bookmarks.
    - Objects are kept in the cache's shape (``cache_shape``), and the ones that carry
      ``INDEXED`` annotations are indexed: the budget reads the few with recent rollbacks,
      not every cached object.
    """

    INDEXED = (RECENT_ROLLBACKS,)

    def __init__(
        self,
        api: client.ApiClient,
        settings: KubernetesSettings,
        *,
        watch_seconds: int | None = None,
        page_size: int = 500,
        on_change: Callable[[Obj | None, Obj | None], None] | None = None,
        on_sync: Callable[[bool], None] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._settings = settings
        self._watch_seconds = watch_seconds
        self._page_size = page_size
        self._on_change = on_change
        self._on_sync = on_sync
        self._rng = rng
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], Obj] = {}
        self._annotated: dict[str, set[tuple[str, str]]] = {name: set() for name in self.INDEXED}
        namespaces = settings.namespaces or [""]
        self._synced = {ns: threading.Event() for ns in namespaces}
        self._rv: dict[str, str | None] = dict.fromkeys(namespaces)  # last applied
        self._stale = set(namespaces)  # must be listed before a watch can resume
        self._failures = dict.fromkeys(namespaces, 0)  # in a row, for the backoff
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.lists = 0  # LIST requests issued, for tests and benchmarks
        self.listed = threading.Event()  # every namespace was listed at least once

    @property
    def synced(self) -> bool:
        return all(event.is_set() for event in self._synced.values())

    def start(self) -> None:
        for namespace in self._synced:
            thread = threading.Thread(
                target=self._run, args=(namespace,), name=f"watch-{namespace or 'all'}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def get(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def all(self) -> list[Obj]:
        with self._lock:
            return list(self._objects.values())

    def annotated(self, annotation: str) -> list[Obj]:
        """The cached Deployments that carry ``annotation`` (one of ``INDEXED``)."""
        with self._lock:
            return [self._objects[key] for key in self._annotated[annotation]]

    def _store(self, key: tuple[str, str], obj: Obj | None) -> Obj | None:
        """Put (or with None, drop) one shaped object and its index entries; the lock is
        held."""
        old = self._objects.pop(key, None)
        annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
        for name, keys in self._annotated.items():
            if name in annotations:
                keys.add(key)
            else:
                keys.discard(key)
        if obj is not None:
            self._objects[key] = obj
        return old

    def _watch_timeout(self) -> int:
        if self._watch_seconds is not None:
            return self._watch_seconds
        return int(300 * (1 + self._rng()))  # client-go's reflector: 5 to 10 minutes

    def manages(self, target: Target) -> bool:
        """Whether ``target`` is a managed Deployment."""
        return (target.namespace, target.deployment) in self._objects

    def _list_func(self, namespace: str) -> tuple[Callable[..., Any], tuple[str, ...]]:
        if namespace:
            return self._apps.list_namespaced_deployment, (namespace,)
        return self._apps.list_deployment_for_all_namespaces, ()

    def _list(self, namespace: str) -> None:
        """A whole LIST, page by page, swapped in at once; sets the resume point."""
        func, args = self._list_func(namespace)
        query: dict[str, Any] = {"label_selector": self._settings.selector}
        floor = self._rv[namespace]
        if floor is not None:  # never older than what the cache already showed
            query |= {"resource_version": floor, "resource_version_match": "NotOlderThan"}
        items: list[Obj] = []
        token = ""
        while True:
            self.lists += 1
            page = json_body(
                func(
                    *args,
                    **query,
                    limit=self._page_size,
                    _preload_content=False,
                    _request_timeout=(3, 30),
                    **({"_continue": token} if token else {}),
                )
            )
            items += map(cache_shape, page["items"])  # shaped page by page: the LIST's peak
            token = page["metadata"].get("continue") or ""
            if not token:
                break
            query = {"label_selector": self._settings.selector}  # the token holds the rest
        fresh = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in items}
        with self._lock:
            stale = {k: v for k, v in self._objects.items() if not namespace or k[0] == namespace}
            for key in stale:
                self._store(key, None)
            for key, obj in fresh.items():
                self._store(key, obj)
        for key, old in stale.items():
            self._notify(old, fresh.get(key))
        for key, new in fresh.items():
            if key not in stale:
                self._notify(None, new)
        self._rv[namespace] = str(page["metadata"]["resourceVersion"])
        self._stale.discard(namespace)
        log.info("deployment_cache_listed", namespace=namespace or None, deployments=len(fresh))

    def _watch(self, namespace: str) -> None:
        func, args = self._list_func(namespace)
        seconds = self._watch_timeout()
        events = watch_events(
            func,
            *args,
            on_open=lambda: self._opened(namespace),
            label_selector=self._settings.selector,
            resource_version=self._rv[namespace],
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
            _request_timeout=(3, seconds + 10),
        )
        for event in events:
            obj = event["object"] if event["type"] == "BOOKMARK" else cache_shape(event["object"])
            rv = str(obj.get("metadata", {}).get("resourceVersion") or self._rv[namespace])
            if event["type"] != "BOOKMARK":
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                with self._lock:
                    old = self._store(key, None if event["type"] == "DELETED" else obj)
                self._notify(old, None if event["type"] == "DELETED" else obj)
            self._rv[namespace] = rv  # applied: a reconnect resumes after it
            if self._stop.is_set():
                break

    def _notify(self, old: Obj | None, new: Obj | None) -> None:
        if self._on_change is not None:
            self._on_change(old, new)

    def _opened(self, namespace: str) -> None:
        """The watch is open again: synced, and the next failure backs off from the start."""
        self._failures[namespace] = 0
        self._set_synced(namespace, True)

    def _set_synced(self, namespace: str, synced: bool, error: KubeError | None = None) -> None:
        event = self._synced[namespace]
        if synced == event.is_set():
            return
        if synced:
            event.set()
            if all(e.is_set() for e in self._synced.values()):
                self.listed.set()
            log.info("deployment_cache_synced", namespace=namespace or None)
        else:
            event.clear()
            log.warning(
                "deployment_cache_unsynced",
                namespace=namespace or None,
                code=error.code if error else None,
                error=error.message if error else None,
            )
        if self._on_sync is not None:
            self._on_sync(self.synced)

    def _run(self, namespace: str) -> None:
        while not self._stop.is_set():
            try:
                if namespace in self._stale:
                    self._list(namespace)
                self._watch(namespace)  # ends at timeout_seconds: resumed at once
            except Exception as exc:  # classified and retried: the cache must never die
                error = kube_error(exc, what="watch deployments")
                self._set_synced(namespace, False, error)
                failures = self._failures[namespace]
                self._failures[namespace] += 1
                if isinstance(error, KubeGone):
                    # Never reuse a resourceVersion across 410: list again (the first time
                    # at once; a 410 that repeats waits like any other failure).
                    log.info("deployment_watch_expired", namespace=namespace or None)
                    self._stale.add(namespace)
                    if failures == 0:
                        continue
                log.warning("deployment_watch_failed", code=error.code, error=error.message)
                delay = KUBE_WATCH.delay(failures, self._rng, retry_after=error.retry_after)
                self._stop.wait(delay)
