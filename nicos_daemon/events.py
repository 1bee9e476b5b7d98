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

from nicos.protocols.daemon.codec import CodecError
from nicos.protocols.daemon.framing import encode_event

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
            frame = encode_event(event, data, blobs)
        except (CodecError, ValueError) as err:
            log.error("event %s dropped: cannot encode its data: %s", event, err)
            return
        for subscriber in subscribers:
            subscriber.push(event, frame)
