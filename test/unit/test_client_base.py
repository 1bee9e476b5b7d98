"""NicosClient against a scripted fake daemon on real loopback sockets."""

import base64
import json
import pickle
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
import rsa

from nicos.clients.base import (
    ClientError,
    ConnectionFailed,
    DaemonError,
    LoginFailed,
    NicosClient,
    UnsupportedReply,
)
from nicos.protocols.daemon import code2command, event2code
from nicos.protocols.daemon.codec import decode
from nicos.protocols.daemon.framing import (
    ConnectionClosed,
    encode_event,
    encode_reply,
    event_frame,
    read_command,
    recv_exact,
    stx_frame,
)

WAIT = 10  # seconds; only a guard against hanging, never reached when tests pass

DROP = object()  # responder result: close the control connection without a reply


@pytest.fixture(scope='module')
def keypair() -> tuple[rsa.PublicKey, rsa.PrivateKey]:
    return rsa.newkeys(512)


def echo_responder(name: str, args: list) -> Any:
    """Default behaviour: reply (True, [name, *args])."""
    return True, [name, *args]


class FakeDaemon:
    """Serves one client session following a script, recording what it gets.

    *responder(name, args)* returns (ok, value), raw reply bytes, or DROP.
    """

    def __init__(self, keypair, *, banner: dict | None = None, banner_error: str | None = None,
                 login_error: str | None = None, user_level: int = 10,
                 responder: Callable[[str, list], Any] = echo_responder) -> None:
        public, self.private_key = keypair
        self.banner = {
            'daemon_version': '3.12.2', 'protocol_version': 24, 'pw_hashing': 'rsa,plain',
            'rsakey': base64.b64encode(public.save_pkcs1()).decode('ascii'),
            'serializer': 'json', 'nicos_root': '/opt/nicos', 'custom_path': '',
            'custom_version': '',
        }
        self.banner.update(banner or {})
        self.banner_error = banner_error
        self.login_error = login_error
        self.user_level = user_level
        self.responder = responder
        self.logins: queue.Queue = queue.Queue()  # credentials dict with decrypted password
        self.commands: queue.Queue = queue.Queue()  # (name, args) after the login
        self.event_socket_seen_at: dict[str, bool] = {}
        self.event_connected = threading.Event()
        self.control_id = b''
        self.event_id = b''
        self.errors: list[BaseException] = []
        self.closing = False
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self._event_socket: socket.socket | None = None
        self._threads = [threading.Thread(target=self._guarded, args=(self._serve_control,),
                                          daemon=True)]
        self._threads[0].start()

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            work()
        except OSError:
            if not self.closing:  # else close() pulled the listener from under accept()
                raise
        except BaseException as err:  # reported by close()
            self.errors.append(err)

    def _serve_control(self) -> None:
        control, _ = self.listener.accept()
        with control:
            self.control_id = recv_exact(control, 16)
            if self.banner_error is not None:
                control.sendall(encode_reply(False, self.banner_error))
                return
            control.sendall(encode_reply(True, self.banner))
            try:
                code, payload = read_command(control)
            except ConnectionClosed:
                self.logins.put(None)  # the client gave up before logging in
                return
            assert code2command[code] == 'authenticate'
            [credentials] = decode(payload)
            secret = base64.b64decode(credentials['passwd'].removeprefix('RSA:'))
            credentials['password'] = rsa.decrypt(secret, self.private_key).decode()
            self.logins.put(credentials)
            if self.login_error is not None:
                control.sendall(encode_reply(False, self.login_error))
                return
            control.sendall(encode_reply(True, {'user_level': self.user_level}))
            events = threading.Thread(target=self._guarded, args=(self._accept_events,),
                                      daemon=True)
            self._threads.append(events)
            events.start()
            self._serve_commands(control)

    def _serve_commands(self, control: socket.socket) -> None:
        while True:
            try:
                code, payload = read_command(control)
            except (ConnectionClosed, ConnectionResetError):
                self.commands.put(('<closed>', []))
                return
            name, args = code2command[code], decode(payload)
            self.event_socket_seen_at.setdefault(name, self.event_connected.is_set())
            self.commands.put((name, args))
            if name == 'quit':
                control.sendall(encode_reply(True, None))
                return
            if name == 'eventmask':
                control.sendall(encode_reply(True, None))
                continue
            result = self.responder(name, args)
            if result is DROP:
                return
            control.sendall(result if isinstance(result, bytes) else encode_reply(*result))

    def _accept_events(self) -> None:
        self._event_socket, _ = self.listener.accept()
        self.event_id = recv_exact(self._event_socket, 16)
        self.event_connected.set()

    def send(self, frame: bytes) -> None:
        assert self.event_connected.wait(WAIT)
        self._event_socket.sendall(frame)

    def close_events(self) -> None:
        assert self.event_connected.wait(WAIT)
        self._event_socket.close()

    def next_command(self) -> tuple[str, list]:
        return self.commands.get(timeout=WAIT)

    def close(self) -> None:
        self.closing = True
        self.listener.close()
        if self._event_socket is not None:
            self._event_socket.close()
        for thread in self._threads:
            thread.join(WAIT)
        if self.errors:
            raise self.errors[0]


