"""Watches: events from a resourceVersion on, bookmarks, 410 Gone, deadlines."""

from __future__ import annotations

import socket
import time
from typing import Any

from rollbackd.model import Obj
from rollbackd.testing.kube.request import Request
from rollbackd.testing.kube.shapes import gone


class Watching(Request):
    """The watch verb."""

    def watch(self) -> None:
        h = self.h
        timeout = float(self.query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + min(timeout, 1800)
        bookmarks = self.query.get("allowWatchBookmarks") in ("1", "true")
        rv_text = self.query.get("resourceVersion", "")
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-cache, private")
        h.end_headers()
        h._record.status = 200
        every = self.api.faults.bookmark_every
        quiet_since = time.monotonic()
        try:
            with self.cluster.lock:
                last = self._start_rv(rv_text)
            while last is not None and not self.api.stopping:
                with self.cluster.lock:
                    if self.api.faults.expire_watches:
                        self._line(gone(last))
                        break
                    if self.api.faults.cut_watches > 0:
                        self.api.faults.cut_watches -= 1
                        h.connection.shutdown(socket.SHUT_RDWR)  # mid-stream, no last chunk
                        h.close_connection = True
                        return
                    pending = list(self.cluster.events_after(last))
                    if not pending:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            if bookmarks:
                                self._line(self._bookmark())
                            break
                        if bookmarks and every and time.monotonic() - quiet_since >= every:
                            self._line(self._bookmark())
                            quiet_since = time.monotonic()
                        self.cluster.changed.wait(min(remaining, every or 0.5, 0.5))
                        continue
                    quiet_since = time.monotonic()
                for event in pending:
                    last = event.rv
                    line = self._event_line(event)
                    if line is not None:
                        self._line(line)
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        h.close_connection = True

    def _start_rv(self, rv_text: str) -> int | None:
        if rv_text in ("", "0"):
            for obj in self.cluster.list_objects(self.store, self.ns or None):
                if self._selected(obj):
                    self._line({"type": "ADDED", "object": self._out(obj)})
            return self.cluster.rv
        rv = int(rv_text) if rv_text.isdigit() else -1
        if rv < self.cluster.oldest_rv() or rv > self.cluster.rv:
            self._line(gone(rv))
            return None
        return rv

    def _event_line(self, event: Any) -> Obj | None:
        if event.plural != self.store:
            return None
        was, now = self._selected(event.previous), self._selected(event.obj)
        if event.kind == "DELETED":
            kind = "DELETED" if was else None
        elif was and now:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif was:
            kind = "DELETED"  # no longer selected: gone from this watcher's point of view
        else:
            kind = None
        return None if kind is None else {"type": kind, "object": self._out(event.obj)}

    def _bookmark(self) -> Obj:
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": self.r.kind,
                "apiVersion": self.r.api_version,
                "metadata": {"resourceVersion": str(self.cluster.rv)},
            },
        }
