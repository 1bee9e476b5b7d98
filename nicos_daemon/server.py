"""The daemon's TCP server: listener, connection threads, pairing and login limits.

The accept thread only accepts: each new socket gets its own thread at once, so a
silent or slow peer delays nobody else (§11.2). That thread reads the 16-byte client
id within ``login_timeout`` and then decides (§1.2):

* the (peer IP, id) key belongs to a *logged-in* client still waiting for its event
  connection: this socket becomes that client's event connection and the thread sends
  its events from now on;
* the key belongs to a connection still in its handshake: refused (closed), so an event
  stream is never attached before login (§11.3);
* the key belongs to a client that logged in but ended before its event connection
  came: closed without a reply;
* otherwise it is a new control connection: trusted-host check, banner, login, and then
  the thread serves the client's commands.

Connections before login are limited per host and in total; logins by ``maxlogins``.

With TLS configured, every connection (control and event alike) first completes a
TLS handshake in its own thread, within the same ``login_timeout``; a peer whose first
byte cannot start a TLS handshake gets a plain-text refusal instead.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import nicos
from nicos.protocols.daemon import CLIENT_ID_LEN
from nicos.protocols.daemon.framing import (
    BadStartByte,
    FrameError,
    FrameTooLarge,
    encode_reply,
    read_command,
    recv_exact,
)
from nicos.protocols.daemon.tls import looks_like_tls

from .access import ControlArbiter
from .auth import Authenticator
from .auth.levels import level_name
from .auth.rsakeys import ServerKey
from .auth.throttle import LoginThrottle
from .common import User
from .config import DaemonConfig
from .connection import ClientConnection, close_after_reply
from .eventqueue import DEFAULT_BYTE_LIMIT, DEFAULT_SEND_TIMEOUT
from .events import EventBus
from .handler import CommandHandler, Controller, error_reply
from .login import MAX_HANDSHAKE_PAYLOAD, Gatekeeper, LoginRefused, make_banner
from .tls import server_context

log = logging.getLogger("nicos_daemon.server")

LISTEN_BACKLOG = 64
MAX_PENDING_PER_HOST = 8
MAX_PENDING = 64
# Logins made only for an emergency stop, allowed beyond maxlogins.
EMERGENCY_LOGINS = 4
# Events still queued at shutdown are sent for at most this long.
SHUTDOWN_FLUSH_SECONDS = 2.0
_ACCEPT_POLL_SECONDS = 1.0  # only a fallback: shutdown() wakes accept() directly
# An event connection normally follows its login reply within milliseconds; the
# upstream client gives up connecting after 30 s.
_ENDED_KEY_SECONDS = 60.0
_MAX_ENDED_KEYS = 1024  # bounds the memory a login/logout flood can pin

Key = tuple[str, bytes]

# Told (in plain text, since it cannot speak TLS) to a client without TLS.
TLS_REQUIRED = ("this daemon accepts only TLS connections; connect with TLS "
                "(nicos-client --tls, 'Use TLS' in nicos-gui)")


class _DeadlineReader:
    """Socket stand-in for the framing readers: every receive must finish before one
    common deadline, so a peer dripping single bytes cannot stretch the handshake."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def remaining(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("login handshake timed out")
        return remaining

    def recv_into(self, buffer: Any) -> int:
        self.sock.settimeout(self.remaining())
        return self.sock.recv_into(buffer)

    def sendall(self, data: bytes) -> None:
        self.sock.settimeout(self.remaining())
        self.sock.sendall(data)


