"""The bounded queue of events waiting for one client, and the loop that sends them.

``push`` never blocks: it is called from the script thread through the event bus. A
client that falls too far behind (too many frames or bytes waiting) is not waited for;
the queue closes itself and reports the overflow, and the owner disconnects the client.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from nicos.protocols.daemon import event2code

log = logging.getLogger("nicos_daemon.eventqueue")

DEFAULT_BYTE_LIMIT = 64 * 1024 * 1024
DEFAULT_SEND_TIMEOUT = 60.0
# A burst of waiting frames goes out in one system call of up to this size. The
# frames are handed to sendmsg() as they are: joining them would copy every burst
# once more for every client.
_BATCH_BYTES = 256 * 1024
_BATCH_FRAMES = 512  # below IOV_MAX (1024 on Linux)


class EventQueue:
    """Encoded event frames for one client, filtered by the client's event mask."""

    def __init__(self, frame_limit: int, byte_limit: int = DEFAULT_BYTE_LIMIT,
                 on_overflow: Callable[[str], None] | None = None) -> None:
        if frame_limit < 1 or byte_limit < 1:
            raise ValueError("queue limits must be positive")
        self._frame_limit = frame_limit
        self._byte_limit = byte_limit
        self._on_overflow = on_overflow
        self._cond = threading.Condition(threading.Lock())
        self._frames: deque[tuple[str, bytes]] = deque()
        self._bytes = 0
        self._masked: frozenset[str] = frozenset()
        self._closed = False
        self._flush_deadline = 0.0  # after close: send what is queued until then

    # -- producer side (any thread) ---------------------------------------------

    def push(self, event: str, frame: bytes) -> None:
        """Queue one frame; on overflow drop everything and report it (never blocks)."""
        with self._cond:
            if self._closed or event in self._masked:
                return
            if len(self._frames) >= self._frame_limit or \
                    self._bytes + len(frame) > self._byte_limit:
                reason = (f"event queue overflow ({len(self._frames)} events, "
                          f"{self._bytes} bytes waiting)")
                self._close_locked(0.0)
            else:
                self._frames.append((event, frame))
                self._bytes += len(frame)
                self._cond.notify()
                return
        if self._on_overflow is not None:
            self._on_overflow(reason)

    def mask(self, names: Iterable[str]) -> None:
        """Stop sending these events, including ones already queued."""
        known = {name for name in names if name in event2code}  # others never occur
        with self._cond:
            self._masked = self._masked | known

    def unmask(self, names: Iterable[str]) -> None:
        with self._cond:
            self._masked = self._masked - set(names)

    @property
    def masked(self) -> frozenset[str]:
        return self._masked

    def __len__(self) -> int:
        return len(self._frames)

    def close(self, flush_timeout: float = 0.0) -> None:
        """Accept no more events; the sender sends the backlog for at most
        ``flush_timeout`` seconds, then stops. Only the first call counts."""
        with self._cond:
            if not self._closed:
                self._close_locked(flush_timeout)

    def _close_locked(self, flush_timeout: float) -> None:
        self._closed = True
        self._flush_deadline = time.monotonic() + flush_timeout
        if flush_timeout <= 0:
            self._frames.clear()
            self._bytes = 0
        self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- consumer side (the client's event thread) ---------------------------------

    def _next_batch(self) -> tuple[list[bytes], float] | None:
        """Wait for frames; return a batch of them with the send timeout to use, or
        None when the queue is closed and nothing (more) is to be sent."""
        with self._cond:
            while True:
                while not self._frames and not self._closed:
                    self._cond.wait()
                remaining = None
                if self._closed:
                    remaining = self._flush_deadline - time.monotonic()
                    if not self._frames or remaining <= 0:
                        return None
                parts: list[bytes] = []
                size = 0
                while self._frames and size < _BATCH_BYTES and len(parts) < _BATCH_FRAMES:
                    event, frame = self._frames.popleft()
                    self._bytes -= len(frame)
                    if event not in self._masked:
                        parts.append(frame)
                        size += len(frame)
                if parts:
                    return parts, (remaining if remaining is not None else -1.0)

    def run_sender(self, sock: socket.socket, send_timeout: float = DEFAULT_SEND_TIMEOUT) -> None:
        """Send queued frames to ``sock`` until the queue is closed.

        OSError (a timed-out or failed send) propagates; the caller drops the client.
        """
        current_timeout: float | None = None
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            parts, flush_remaining = batch
            timeout = send_timeout if flush_remaining < 0 else min(send_timeout, flush_remaining)
            if timeout != current_timeout:
                sock.settimeout(timeout)
                current_timeout = timeout
            send_frames(sock, parts)


def send_frames(sock: socket.socket, parts: list[bytes]) -> None:
    """Send all ``parts`` in order with as few system calls as possible."""
    if isinstance(sock, ssl.SSLSocket):  # no sendmsg() on TLS sockets
        sock.sendall(b"".join(parts))
        return
    pending: list[bytes | memoryview] = list(parts)
    while pending:
        sent = sock.sendmsg(pending)
        done = 0
        while done < len(pending) and sent >= len(pending[done]):
            sent -= len(pending[done])
            done += 1
        del pending[:done]
        if pending and sent:
            pending[0] = memoryview(pending[0])[sent:]
