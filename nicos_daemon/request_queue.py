"""The requests waiting to run: their order, kept on disk before clients are
told, and announced as events.

Not locked by itself: the controller calls it under its lock, which also
guards the running request, so that "is a script running or waiting" has one
answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from nicos_daemon.common import CommandError
from nicos_daemon.persistence import StateStore, StoredRequest
from nicos_daemon.scripts import ScriptRequest

MAX_QUEUED = 1000


class RequestQueue:
    """Queued requests in the order they run; ``emit(event, data)`` tells clients."""

    def __init__(self, store: StateStore, emit: Callable[[str, Any], None]) -> None:
        self._store = store
        self._emit = emit
        self._requests: list[ScriptRequest] = []
        # ids taken to run, which a client's list for rearrange may still hold
        self._started: deque[str] = deque(maxlen=MAX_QUEUED)

    def __bool__(self) -> bool:
        return bool(self._requests)

    def restore(self, stored: Iterable[StoredRequest]) -> None:
        """Queue again what a previous daemon left queued (already on disk)."""
        for request in stored:
            self._requests.append(ScriptRequest(request.name, request.script, request.user,
                                                request.user_level, reqid=request.reqid,
                                                submitted=request.submitted))

    def serialize(self) -> list[dict]:
        return [request.serialize() for request in self._requests]

    def add(self, request: ScriptRequest) -> None:
        """Append a request: on disk, then announced."""
        if len(self._requests) >= MAX_QUEUED:
            raise CommandError(f"the queue is full ({MAX_QUEUED} requests)")
        # on disk before anyone is told it is queued
        self._store.add_queued(request.reqid, request.name, request.text, request.user,
                               request.user_level, request.submitted)
        self._requests.append(request)
        self._emit("request", request.serialize())

    def take_next(self) -> ScriptRequest:
        """Remove the first request to run it."""
        request = self._requests.pop(0)
        self._started.append(request.reqid)
        self._store.mark_started(request.reqid)
        return request

    def block(self, reqid: str = "*") -> list[str] | None:
        """Remove one request, or all with ``*``; returns the ids removed,
        None when ``reqid`` is not queued."""
        if reqid == "*":
            removed = [request.reqid for request in self._requests]
            self._requests.clear()
        else:
            index = self._index(reqid)
            if index is None:
                return None
            removed = [self._requests.pop(index).reqid]
        self._store.mark_blocked(removed)
        self._emit("blocked", removed)
        return removed

    def clear(self) -> None:
        """Forget the requests without marking them (daemon shutdown: they
        stay queued on disk for the next daemon)."""
        self._requests.clear()

    def rearrange(self, ids: list[str]) -> None:
        """Put the requests in the given order."""
        queued = {request.reqid: request for request in self._requests}
        # ids that started meanwhile may still be in the client's list
        wanted = [i for i in ids if i in queued or i not in self._started]
        if sorted(wanted) != sorted(queued):
            raise CommandError("Inconsistency between clients script IDs and queued IDs")
        self._requests = [queued[i] for i in wanted]
        self._store.set_order(wanted)
        self._emit("rearranged", wanted)

    def update(self, reqid: str, text: str, user: str) -> None:
        """Replace the text of a queued request."""
        index = self._index(reqid)
        if index is None:
            raise CommandError("script doesn't exist")
        request = self._requests[index]
        request.text = text
        request.user = user
        self._store.update_script(request.reqid, request.text, request.user)
        self._emit("updated", request.serialize())

    def _index(self, reqid: str) -> int | None:
        for index, request in enumerate(self._requests):
            if request.reqid == reqid:
                return index
        return None
