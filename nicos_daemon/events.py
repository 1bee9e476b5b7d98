"""Event fan-out: serialise each event once, hand the frame to every subscriber.

Subscribers (one per connected client) keep their own bounded queue and decide
themselves what to do when it overflows; ``push`` must never block, so a slow
client cannot slow the script thread or the other clients.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from nicos.protocols.daemon import MAX_BLOB_SIZE, MAX_BLOB_TOTAL, MAX_EVENT_PAYLOAD, event2code
from nicos.protocols.daemon.codec import CodecError, encode
from nicos.protocols.daemon.framing import event_frame

log = logging.getLogger("nicos_daemon.events")


class Subscriber(Protocol):
    def push(self, event: str, frame: bytes) -> None:
        """Queue an encoded event frame; must not block."""


class EventBus:
    """Thread-safe fan-out of events to subscribers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def emit(self, event: str, data: Any, blobs: Sequence[bytes] = ()) -> None:
        """Encode the event once and queue it for every subscriber."""
        subscribers = self._subscribers  # an immutable snapshot: no lock while pushing
        if not subscribers:
            return
        try:
            payload = encode(data)
        except (CodecError, ValueError) as err:
            log.error("event %s dropped: cannot encode its data: %s", event, err)
            return
        # Clients drop the connection on a frame beyond these limits (so do we, as a
        # client): such an event would cost every client its connection.
        sizes = [memoryview(blob).nbytes for blob in blobs] if blobs else []
        if len(payload) > MAX_EVENT_PAYLOAD or (sizes and (
                sum(sizes) > MAX_BLOB_TOTAL or max(sizes) > MAX_BLOB_SIZE)):
            log.error("event %s dropped: %d bytes of data and %d bytes of blobs exceed "
                      "what clients accept", event, len(payload), sum(sizes))
            return
        try:
            frame = event_frame(event2code[event], payload, blobs)
        except (KeyError, ValueError) as err:  # unknown event, too many blobs
            log.error("event %s dropped: %s", event, err)
            return
        for subscriber in subscribers:
            subscriber.push(event, frame)