class RecordingClient(NicosClient):
    def __init__(self) -> None:
        super().__init__()
        self.signals: queue.Queue = queue.Queue()

    def signal(self, name: str, *args: Any) -> None:
        self.signals.put((name, *args))

    def next_signal(self) -> tuple:
        return self.signals.get(timeout=WAIT)

    def signals_until(self, last: str) -> list[tuple]:
        received = [self.next_signal()]
        while received[-1][0] != last:
            received.append(self.next_signal())
        return received

    def pending_signals(self) -> list[tuple]:
        received = []
        while not self.signals.empty():
            received.append(self.signals.get_nowait())
        return received


@pytest.fixture
def make_daemon(keypair):
    daemons = []

    def make(**options) -> FakeDaemon:
        daemons.append(FakeDaemon(keypair, **options))
        return daemons[-1]

    yield make
    for daemon in daemons:
        daemon.close()


@pytest.fixture
def client():
    client = RecordingClient()
    yield client
    client.disconnect()


def connect(client: NicosClient, daemon: FakeDaemon, **options) -> None:
    options.setdefault('password', 'pässwörd')
    client.connect('127.0.0.1', daemon.port, 'alice', **options)


# -- connecting -------------------------------------------------------------------


def test_login_sends_the_rsa_encrypted_password(make_daemon, client):
    daemon = make_daemon(user_level=20)
    connect(client, daemon)
    credentials = daemon.logins.get(timeout=WAIT)
    assert credentials['login'] == 'alice'
    assert credentials['passwd'].startswith('RSA:')
    assert credentials['password'] == 'pässwörd'
    assert credentials['display'] == ''
    assert client.connected
    assert client.user_level == 20
    assert client.banner == daemon.banner
    assert (client.host, client.port, client.login) == ('127.0.0.1', daemon.port, 'alice')
    assert client.next_signal() == ('connected',)


def test_both_connections_carry_the_same_random_id(make_daemon, client):
    first, second = make_daemon(), make_daemon()
    connect(client, first)
    other = RecordingClient()
    connect(other, second)
    try:
        assert first.event_connected.wait(WAIT) and second.event_connected.wait(WAIT)
        assert len(first.control_id) == 16
        assert first.event_id == first.control_id
        assert second.event_id == second.control_id != first.control_id
    finally:
        other.disconnect()


def test_eventmask_is_sent_before_the_event_connection(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon, eventmask=['livedata', 'watch'])
    assert daemon.next_command() == ('eventmask', [['livedata', 'watch']])
    assert daemon.event_socket_seen_at['eventmask'] is False
    client.ask('getstatus')
    assert daemon.next_command() == ('getstatus', [])


