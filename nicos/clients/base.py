"""Client library for the daemon protocol (version 24, JSON serializer).

The CLI, the GUI and user code build on NicosClient.  Applications learn
about events and connection changes by overriding NicosClient.signal().
"""

import base64
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import rsa

from nicos.protocols.daemon import (
    ACTIVE_COMMANDS,
    BLOB_EVENTS,
    CLIENT_ID_LEN,
    COMPATIBLE_PROTO_VERSIONS,
    MAX_EVENT_PAYLOAD,
    MAX_REPLY_PAYLOAD,
    PURPOSE_EMERGENCY,
    PURPOSE_KEY,
    code2event,
    command2code,
)
from nicos.protocols.daemon.codec import CodecError, decode
from nicos.protocols.daemon.framing import FrameError, encode_command, read_event, read_reply

from .tls import CertificateFileError, client_context

log = logging.getLogger(__name__)


class ClientError(Exception):
    """Base of all errors raised by NicosClient."""


class ConnectionFailed(ClientError):
    """No usable connection: connecting failed, or the connection broke."""


class TLSFailed(ConnectionFailed):
    """No TLS connection: the daemon's certificate failed verification, the
    handshake failed (e.g. the daemon does not speak TLS), or a local
    certificate file is unusable."""


class LoginFailed(ClientError):
    """The daemon refused the login, or logging in would be unsafe."""


class DaemonError(ClientError):
    """The daemon answered a command with an error; the message is its reason."""


class UnsupportedReply(ClientError):
    """The daemon answered, but with data this client refuses to decode."""


_NO_DEFAULT: Any = object()

_QUIT_FRAME = encode_command('quit', [])
_EMERGENCY_FRAME = encode_command('emergency', [])

# How emergency() reached the daemon (its return value).
VIA_CONTROL = 'control connection'
VIA_EXTRA = 'second connection'


def _describe(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return 'timed out waiting for the daemon'
    return str(err) or type(err).__name__


def _tls_context(tls: bool | ssl.SSLContext,
                 cafile: str | os.PathLike[str] | None) -> ssl.SSLContext | None:
    """The context connect() uses: None for plain TCP."""
    if isinstance(tls, ssl.SSLContext):
        if cafile is not None:
            raise ClientError('give the CA file either as cafile or in the SSLContext, '
                              'not both')
        return tls
    if not tls:
        if cafile is not None:
            raise ClientError('cafile is only used with tls=True')
        return None
    try:
        return client_context(cafile)
    except CertificateFileError as err:
        raise TLSFailed(str(err)) from None


def _open_socket(address: tuple[str, int], timeout: float,
                 tls_context: ssl.SSLContext | None, server_hostname: str) -> socket.socket:
    """A TCP connection to *address*; with *tls_context*, a TLS connection whose
    certificate must be valid for *server_hostname*."""
    sock = socket.create_connection(address, timeout=timeout)
    if tls_context is None:
        return sock
    try:
        # The handshake is bounded by the socket's (connect) timeout.
        return tls_context.wrap_socket(sock, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


def _tls_failure(host: str, port: int, err: ssl.SSLError,
                 handshake_done: bool = False) -> TLSFailed:
    if isinstance(err, ssl.SSLCertVerificationError):
        return TLSFailed(
            f'TLS certificate verification failed for {host}:{port}: '
            f'{err.verify_message or err.reason}; if the daemon has a self-signed or lab '
            f'certificate, give the CA certificate that signed it (cafile, '
            f'nicos-client --tls-ca FILE)')
    reason = err.reason or str(err)
    if handshake_done:
        # With TLS 1.3 the daemon judges a client certificate only after the
        # client has finished its part of the handshake.
        return TLSFailed(f'the daemon at {host}:{port} ended the TLS connection: {reason} '
                         f'(does it require a client certificate that it accepts?)')
    return TLSFailed(f'TLS handshake with {host}:{port} failed: {reason} (is TLS enabled '
                     f'on the daemon?)')


@dataclass(frozen=True)
class _LoginParams:
    """What connect() was given, kept for emergency()'s second connection.

    In memory only, never written anywhere; forgotten by disconnect().  The
    password is left out of repr() so that it cannot end up in a log.
    """

    host: str
    port: int
    login: str
    password: str = field(repr=False)
    timeout: float
    tls_context: ssl.SSLContext | None = None


class _Connection:
    """Sockets and state of one connection; every connect() makes a new one,
    so the threads of an old connection never touch a newer one."""

    def __init__(self, control: socket.socket, timeout: float) -> None:
        self.control = control
        self.events: socket.socket | None = None
        self.timeout = timeout
        self.event_thread: threading.Thread | None = None
        # One request/reply exchange at a time; also guards closing the control
        # socket, so no thread can use its file descriptor after it is closed.
        self.request_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.closing = False
        self.broken_reason: str | None = None

    def shutdown(self) -> None:
        # shutdown() rather than close(): it wakes threads blocked on the
        # sockets without freeing descriptors they may still be using.
        for sock in (self.control, self.events):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self.request_lock:
            self.control.close()
        if self.events is not None:
            self.events.close()


def _join_event_thread(conn: _Connection) -> None:
    thread = conn.event_thread
    # Not joinable from the event thread itself (a signal handler), nor from
    # the 'connected' handler: the thread starts right after it.
    if thread is not None and thread.ident is not None \
            and thread is not threading.current_thread():
        thread.join()


class NicosClient:
    """A connection to a daemon: commands on one socket, events on another.

    Thread-safe: any number of threads may call ask() concurrently.
    """

    def __init__(self) -> None:
        self.connected = False
        self.user_level: int | None = None
        self.banner: dict[str, Any] = {}
        self.host = ''
        self.port = 0
        self.login = ''
        self.viewonly = False
        self._conn: _Connection | None = None
        self._login_params: _LoginParams | None = None

    # -- hook ----------------------------------------------------------------

    def signal(self, name: str, *args: Any) -> None:
        """Called for every event and connection change; override it.

        Events: ``signal(event, data)``, blob events ``signal(event, data, blobs)``.
        Connection: 'connected' (from connect()), 'error' (reason, from
        tell()); from the event thread, once per connection: 'broken'
        (reason; only for an unexpected end) followed by 'disconnected'.
        """

    def _emit(self, name: str, *args: Any) -> None:
        # A failing application handler must not break the connection logic.
        try:
            self.signal(name, *args)
        except Exception:
            log.exception('signal handler failed for %r', name)

    # -- connecting ----------------------------------------------------------

    def connect(self, host: str, port: int, login: str, password: str, *,
                viewonly: bool = False, eventmask: Iterable[str] = (),
                timeout: float = 30.0, tls: bool | ssl.SSLContext = False,
                cafile: str | os.PathLike[str] | None = None) -> None:
        """Connect, log in and start receiving events.

        Raises ConnectionFailed, or LoginFailed when the daemon refuses the
        login or does not offer an encrypted password transport.

        *tls* True: both connections use TLS, and the daemon's certificate
        must be valid for *host* and signed by a CA in *cafile* (default: the
        system's trusted CAs); TLSFailed (a ConnectionFailed) otherwise.  An
        SSLContext (see nicos.clients.tls.client_context, e.g. for a client
        certificate) is used as given.  Only daemons of this project with TLS
        configured speak TLS.

        The login name and password stay in memory (never written anywhere)
        until disconnect(), so that emergency() can log in on a second
        connection while this one is busy.
        """
        if self.connected:
            raise ClientError('already connected; disconnect first')
        previous = self._login_params
        if previous is None or (previous.host, previous.port, previous.login) != \
                (host, port, login):
            # until this connect() succeeds, emergency() must not fall back on the
            # login for another daemon (a reconnect to the same one keeps it)
            self._login_params = None
        self._forget_previous_connection()
        if isinstance(eventmask, str):
            eventmask = [eventmask]
        tls_context = _tls_context(tls, cafile)
        self.host, self.port, self.login, self.viewonly = host, port, login, viewonly
        self.banner = {}
        self.user_level = None
        conn, self.banner, self.user_level = self._open_connection(
            host, port, login, password, eventmask=list(eventmask), timeout=timeout,
            tls_context=tls_context)
        self._login_params = _LoginParams(host, port, login, password, timeout, tls_context)
        conn.event_thread = threading.Thread(target=self._receive_events, args=(conn,),
                                             name=f'nicos-events-{host}:{port}', daemon=True)
        self._conn = conn
        self.connected = True
        self._emit('connected')
        # Started only now so that 'connected' precedes every event.
        conn.event_thread.start()

    def _open_connection(self, host: str, port: int, login: str, password: str, *,
                         eventmask: Iterable[str] = (), timeout: float = 30.0,
                         events: bool = True, tls_context: ssl.SSLContext | None = None,
                         purpose: str | None = None,
                         ) -> tuple[_Connection, dict[str, Any], int]:
        """Open a control connection and log in; with *events* also attach the
        event connection.  Returns (connection, banner, user level).  With
        *tls_context*, both are TLS connections (TLSFailed if that fails).

        The one place where connections are opened: connect() uses it, and so
        does emergency() for its short-lived second connection (events=False),
        so that both always set up their sockets the same way.  Changes no
        attribute of self; raises ConnectionFailed or LoginFailed, with every
        socket it opened closed again.
        """
        # Random, unlike upstream's time-based id: the id is all that ties the
        # event connection to the logged-in control connection.
        client_id = os.urandom(CLIENT_ID_LEN)
        try:
            control = _open_socket((host, port), timeout, tls_context, host)
        except ssl.SSLError as err:
            raise _tls_failure(host, port, err) from err
        except OSError as err:
            raise ConnectionFailed(f'cannot connect to {host}:{port}: {_describe(err)}') from err
        conn = _Connection(control, timeout)
        try:
            banner, level = self._log_in(conn, client_id, login, password, list(eventmask),
                                         purpose)
            if events:
                # The daemon pairs the two connections by peer address and id, so
                # use exactly the address the control connection reached; its
                # certificate is still checked against the name the user gave.
                conn.events = _open_socket(control.getpeername()[:2], timeout,
                                           tls_context, host)
                conn.events.sendall(client_id)
                conn.events.settimeout(None)  # events may be rare; silence is no error
        except ssl.SSLError as err:
            # e.g. the daemon refusing our client certificate, which TLS 1.3
            # reports only after the handshake, at the first read
            conn.shutdown()
            conn.close()
            raise _tls_failure(host, port, err, handshake_done=True) from err
        except (OSError, FrameError, CodecError) as err:
            conn.shutdown()
            conn.close()
            raise ConnectionFailed(f'connection to {host}:{port} failed: {_describe(err)}') \
                from err
        except BaseException:
            conn.shutdown()
            conn.close()
            raise
        return conn, banner, level

    def _forget_previous_connection(self) -> None:
        previous, self._conn = self._conn, None
        if previous is not None:
            _join_event_thread(previous)

    def _log_in(self, conn: _Connection, client_id: bytes, login: str, password: str,
                eventmask: list[str], purpose: str | None = None
                ) -> tuple[dict[str, Any], int]:
        """Banner, authenticate and event mask; returns (banner, user level)."""
        conn.control.sendall(client_id)
        banner = self._read_banner(conn)
        credentials = {'login': login, 'passwd': self._encrypt_password(banner, password),
                       'display': ''}
        if purpose is not None:
            credentials[PURPOSE_KEY] = purpose
        reply = self._handshake_request(conn, 'authenticate', credentials)
        level = reply.get('user_level') if isinstance(reply, dict) else None
        if not isinstance(level, int) or isinstance(level, bool):
            raise ConnectionFailed(f'the daemon sent a malformed login reply: {reply!r}')
        if eventmask:
            self._handshake_request(conn, 'eventmask', eventmask)
        return banner, level

    def _read_banner(self, conn: _Connection) -> dict[str, Any]:
        ok, payload = read_reply(conn.control, MAX_REPLY_PAYLOAD)
        banner = decode(payload) if payload else None
        if not ok:
            raise LoginFailed(f'the daemon refused the connection: {banner}')
        if not isinstance(banner, dict):
            raise ConnectionFailed('the daemon sent no valid banner')
        version = banner.get('protocol_version', 0)
        if not isinstance(version, int) or version not in COMPATIBLE_PROTO_VERSIONS:
            supported = ' and '.join(map(str, sorted(COMPATIBLE_PROTO_VERSIONS)))
            raise ConnectionFailed(f'the daemon speaks protocol version {version!r}; '
                                   f'this client supports {supported}')
        return banner

    @staticmethod
    def _encrypt_password(banner: dict[str, Any], password: str) -> str:
        hashing = str(banner.get('pw_hashing', 'sha1'))
        if not hashing.startswith('rsa'):
            # The legacy alternatives (plain text or an unsalted hash, which
            # works as the password itself) would expose the password.
            raise LoginFailed(f'the daemon does not offer RSA password encryption '
                              f'(pw_hashing={hashing!r}); refusing to send the password')
        try:
            key = rsa.PublicKey.load_pkcs1(base64.b64decode(banner['rsakey']))
        except Exception as err:  # any parse failure of untrusted key data
            raise ConnectionFailed(f'the daemon sent an unusable RSA key: {_describe(err)}') \
                from err
        try:
            encrypted = rsa.encrypt(password.encode('utf-8'), key)
        except OverflowError:
            raise LoginFailed("the password is too long for the daemon's RSA key") from None
        return 'RSA:' + base64.b64encode(encrypted).decode('ascii')

    def _handshake_request(self, conn: _Connection, command: str, argument: Any) -> Any:
        conn.control.sendall(encode_command(command, [argument]))
        ok, payload = read_reply(conn.control, MAX_REPLY_PAYLOAD)
        value = decode(payload) if payload else None
        if not ok:
            raise LoginFailed(str(value))
        return value

    # -- disconnecting ---------------------------------------------------------

    def disconnect(self) -> None:
        """Say goodbye and close; returns once the event thread has finished
        (unless called from the event thread itself)."""
        self._login_params = None  # no emergency logins after an explicit logout
        conn = self._conn
        if conn is None:
            return
        if self._begin_closing(conn, broken_reason=None):
            # Like upstream, do not wait for the reply to quit.  Skip quit when
            # another thread is mid-request: closing alone also ends the session.
            if conn.request_lock.acquire(blocking=False):
                try:
                    conn.control.sendall(_QUIT_FRAME)
                except OSError:
                    pass
                finally:
                    conn.request_lock.release()
            conn.shutdown()
        _join_event_thread(conn)

    def _begin_closing(self, conn: _Connection, broken_reason: str | None) -> bool:
        """Mark *conn* as closing; only the first caller gets True.

        A reason marks an unexpected end; the event thread reports it as
        'broken' just before 'disconnected', so the two can never swap places.
        """
        with conn.state_lock:
            if conn.closing:
                return False
            conn.closing = True
            conn.broken_reason = broken_reason
        if self._conn is conn:
            self.connected = False
        if broken_reason is not None:
            conn.shutdown()  # wakes the event thread
        return True

    # -- events ----------------------------------------------------------------

    def _receive_events(self, conn: _Connection) -> None:
        reason = 'event reader failed'
        try:
            while True:
                code, payload, blobs = read_event(conn.events, MAX_EVENT_PAYLOAD)
                self._dispatch_event(code, payload, blobs)
        except (OSError, FrameError) as err:
            reason = f'event connection lost: {_describe(err)}'
        finally:
            # A no-op after disconnect() or a failed ask(), which got here first.
            self._begin_closing(conn, reason)
            conn.close()
            if conn.broken_reason is not None:
                self._emit('broken', conn.broken_reason)
            self._emit('disconnected')

    def _dispatch_event(self, code: int, payload: bytes, blobs: list[bytes]) -> None:
        # The stream is still in step after an unknown or undecodable event, so
        # skip it instead of dropping the connection (upstream JSON daemons may
        # send pickled values, e.g. in 'dataset').
        name = code2event.get(code)
        if name is None:
            log.warning('ignoring event with unknown code 0x%04x', code)
            return
        try:
            data = decode(payload)
        except CodecError as err:
            log.warning('ignoring undecodable %r event: %s', name, err)
            return
        if name in BLOB_EVENTS:
            self._emit(name, data, blobs)
        else:
            self._emit(name, data)

    # -- commands --------------------------------------------------------------

    def ask(self, command: str, *args: Any, timeout: float | None = None) -> Any:
        """Send *command* and return the daemon's decoded reply.

        *timeout* overrides the connect timeout for this reply.  Raises
        DaemonError for an error reply, UnsupportedReply for an undecodable
        one, and ConnectionFailed when the connection fails (a reply timeout
        included); the event thread then signals 'broken'.
        """
        if command not in command2code:
            raise ClientError(f'unknown command {command!r}')
        if self.viewonly and command in ACTIVE_COMMANDS:
            raise DaemonError('view-only connection')
        frame = encode_command(command, args)
        conn = self._conn
        if conn is None:
            raise ConnectionFailed('not connected')
        with conn.request_lock:
            ok, payload = self._exchange(conn, frame, timeout)
        return self._reply_value(command, ok, payload)

    def _exchange(self, conn: _Connection, frame: bytes,
                  timeout: float | None) -> tuple[bool, bytes | None]:
        """Send *frame* and read the reply; the caller holds conn.request_lock."""
        if conn.closing:
            raise ConnectionFailed('not connected')
        try:
            wait = conn.timeout if timeout is None else timeout
            if conn.control.gettimeout() != wait:
                conn.control.settimeout(wait)
            conn.control.sendall(frame)
            return read_reply(conn.control, MAX_REPLY_PAYLOAD)
        except (OSError, FrameError) as err:
            # The stream is out of step (even after a timeout a late reply
            # would be taken for the next one), so the connection is done.
            reason = f'connection to the daemon broken: {_describe(err)}'
            self._begin_closing(conn, reason)
            raise ConnectionFailed(reason) from err
        except BaseException:
            # interrupted (KeyboardInterrupt) between sending and reading:
            # the reply would be taken for the next command's
            self._begin_closing(conn, 'request interrupted')
            raise

    def emergency(self, *, timeout: float | None = None) -> str:
        """Send the emergency stop at once, never waiting behind another request.

        On an idle control connection it is sent there.  While another
        thread waits there for a reply (a long exec or eval), or after the
        connection broke, it is sent on a second, short-lived control
        connection instead: same host and port, a fresh client id, a login
        with the credentials connect() was given, then 'emergency', its
        reply, and 'quit'.  The reply awaited on the first connection is
        left alone.

        Returns VIA_CONTROL or VIA_EXTRA (how it was sent).  Raises
        DaemonError when the daemon refuses it, ConnectionFailed or
        LoginFailed when the daemon cannot be reached (also when there was
        never a connect(), or after disconnect()).  *timeout* (default: the
        connect timeout) bounds each step of the second connection.
        """
        conn = self._conn
        if conn is not None and not conn.closing and conn.request_lock.acquire(blocking=False):
            try:
                ok, payload = self._exchange(conn, _EMERGENCY_FRAME, timeout)
            except ConnectionFailed:
                # broken unnoticed until now: a fresh connection may still get
                # through (a second emergency stop, should the first have
                # arrived, does no harm)
                pass
            else:
                self._reply_value('emergency', ok, payload)
                return VIA_CONTROL
            finally:
                conn.request_lock.release()
        self._emergency_on_second_connection(timeout)
        return VIA_EXTRA

    def _emergency_on_second_connection(self, timeout: float | None) -> None:
        params = self._login_params
        if params is None:
            raise ConnectionFailed('not connected, and no login to use for an emergency '
                                   'connection')
        wait = params.timeout if timeout is None else timeout
        try:
            # no event connection: the daemon keeps the few events for this
            # login queued until the quit below ends it
            conn, _banner, _level = self._open_connection(
                params.host, params.port, params.login, params.password,
                timeout=wait, events=False, tls_context=params.tls_context,
                purpose=PURPOSE_EMERGENCY)  # the daemon keeps slots for these
        except ClientError as err:
            raise type(err)(f'emergency connection: {err}') from err
        try:
            try:
                conn.control.sendall(_EMERGENCY_FRAME)
                ok, payload = read_reply(conn.control, MAX_REPLY_PAYLOAD)
            except (OSError, FrameError) as err:
                raise ConnectionFailed(f'emergency connection to {params.host}:{params.port} '
                                       f'broken: {_describe(err)}') from err
            self._reply_value('emergency', ok, payload)
        finally:
            try:
                conn.control.sendall(_QUIT_FRAME)  # like disconnect(): no wait for the reply
            except OSError:
                pass
            conn.shutdown()
            conn.close()

    @staticmethod
    def _reply_value(command: str, ok: bool, payload: bytes | None) -> Any:
        try:
            value = decode(payload) if payload else None
        except CodecError as err:
            if ok:
                raise UnsupportedReply(f'cannot decode the reply to {command!r}: {err}') \
                    from None
            raise DaemonError(f'undecodable error reply ({err})') from None
        if not ok:
            raise DaemonError(str(value))
        return value

    def tell(self, command: str, *args: Any) -> bool:
        """Send a command for its effect; report failures instead of raising.

        An error reply is signalled as 'error'; a broken connection is
        signalled as 'broken' by the event thread.
        """
        try:
            self.ask(command, *args)
        except DaemonError as err:
            self._emit('error', str(err))
            return False
        except ConnectionFailed:
            return False
        return True

    def eval(self, expr: str, default: Any = _NO_DEFAULT, stringify: bool = False) -> Any:
        """Evaluate *expr* in the daemon; on failure return *default* if given."""
        try:
            return self.ask('eval', expr, stringify)
        except (DaemonError, UnsupportedReply):
            if default is _NO_DEFAULT:
                raise
            return default

    def run(self, code: str, name: str = '', *, queue: bool = True) -> str:
        """Submit a script; returns its request id.

        With queue=False it is started only if nothing runs (else DaemonError).
        """
        reqid = self.ask('queue' if queue else 'start', name, code)
        if not isinstance(reqid, str):
            raise UnsupportedReply(f'expected a request id, got {reqid!r}')
        return reqid

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Past runs, newest first: dicts with reqid, name, script, user,
        submitted, started, ended (Unix times or None), outcome, error.

        Needs a daemon of this project (not part of upstream protocol 24).
        """
        runs = self.ask('history', limit)
        if not isinstance(runs, list):
            raise UnsupportedReply(f'expected a list of runs, got {runs!r}')
        return runs
