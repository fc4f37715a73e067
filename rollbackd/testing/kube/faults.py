"""Fault knobs of the fake API server: injected errors, latency, forbidden verbs, hooks,
and the record of every request."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rollbackd.testing.kube.api import ApiError, rbac_of
from rollbackd.testing.kube.cluster import Cluster


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int = 500  # 0: drop the connection without answering
    times: int = 1
    retry_after: int | None = None  # a 429 says when to come back, as API priority does

    def error(self) -> ApiError:
        if self.status == 429:
            return ApiError(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                retry_after=self.retry_after if self.retry_after is not None else 1,
            )
        return ApiError(
            self.status,
            "InternalError" if self.status >= 500 else "BadRequest",
            f"Internal error occurred: injected fault {self.status}",
        )


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    user_agent: str
    content_type: str = ""
    status: int = 0
    at: float = field(default_factory=time.monotonic)

    @property
    def rbac(self) -> tuple[str, str, str] | None:
        """(API group, resource, verb) of this request, for RBAC checks and counts."""
        return rbac_of(self.method, self.path, self.query)


@dataclass
class Hook:
    """Runs ``action(cluster)`` just before a matching request is handled, ``times`` times."""

    method: str
    path: re.Pattern[str]
    action: Callable[[Cluster], None]
    times: int = 1


@dataclass
class Faults:
    latency: float = 0.0
    # Seconds an answer takes to get back, after the request took effect, for clients whose
    # User-Agent contains the key: one replica on a congested node among several.
    slow: dict[str, float] = field(default_factory=dict)
    bookmark_every: float = 0.0  # a watch's BOOKMARK while quiet, as the real server sends
    expire_continues: bool = False  # LIST continue tokens are "too old" (410)
    injected: list[Fault] = field(default_factory=list)
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (verb, plural)
    expire_watches: bool = False
    cut_watches: int = 0  # open watch streams to cut mid-stream, without their last chunk
    hooks: list[Hook] = field(default_factory=list)

    def run_hooks(self, method: str, path: str, cluster: Cluster) -> None:
        for hook in self.hooks:
            if hook.method == method and hook.path.search(path) and hook.times:
                hook.times -= 1
                with cluster.lock:
                    hook.action(cluster)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self.injected:
            if fault.method in (method, "*") and fault.path.search(path) and fault.times:
                fault.times -= 1
                return fault
        return None