def test_no_eventmask_by_default(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon)
    client.ask('getversion')
    assert daemon.next_command() == ('getversion', [])


def test_old_protocol_version_is_refused_before_the_password_is_sent(make_daemon, client):
    daemon = make_daemon(banner={'protocol_version': 22})
    with pytest.raises(ConnectionFailed, match='protocol version 22'):
        connect(client, daemon)
    assert daemon.logins.get(timeout=WAIT) is None
    assert not client.connected
    assert client.pending_signals() == []


@pytest.mark.parametrize('hashing', ['sha1', 'md5', 'plain', None])
def test_password_is_never_sent_without_rsa(make_daemon, client, hashing):
    daemon = make_daemon(banner={'pw_hashing': hashing})
    if hashing is None:
        del daemon.banner['pw_hashing']  # upstream clients then assume sha1
    with pytest.raises(LoginFailed, match='refusing to send the password'):
        connect(client, daemon)
    assert daemon.logins.get(timeout=WAIT) is None


def test_rejected_login_raises_login_failed_with_the_reason(make_daemon, client):
    daemon = make_daemon(login_error='Invalid username or password!')
    with pytest.raises(LoginFailed, match='Invalid username or password!'):
        connect(client, daemon)
    assert not client.connected
    assert client.pending_signals() == []


def test_refused_banner_raises_login_failed(make_daemon, client):
    daemon = make_daemon(banner_error='permission denied')
    with pytest.raises(LoginFailed, match='permission denied'):
        connect(client, daemon)


def test_password_too_long_for_the_key(make_daemon, client):
    daemon = make_daemon()
    with pytest.raises(LoginFailed, match='too long'):
        connect(client, daemon, password='x' * 60)


def test_unusable_rsa_key(make_daemon, client):
    daemon = make_daemon(banner={'rsakey': 'bm90IGEga2V5'})
    with pytest.raises(ConnectionFailed, match='unusable RSA key'):
        connect(client, daemon)


def test_unreachable_daemon(client):
    with socket.socket() as unused:
        unused.bind(('127.0.0.1', 0))  # reserved, but nobody listens
        with pytest.raises(ConnectionFailed, match='cannot connect'):
            client.connect('127.0.0.1', unused.getsockname()[1], 'alice', 'pw')
    assert not client.connected


def test_connecting_twice_is_refused(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon)
    with pytest.raises(ClientError, match='already connected'):
        connect(client, daemon)


# -- commands -----------------------------------------------------------------------


def test_ask_returns_the_decoded_reply(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon)
    assert client.ask('getmessages', '*') == ['getmessages', '*']


def test_ack_and_empty_stx_mean_none(make_daemon, client):
    replies = iter([(True, None), stx_frame(b'')])
    daemon = make_daemon(responder=lambda name, args: next(replies))
    connect(client, daemon)
    assert client.ask('unlock') is None
    assert client.ask('unlock') is None


def test_nak_raises_daemon_error_and_keeps_the_connection(make_daemon, client):
    def responder(name, args):
        return (False, 'no script is running') if name == 'break' else (True, 'ok')

    connect(client, make_daemon(responder=responder))
    with pytest.raises(DaemonError, match='^no script is running$'):
        client.ask('break', 2)
    assert client.ask('getversion') == 'ok'
    assert client.connected


def test_unknown_command_is_refused_locally(make_daemon, client):
    connect(client, make_daemon())
    with pytest.raises(ClientError, match='unknown command'):
        client.ask('rm_rf')


def test_pickled_reply_is_refused_but_the_connection_survives(make_daemon, client):
    evil = json.dumps({'__pickle__': pickle.dumps(b'x', protocol=2).decode('latin-1')})

    def responder(name, args):
        return stx_frame(evil.encode()) if name == 'eval' else (True, 'fine')

    connect(client, make_daemon(responder=responder))
    with pytest.raises(UnsupportedReply, match='pickled data is refused'):
        client.ask('eval', 'x', False)
    assert client.eval('x', default=-1) == -1
    assert client.ask('getversion') == 'fine'