class Server:
    """Accepts clients, logs them in and connects them to the controller and events."""

    def __init__(self, config: DaemonConfig, controller: Controller, bus: EventBus,
                 server_key: ServerKey, authenticator: Authenticator, *,
                 throttle: LoginThrottle | None = None,
                 arbiter: ControlArbiter | None = None,
                 version: str = nicos.__version__,
                 max_pending_per_host: int = MAX_PENDING_PER_HOST,
                 max_pending: int = MAX_PENDING,
                 event_byte_limit: int = DEFAULT_BYTE_LIMIT,
                 event_send_timeout: float = DEFAULT_SEND_TIMEOUT,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.controller = controller
        self.bus = bus
        self.version = version
        self.arbiter = arbiter if arbiter is not None else ControlArbiter()
        if throttle is None:
            throttle = LoginThrottle(config.throttle_failures, config.throttle_window)
        self.gatekeeper = Gatekeeper(authenticator, server_key, throttle)
        self.banner = make_banner(server_key, version)
        self.max_pending_per_host = max_pending_per_host
        self.max_pending = max_pending
        self.event_byte_limit = event_byte_limit
        self.event_send_timeout = event_send_timeout
        # Given by the caller (serve() loads it before anything else starts), or built
        # here from the configuration; raises nicos_daemon.tls.TLSSetupError.
        if tls_context is None and config.tls:
            tls_context = server_context(config)
        self.tls_context = tls_context

        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # One lock for all tables; waiters on the condition see every change. Re-entrant,
        # so that wait_until predicates may use the public accessors.
        self._changed = threading.Condition(threading.RLock())
        self._pending_socks: dict[socket.socket, str] = {}  # before login -> peer IP
        self._pending_by_host: Counter[str] = Counter()
        self._over_limit_logged: set[str] = set()
        self._handshaking: set[Key] = set()
        self._awaiting_events: dict[Key, ClientConnection] = {}
        # Keys of clients that ended while their event connection was still to come
        # -> when to forget them.
        self._ended: dict[Key, float] = {}
        self._clients: set[ClientConnection] = set()
        self._threads: set[threading.Thread] = set()

    # -- public API ---------------------------------------------------------------------

    def start(self) -> None:
        """Bind, listen and start accepting; OSError if the address is unusable."""
        if self._listener is not None:
            raise RuntimeError("server already started")
        # The upstream client only speaks IPv4; IPv6 is there for clients that can.
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self.config.reuseaddress:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(self.config.address)
            listener.listen(LISTEN_BACKLOG)
            listener.settimeout(_ACCEPT_POLL_SECONDS)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, name="accept",
                                               daemon=True)
        self._accept_thread.start()
        log.info("listening on %s:%d", self.host, self.port)

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; the port is the real one when 0 was configured."""
        if self._listener is None:
            raise RuntimeError("server not started")
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def logged_in(self) -> int:
        """Number of logged-in clients."""
        return len(self._clients)

    @property
    def pending(self) -> int:
        """Number of connections that have not logged in (or paired) yet."""
        return len(self._pending_socks)

    def clients(self) -> list[ClientConnection]:
        with self._changed:
            return list(self._clients)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` is true; it is re-checked whenever a connection
        changes state. Returns the predicate's last value."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def shutdown(self, flush_timeout: float = SHUTDOWN_FLUSH_SECONDS,
                 timeout: float = 5.0) -> None:
        """Stop accepting, send queued events for up to ``flush_timeout``, close every
        connection and join the threads (waiting at most about ``timeout``)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        deadline = time.monotonic() + max(timeout, flush_timeout)
        listener = self._listener
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            except OSError:
                pass
            if self._accept_thread is not None:
                self._accept_thread.join(max(0.0, deadline - time.monotonic()))
            listener.close()
        with self._changed:
            for sock in self._pending_socks:
                _shutdown_quietly(sock)
            clients = list(self._clients)
        for client in clients:
            client.close(flush_timeout)
        self._join_threads(deadline)
        with self._changed:
            stragglers = [t.name for t in self._threads]
        if stragglers:
            log.warning("shutdown: %d connection threads still busy: %s", len(stragglers),
                        ", ".join(sorted(stragglers)[:10]))
        log.info("server stopped")

    # -- threads ------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        def run() -> None:
            try:
                target(*args)
            except Exception:
                log.exception("unexpected error in thread %s", name)
            finally:
                with self._changed:
                    self._threads.discard(thread)
                    self._changed.notify_all()

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._changed:
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            with self._changed:
                self._threads.discard(thread)
            raise

    def _join_threads(self, deadline: float) -> None:
        while True:
            with self._changed:
                threads = [t for t in self._threads if t is not threading.current_thread()]
            if not threads:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            threads[0].join(remaining)

    # -- accepting ----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as err:
                if self._stopping.is_set():
                    break
                # E.g. out of file descriptors: pause instead of spinning.
                log.error("accept failed: %s", err)
                self._stopping.wait(0.1)
                continue
            ip, port = address[:2]
            if not self._admit(sock, ip):
                sock.close()
                continue
            try:
                self._spawn(self._serve_connection, sock, ip, name=f"conn {ip}:{port}")
            except RuntimeError as err:  # no more threads
                log.error("cannot start a thread for %s:%d: %s", ip, port, err)
                self._leave_pending(sock)
                sock.close()

    def _admit(self, sock: socket.socket, ip: str) -> bool:
        """Count a new connection as pending, unless the host or all hosts are at the
        limit of connections that have not logged in yet."""
        with self._changed:
            per_host = self._pending_by_host[ip]
            if per_host >= self.max_pending_per_host or \
                    len(self._pending_socks) >= self.max_pending:
                if ip not in self._over_limit_logged:
                    self._over_limit_logged.add(ip)
                    log.warning("refusing connections from %s: %d from there and %d in "
                                "all have not logged in yet", ip, per_host,
                                len(self._pending_socks))
                return False
            self._over_limit_logged.discard(ip)
            self._pending_socks[sock] = ip
            self._pending_by_host[ip] += 1
            self._changed.notify_all()
        return True

    def _leave_pending(self, sock: socket.socket) -> None:
        with self._changed:
            ip = self._pending_socks.pop(sock, None)
            if ip is None:
                return
            self._pending_by_host[ip] -= 1
            if self._pending_by_host[ip] <= 0:
                del self._pending_by_host[ip]
            self._changed.notify_all()

    def _close_pending(self, sock: socket.socket) -> None:
        self._leave_pending(sock)
        sock.close()

    # -- one accepted connection --------------------------------------------------------

    def _serve_connection(self, sock: socket.socket, ip: str) -> None:
        try:
            deadline = time.monotonic() + self.config.login_timeout
            if self.tls_context is not None:
                # Here in the connection's own thread and within the login deadline:
                # a peer that stalls its TLS handshake delays nobody else.
                tls_sock = self._start_tls(sock, ip, deadline)
                if tls_sock is None:
                    return
                sock = tls_sock
            reader = _DeadlineReader(sock, deadline)
            try:
                client_id = recv_exact(reader, CLIENT_ID_LEN)  # type: ignore[arg-type]
            except (OSError, FrameError) as err:
                log.info("connection from %s closed before sending its id: %s", ip,
                         err or type(err).__name__)
                self._close_pending(sock)
                return
            key = (ip, client_id)
            with self._changed:
                client = self._awaiting_events.pop(key, None)
                in_handshake = client is None and key in self._handshaking
                orphan = client is None and not in_handshake and self._take_ended(key)
                if client is None and not in_handshake and not orphan:
                    self._handshaking.add(key)
            if client is not None:
                self._serve_event_connection(sock, client)
            elif in_handshake:
                log.warning("connection from %s refused: its id belongs to a connection "
                            "that has not logged in", ip)
                self._close_pending(sock)
            elif orphan:
                # The event connection of a client whose control connection ended
                # first. Taken as a new control connection it would get a banner that
                # the client's event reader cannot parse, and hold a pre-login slot
                # until the login timeout.
                log.info("event connection from %s closed: its client has already "
                         "ended", ip)
                self._close_pending(sock)
            else:
                try:
                    self._serve_control_connection(sock, reader, ip, key)
                finally:
                    with self._changed:
                        self._handshaking.discard(key)
        finally:
            self._leave_pending(sock)

    def _start_tls(self, sock: socket.socket, ip: str, deadline: float) -> ssl.SSLSocket | None:
        """The server side of the TLS handshake on a new connection, before ``deadline``.

        Returns the TLS socket, which takes the place of ``sock`` (now detached) among
        the pending connections; or None after dropping the peer (socket closed, reason
        logged).
        """
        assert self.tls_context is not None
        timer = _DeadlineReader(sock, deadline)
        try:
            sock.settimeout(timer.remaining())
            # Peeked, not read: a TLS client's first byte belongs to its handshake.
            first = sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            log.info("connection from %s dropped: it sent nothing within login_timeout", ip)
            self._close_pending(sock)
            return None
        except OSError as err:
            log.info("connection from %s closed before its TLS handshake: %s", ip,
                     err or type(err).__name__)
            self._close_pending(sock)
            return None
        if not first:
            log.info("connection from %s closed before its TLS handshake", ip)
            self._close_pending(sock)
            return None
        if not looks_like_tls(first):
            # Most likely an upstream client; it shows this reason to its user.
            log.warning("connection from %s refused: no TLS (this daemon requires TLS)", ip)
            self._leave_pending(sock)
            close_after_reply(sock, error_reply(TLS_REQUIRED).frame)
            return None
        with self._changed:
            # Under the lock, so that shutdown() finds whichever of the two sockets
            # is current and can wake this thread.
            try:
                tls_sock = self.tls_context.wrap_socket(sock, server_side=True,
                                                        do_handshake_on_connect=False)
            except OSError as err:
                log.info("connection from %s lost before its TLS handshake: %s", ip,
                         err or type(err).__name__)
                self._close_pending(sock)
                return None
            pending_ip = self._pending_socks.pop(sock, None)
            if pending_ip is not None:
                self._pending_socks[tls_sock] = pending_ip
        try:
            tls_sock.settimeout(timer.remaining())
            tls_sock.do_handshake()
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as err:
            log.info("connection from %s closed during its TLS handshake: %s", ip,
                     err or type(err).__name__)
        except ssl.SSLError as err:
            # E.g. our certificate rejected by the client, or no client certificate.
            log.warning("TLS handshake with %s failed: %s", ip, err.reason or err)
        except TimeoutError:
            log.info("connection from %s dropped: TLS handshake not completed within "
                     "login_timeout", ip)
        except OSError as err:
            log.info("TLS handshake with %s abandoned: %s", ip, err or type(err).__name__)
        else:
            return tls_sock
        self._close_pending(tls_sock)
        return None

    def _serve_event_connection(self, sock: socket.socket, client: ClientConnection) -> None:
        self._leave_pending(sock)
        if not client.attach_events(sock):
            sock.close()
            return
        log.debug("%s: event connection attached", client.who)
        with self._changed:
            self._changed.notify_all()
        client.serve_events()

    def _serve_control_connection(self, sock: socket.socket, reader: _DeadlineReader,
                                  ip: str, key: Key) -> None:
        user = self._handshake(sock, reader, ip)
        if user is None:
            return
        client = ClientConnection(sock, ip, user,
                                  event_queue_limit=self.config.event_queue_limit,
                                  event_byte_limit=self.event_byte_limit,
                                  max_command_bytes=self.config.max_command_bytes,
                                  send_timeout=self.event_send_timeout)
        client.handler = CommandHandler(self.controller, self.arbiter, user, client.queue,
                                        peer=ip, version=self.version)
        refusal = self._register(client, key)
        if refusal is not None:
            log.warning("login of %s from %s refused: %s", user.name, ip, refusal)
            self._leave_pending(sock)
            close_after_reply(sock, error_reply(refusal).frame)
            return
        log.info("login: user %s (%s) from %s", user.name, level_name(user.level), ip)
        # Subscribed before the reply: the client misses no event after its login.
        self.bus.subscribe(client)
        try:
            # Before the reply, not after: the client opens its event connection as soon
            # as it has the reply, and that connection must not find this one still
            # counted against the host's pre-login limit.
            self._leave_pending(sock)
            try:
                # Not bound by the handshake deadline: a slow authenticator (PAM) may
                # have used it up, and the login has succeeded.
                sock.settimeout(self.config.login_timeout)
                sock.sendall(encode_reply(True, {"user_level": user.level}))
            except OSError as err:
                client.end_reason = f"login reply failed: {err or type(err).__name__}"
                return
            client.serve_commands()
        finally:
            self.bus.unsubscribe(client)
            client.close()
            self._leave_pending(sock)
            sock.close()  # serve_commands closed it already unless it never ran
            with self._changed:
                self._clients.discard(client)
                if self._awaiting_events.get(key) is client:
                    del self._awaiting_events[key]
                    self._remember_ended(key)
                self._changed.notify_all()
            log.info("logout: user %s from %s (%s)", user.name, ip, client.end_reason)

    def _remember_ended(self, key: Key) -> None:
        """Note the key of a client that ended before its event connection arrived.
        Caller holds ``self._changed``."""
        self._prune_ended()
        self._ended.pop(key, None)  # re-inserted at the end: the order stays by expiry
        if len(self._ended) >= _MAX_ENDED_KEYS:
            del self._ended[next(iter(self._ended))]
        self._ended[key] = time.monotonic() + _ENDED_KEY_SECONDS

    def _take_ended(self, key: Key) -> bool:
        """Whether ``key`` belongs to such a client; forgets it (one event connection
        per client). Caller holds ``self._changed``."""
        self._prune_ended()
        return self._ended.pop(key, None) is not None

    def _prune_ended(self) -> None:
        # Entries are in order of expiry, as they all live equally long.
        now = time.monotonic()
        while self._ended:
            oldest = next(iter(self._ended))
            if self._ended[oldest] > now:
                break
            del self._ended[oldest]

    def _register(self, client: ClientConnection, key: Key) -> str | None:
        """Count the login and expect its event connection; a refusal text if full."""
        with self._changed:
            if self._stopping.is_set():
                return "the daemon is shutting down"
            emergency_only = sum(c.user.emergency_only for c in self._clients)
            if client.user.emergency_only:
                # reserved: an emergency stop must get through to a full daemon
                if emergency_only >= EMERGENCY_LOGINS:
                    return f"too many emergency logins at once ({EMERGENCY_LOGINS})"
            elif len(self._clients) - emergency_only >= self.config.maxlogins:
                return f"too many clients logged in ({self.config.maxlogins})"
            self._clients.add(client)
            self._handshaking.discard(key)
            self._awaiting_events[key] = client
            self._changed.notify_all()
        return None

    def _handshake(self, sock: socket.socket, reader: _DeadlineReader,
                   ip: str) -> User | None:
        """Banner and login; returns the User, or None after refusing (socket closed)."""
        if not self.config.is_trusted(ip):
            log.warning("connection from %s refused: not a trusted host", ip)
            self._leave_pending(sock)
            close_after_reply(sock, error_reply("permission denied").frame)
            return None
        refusal: bytes | None = None
        try:
            reader.sendall(encode_reply(True, self.banner))
            code, payload = read_command(reader,  # type: ignore[arg-type]
                                         min(MAX_HANDSHAKE_PAYLOAD,
                                             self.config.max_command_bytes))
            return self.gatekeeper.login(ip, code, payload)
        except LoginRefused as err:
            refusal = error_reply(str(err)).frame
        except FrameTooLarge as err:
            log.warning("login from %s refused: %s", ip, err)
            refusal = error_reply(str(err)).frame
        except BadStartByte as err:
            log.warning("login from %s: garbage instead of a command (%s)", ip, err)
        except (OSError, FrameError) as err:
            log.info("login from %s abandoned: %s", ip, err or type(err).__name__)
        self._leave_pending(sock)
        close_after_reply(sock, refusal)
        return None


def _shutdown_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass

