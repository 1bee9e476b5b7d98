"""The per-client event queue: bounds, masks, and sending in batches over a real
socket pair (partial sends included)."""

from __future__ import annotations

import platform
import socket
import threading

from nicos_daemon.eventqueue import EventQueue, send_frames
from nicos_daemon.memory import limit_heap_retention

WAIT = 10.0


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(WAIT)
    chunks = []
    while size:
        chunk = sock.recv(min(size, 65536))
        assert chunk, "peer closed early"
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def test_send_frames_delivers_everything_in_order_across_partial_sends() -> None:
    left, right = socket.socketpair()
    with left, right:
        # Tiny buffers force sendmsg() to stop in the middle of frames.
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        right.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        frames = [bytes([n % 251]) * (n * 37 % 3000 + 1) for n in range(600)]
        expected = b"".join(frames)
        received: list[bytes] = []
        reader = threading.Thread(
            target=lambda: received.append(_receive_exactly(right, len(expected))))
        reader.start()
        left.settimeout(WAIT)
        send_frames(left, frames)
        reader.join(WAIT)
        assert received == [expected]


def test_sender_batches_and_respects_mask() -> None:
    left, right = socket.socketpair()
    with left, right:
        queue = EventQueue(frame_limit=5000)
        queue.mask(["status"])
        frames = [f"<{n}>".encode() for n in range(2000)]
        for n, frame in enumerate(frames):
            queue.push("status" if n % 2 else "message", frame)
        queue.close(flush_timeout=WAIT)
        queue.run_sender(left, send_timeout=WAIT)
        left.shutdown(socket.SHUT_WR)
        wanted = b"".join(frames[::2])
        assert _receive_exactly(right, len(wanted)) == wanted
        assert right.recv(1) == b""


def test_overflow_closes_the_queue_and_reports_once() -> None:
    reasons: list[str] = []
    queue = EventQueue(frame_limit=3, on_overflow=reasons.append)
    for n in range(10):
        queue.push("message", b"x%d" % n)
    assert queue.closed
    assert len(queue) == 0
    assert len(reasons) == 1 and "overflow" in reasons[0]


def test_heap_retention_limit_applies_on_glibc() -> None:
    applied = limit_heap_retention()
    if platform.libc_ver()[0] == "glibc":
        assert applied
    else:
        assert not applied


def test_bus_drops_an_event_clients_would_refuse(monkeypatch, caplog) -> None:
    import nicos_daemon.events as events

    monkeypatch.setattr(events, "MAX_EVENT_PAYLOAD", 100)
    monkeypatch.setattr(events, "MAX_BLOB_SIZE", 10)
    received: list[str] = []

    class Subscriber:
        def push(self, event: str, frame: bytes) -> None:
            received.append(event)

    bus = events.EventBus()
    bus.subscribe(Subscriber())
    bus.emit("message", ["x" * 200])
    bus.emit("livedata", {"name": "image"}, [bytes(11)])
    assert received == []
    assert caplog.text.count("exceed what clients accept") == 2
    bus.emit("message", ["fine"])
    bus.emit("livedata", {"name": "image"}, [bytes(10)])
    assert received == ["message", "livedata"]