def test_tell_reports_errors_as_signal(make_daemon, client):
    def responder(name, args):
        return (False, 'script is already paused') if args == [1] else (True, None)

    connect(client, make_daemon(responder=responder))
    assert client.next_signal() == ('connected',)
    assert client.tell('break', 2) is True
    assert client.tell('break', 1) is False
    assert client.next_signal() == ('error', 'script is already paused')


def test_eval_passes_stringify_and_maps_errors_to_the_default(make_daemon, client):
    def responder(name, args):
        expr, stringify = args
        if expr == 'bad':
            return False, 'exception raised while evaluating: NameError'
        return True, [expr, stringify]

    daemon = make_daemon(responder=responder)
    connect(client, daemon)
    assert client.eval('1+1') == ['1+1', False]
    assert client.eval('1+1', stringify=True) == ['1+1', True]
    assert client.eval('bad', default=None) is None
    with pytest.raises(DaemonError, match='NameError'):
        client.eval('bad')


def test_run_queues_or_starts_a_script(make_daemon, client):
    def responder(name, args):
        return True, f'{name}-id'

    daemon = make_daemon(responder=responder)
    connect(client, daemon)
    assert client.run('move(x, 1)\n', 'scan.py') == 'queue-id'
    assert daemon.next_command() == ('queue', ['scan.py', 'move(x, 1)\n'])
    assert client.run('count(1)', queue=False) == 'start-id'
    assert daemon.next_command() == ('start', ['', 'count(1)'])


def test_viewonly_refuses_active_commands_locally(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon, viewonly=True)
    assert client.viewonly
    for command, args in [('queue', ('', 'x')), ('start', ('', 'x')), ('stop', (2,)),
                          ('exec', ('x',)), ('continue', ())]:
        with pytest.raises(DaemonError, match='view-only connection'):
            client.ask(command, *args)
    assert client.tell('break', 1) is False
    client.ask('emergency')
    client.ask('eval', 'x', False)
    assert daemon.next_command() == ('emergency', [])
    assert daemon.next_command() == ('eval', ['x', False])


