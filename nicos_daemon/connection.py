"""One logged-in client: its control socket, its event socket and its event queue.

The control connection's thread runs ``serve_commands`` (read frame, dispatch, reply)
until the client quits or breaks; the thread that accepted the event connection runs
``serve_events`` (drain the queue into the event socket). Either side ending, an event
queue overflow or a failed event send closes the whole client.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time

from nicos.protocols.daemon.framing import (
    BadStartByte,
    BufferedCommandReader,
    ConnectionClosed,
    FrameError,
    FrameTooLarge,
)

from .common import User
from .eventqueue import DEFAULT_BYTE_LIMIT, DEFAULT_SEND_TIMEOUT, EventQueue
from .handler import CommandHandler, error_reply

log = logging.getLogger("nicos_daemon.connection")

# After a refusal that closes the connection, data the client may still be sending is
# read and discarded for this long, so that closing does not reset the connection
# before the client has read the reason.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1024 * 1024
# A logged-in peer that has vanished (power loss, cable pulled: no FIN, no RST) is
# detected after KEEPALIVE_IDLE + KEEPALIVE_PROBES * KEEPALIVE_INTERVAL seconds of
# silence, or when data we sent stays unacknowledged for UNACKED_TIMEOUT seconds.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 6
UNACKED_TIMEOUT = 120.0


def enable_keepalive(sock: socket.socket) -> None:
    """Make the kernel probe an idle connection and drop it when the peer is gone.

    Logged-in connections have no read timeout (clients may idle for hours), so a
    client whose machine vanished without FIN or RST would otherwise keep its login
    slot and its event queue forever. A live peer's kernel answers the probes, so
    idle clients are not affected.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # Not every platform has the tuning knobs; the system defaults (hours on
        # Linux) are still better than nothing.
        for option, value in ((getattr(socket, "TCP_KEEPIDLE", None), KEEPALIVE_IDLE),
                              (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
                              (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
                              (getattr(socket, "TCP_USER_TIMEOUT", None),
                               int(UNACKED_TIMEOUT * 1000))):
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError as err:  # e.g. the peer is already gone: the reads will notice
        log.debug("cannot enable TCP keepalive: %s", err)


def set_send_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound blocking sends while receives stay unbounded (the socket has no timeout)."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def send_last_reply(sock: socket.socket, frame: bytes | None, linger: bool = True) -> None:
    """Send a final reply (if any) and end our side of the stream; the socket stays open.

    With ``linger``, wait briefly for the client to close too, so that a refusal is
    not destroyed by a reset before the client has read it.
    """
    try:
        sock.settimeout(_LINGER_SECONDS)
        if frame is not None:
            sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)
        if not linger:
            return
        # Closing while unread client data is pending would reset the connection,
        # and a reset can destroy the reply before the client reads it.
        deadline = time.monotonic() + _LINGER_SECONDS
        drained = 0
        while drained < _LINGER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass


def close_after_reply(sock: socket.socket, frame: bytes | None = None) -> None:
    """Send a last reply (if any), then close the socket."""
    try:
        send_last_reply(sock, frame)
    finally:
        sock.close()


class ClientConnection:
    """Sockets and queue of one logged-in client."""

    def __init__(self, control: socket.socket, peer: str, user: User, *,
                 event_queue_limit: int, event_byte_limit: int = DEFAULT_BYTE_LIMIT,
                 max_command_bytes: int, send_timeout: float = DEFAULT_SEND_TIMEOUT) -> None:
        self.control = control
        enable_keepalive(control)  # here, so it is on before the login reply goes out
        self.peer = peer
        self.user = user
        self.queue = EventQueue(event_queue_limit, event_byte_limit, self.on_overflow)
        self.max_command_bytes = max_command_bytes
        self.send_timeout = send_timeout
        self.who = f"{user.name}@{peer}"
        self.handler: CommandHandler | None = None
        self._lock = threading.Lock()  # guards the fields below and socket shutdown/close
        self._event_sock: socket.socket | None = None
        self._closing = False
        self._control_closed = False
        self.end_reason = "closed by the daemon"

    # -- life cycle -------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def has_event_socket(self) -> bool:
        return self._event_sock is not None

    def push(self, event: str, frame: bytes) -> None:
        """Event bus subscriber interface; never blocks."""
        self.queue.push(event, frame)

    def on_overflow(self, reason: str) -> None:
        log.warning("%s: %s; disconnecting the client", self.who, reason)
        self.end_reason = reason
        self.close()

    def close(self, flush_timeout: float = 0.0) -> None:
        """End the client: wake both socket threads; with ``flush_timeout``, queued
        events are still sent for that long. Safe from any thread, only the first call
        counts."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self.queue.close(flush_timeout)
            self._shutdown(self.control, self._control_closed)
            if flush_timeout <= 0 or self._event_sock is None:
                self._shutdown(self._event_sock, False)

    @staticmethod
    def _shutdown(sock: socket.socket | None, already_closed: bool) -> None:
        # shutdown() instead of close(): it wakes a thread blocked on the socket without
        # freeing a descriptor that thread still uses.
        if sock is None or already_closed:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- control connection -------------------------------------------------------------

    def serve_commands(self) -> None:
        """Read and execute commands until the client leaves; closes the control socket."""
        assert self.handler is not None
        self.control.settimeout(None)  # clients may be idle for hours
        # a client that does not read its replies is dropped like one that does
        # not read its events
        set_send_timeout(self.control, self.send_timeout)
        # ssl retries a send that SO_SNDTIMEO interrupted, forever: TLS replies are
        # sent with a socket timeout instead.
        tls = isinstance(self.control, ssl.SSLSocket)
        last_frame: bytes | None = None
        linger = True
        reader = BufferedCommandReader(self.control, self.max_command_bytes)
        try:
            while not self._closing:
                try:
                    code, payload = reader.read()
                except FrameTooLarge as err:
                    self._ending(f"oversized command: {err}", logging.WARNING)
                    last_frame = error_reply(str(err)).frame
                    break
                except BadStartByte as err:
                    self._ending(f"garbage on the control connection: {err}",
                                 logging.WARNING)
                    break
                except ConnectionClosed:
                    self._ending("connection closed by the client")
                    break
                reply = self.handler.handle(code, payload)
                if reply.close:
                    self._ending("quit" if reply.ok else f"protocol error: {reply.value}")
                    last_frame = reply.frame
                    linger = not reply.ok  # after quit the client sends nothing more
                    break
                if tls:
                    self.control.settimeout(self.send_timeout)
                    self.control.sendall(reply.frame)
                    self.control.settimeout(None)
                else:
                    self.control.sendall(reply.frame)
        except (OSError, FrameError) as err:
            self._ending(f"control connection lost: {err}")
        finally:
            if last_frame is not None and not self._closing:
                send_last_reply(self.control, last_frame, linger)
            self.close()
            with self._lock:
                self._control_closed = True
                self.control.close()

    def _ending(self, reason: str, level: int = logging.DEBUG) -> None:
        if self._closing:
            return  # the daemon ended the client and has said why
        self.end_reason = reason
        log.log(level, "%s: %s", self.who, reason)

    # -- event connection ---------------------------------------------------------------

    def attach_events(self, sock: socket.socket) -> bool:
        """Take ``sock`` as the event connection; False if the client is already gone."""
        with self._lock:
            if self._closing or self._event_sock is not None:
                return False
            enable_keepalive(sock)  # before the first event is sent
            self._event_sock = sock
        return True

    def serve_events(self) -> None:
        """Send queued events until the client ends; closes the event socket."""
        sock = self._event_sock
        assert sock is not None
        try:
            self.queue.run_sender(sock, self.send_timeout)
        except OSError as err:
            if not self._closing:
                self.end_reason = f"sending events failed: {err or type(err).__name__}"
                log.warning("%s: %s; disconnecting the client", self.who, self.end_reason)
        finally:
            self.close()
            with self._lock:
                self._shutdown(sock, False)
                sock.close()