def test_concurrent_asks_get_their_own_replies(make_daemon, client):
    connect(client, make_daemon())
    results: queue.Queue = queue.Queue()

    def worker(number: int) -> None:
        for index in range(40):
            expr = f'{number}:{index}'
            results.put(client.ask('eval', expr, False) == ['eval', expr, False])

    workers = [threading.Thread(target=worker, args=(number,)) for number in range(6)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    outcomes = [results.get_nowait() for _ in range(results.qsize())]
    assert len(outcomes) == 240 and all(outcomes)


# -- events -----------------------------------------------------------------------------


def test_events_reach_signal_in_order(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon)
    record = ['nicos', 1700000000.5, 20, 'hello\n', None, 'req-1']
    daemon.send(encode_event('message', record))
    daemon.send(encode_event('status', (0, 3)))
    daemon.send(encode_event('livedata', {'tag': 'live'}, [b'\x00\x01', b'labels']))
    daemon.send(event_frame(event2code['status'], b'[-1, -1]', [b'ignored']))
    daemon.send(encode_event('promptdone', ['uid']))
    assert client.signals_until('promptdone') == [
        ('connected',),
        ('message', record),
        ('status', [0, 3]),
        ('livedata', {'tag': 'live'}, [b'\x00\x01', b'labels']),
        ('status', [-1, -1]),
        ('promptdone', ['uid']),
    ]


def test_unknown_and_pickled_events_are_skipped(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon)
    pickled = json.dumps({'__pickle__': 'cos\nsystem\n'}).encode()
    daemon.send(event_frame(0x100C, b'[]'))
    daemon.send(event_frame(event2code['dataset'], pickled))
    daemon.send(encode_event('mode', 'master'))
    assert client.signals_until('mode') == [('connected',), ('mode', 'master')]
    assert client.connected


def test_a_failing_signal_handler_does_not_stop_events(make_daemon):
    class FragileClient(RecordingClient):
        def signal(self, name, *args):
            super().signal(name, *args)
            if name == 'status':
                raise RuntimeError('handler bug')

    daemon = make_daemon()
    client = FragileClient()
    connect(client, daemon)
    try:
        daemon.send(encode_event('status', [0, 1]))
        daemon.send(encode_event('mode', 'master'))
        assert client.signals_until('mode')[-2:] == [('status', [0, 1]), ('mode', 'master')]
    finally:
        client.disconnect()


def test_bad_event_frame_breaks_the_connection(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon)
    daemon.send(b'\x15garbage')
    received = client.signals_until('disconnected')
    assert [entry[0] for entry in received] == ['connected', 'broken', 'disconnected']
    assert 'event connection lost' in received[1][1]
    assert not client.connected


# -- disconnecting -------------------------------------------------------------------------


def test_disconnect_sends_quit_and_signals_disconnected_once(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon)
    assert daemon.event_connected.wait(WAIT)
    client.disconnect()
    assert daemon.next_command() == ('quit', [])
    assert not client.connected
    client.disconnect()
    assert client.pending_signals() == [('connected',), ('disconnected',)]
    with pytest.raises(ConnectionFailed, match='not connected'):
        client.ask('getstatus')
    assert client.tell('getstatus') is False


def test_daemon_closing_the_event_connection_is_reported_as_broken(make_daemon, client):
    daemon = make_daemon()
    connect(client, daemon)
    daemon.close_events()
    received = client.signals_until('disconnected')
    assert [entry[0] for entry in received] == ['connected', 'broken', 'disconnected']
    assert not client.connected
    with pytest.raises(ConnectionFailed):
        client.ask('getstatus')
    client.disconnect()
    assert client.pending_signals() == []


def test_lost_control_connection_raises_and_signals_broken_once(make_daemon, client):
    daemon = make_daemon(responder=lambda name, args: DROP)
    connect(client, daemon)
    with pytest.raises(ConnectionFailed, match='broken'):
        client.ask('getstatus')
    assert not client.connected
    received = client.signals_until('disconnected')
    assert [entry[0] for entry in received] == ['connected', 'broken', 'disconnected']
    client.disconnect()
    assert client.pending_signals() == []


def test_reply_timeout_breaks_the_connection(make_daemon, client):
    release = threading.Event()

    def responder(name, args):
        release.wait(WAIT)
        return True, None

    daemon = make_daemon(responder=responder)
    connect(client, daemon)
    try:
        with pytest.raises(ConnectionFailed, match='timed out'):
            client.ask('exec', 'sleep(100)', timeout=0.05)
    finally:
        release.set()
    assert [entry[0] for entry in client.signals_until('disconnected')] == \
        ['connected', 'broken', 'disconnected']


def test_reconnect_after_disconnect(make_daemon, client):
    first, second = make_daemon(), make_daemon(user_level=0)
    connect(client, first)
    client.disconnect()
    connect(client, second)
    assert client.connected and client.user_level == 0
    assert client.ask('getversion') == ['getversion']
    assert second.next_command() == ('getversion', [])
    client.disconnect()
    assert [entry[0] for entry in client.pending_signals()] == \
        ['connected', 'disconnected', 'connected', 'disconnected']


def test_disconnect_from_a_signal_handler(make_daemon):
    class QuitOnMode(RecordingClient):
        def signal(self, name, *args):
            super().signal(name, *args)
            if name == 'mode':
                self.disconnect()

    daemon = make_daemon()
    client = QuitOnMode()
    connect(client, daemon)
    daemon.send(encode_event('mode', 'master'))
    assert [entry[0] for entry in client.signals_until('disconnected')] == \
        ['connected', 'mode', 'disconnected']
    assert daemon.next_command() == ('quit', [])
