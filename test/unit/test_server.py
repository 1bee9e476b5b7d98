"""The real Server on loopback, driven by the client library and by raw sockets.

A fake controller stands in for the script controller. Every hostile-client test also
checks that another, well-behaved client keeps working.
"""

import base64
import ipaddress
import json
import os
import queue
import socket
import struct
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import rsa

import nicos
from nicos.clients.base import DaemonError, LoginFailed, NicosClient
from nicos.protocols.daemon import command2code, event2code
from nicos.protocols.daemon.codec import decode
from nicos.protocols.daemon.framing import (
    command_frame,
    encode_command,
    read_event,
    read_reply,
    recv_exact,
)
from nicos_daemon.auth import make_authenticator
from nicos_daemon.auth.passwords import hash_password
from nicos_daemon.auth.rsakeys import ServerKey
from nicos_daemon.auth.throttle import LoginThrottle
from nicos_daemon.common import CommandError, User
from nicos_daemon.config import DaemonConfig, PasswdEntry
from nicos_daemon.events import EventBus
from nicos_daemon.server import Server

WAIT = 10.0  # seconds; a guard against hanging, never reached when tests pass
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "gina": "gina-secret-333"}
LEVELS = {"alice": "admin", "bob": "user", "gina": "guest"}


class FakeController:
    """The ScriptController interface, with just enough behaviour for server tests."""

    def __init__(self, bus: EventBus, config: Any = None) -> None:
        self.bus = bus
        self.status = (-1, -1)
        self.calls: queue.Queue = queue.Queue()
        self.requests: list[dict] = []
        self.started = False
        self.shut_down = False

    def _record(self, name: str, *args: Any) -> None:
        self.calls.put((name, args))

    def start_threads(self) -> None:
        self.started = True

    def shutdown(self, timeout: float = 10.0) -> None:
        self.shut_down = True

    def queue(self, name: str, code: str, user: User) -> str:
        request = {"reqid": str(uuid.uuid1()), "name": name or None, "script": code,
                   "user": user.name}
        self.requests.append(request)
        self.bus.emit("request", request)
        self._record("queue", name, code, user)
        return request["reqid"]

    def start(self, name: str, code: str, user: User) -> str:
        if self.status[0] >= 0:
            raise CommandError("a script is running")
        return self.queue(name, code, user)

    def unqueue(self, reqid: str, user: User) -> None:
        self._record("unqueue", reqid, user)

    def rearrange(self, ids: list[str]) -> None:
        self._record("rearrange", ids)

    def update(self, code: str, reason: str, reqid: str | None, user: User) -> None:
        self._record("update", code, reason, reqid, user)

    def break_(self, level: int, user: User) -> None:
        self._record("break", level, user)

    def continue_(self, user: User) -> None:
        self._record("continue", user)

    def stop(self, level: int, user: User) -> None:
        self._record("stop", level, user)

    def finish(self, user: User) -> None:
        self._record("finish", user)

    def emergency(self, user: User) -> None:
        self._record("emergency", user)

    def exec_(self, code: str, user: User) -> None:
        self._record("exec", code, user)

    def eval_(self, expr: str, stringify: bool) -> Any:
        if expr == "crash":
            raise RuntimeError("controller bug")
        return repr(expr) if stringify else expr

    def watch(self, exprs: list[str]) -> None:
        self._record("watch", exprs)

    def unwatch(self, exprs: list[str]) -> None:
        self._record("unwatch", exprs)

    def getstatus(self) -> dict:
        return {"status": list(self.status), "script": "", "scriptname": "", "eta": [1, -1],
                "watch": {}, "requests": list(self.requests), "mode": "master",
                "setups": [[], []], "devices": [], "devicefailures": {}}

    def getmessages(self, n: str | int) -> list:
        return []

    def getscript(self) -> str:
        return ""

    def gettrace(self) -> str:
        return "\n"

    def gethistory(self, key: str, fromtime: Any, totime: Any, interval: Any = None) -> list:
        return []

    def getcachekeys(self, query: str) -> list:
        return []

    def getdataset(self, index: Any) -> Any:
        return [] if index == "*" else None

    def complete(self, line: str, lastword: str) -> list[str]:
        return []

    def transfer(self, content: bytes) -> str:
        self._record("transfer", content)
        return "/tmp/nicos-transfer"

    def simulate(self, name: str, code: str, simid: str | None, user: User) -> None:
        raise CommandError("simulation is not available")


# -- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def server_key() -> ServerKey:
    return ServerKey(rsa.newkeys(2048)[1])


@pytest.fixture(scope="session")
def passwd() -> dict[str, PasswdEntry]:
    from nicos_daemon.auth.levels import parse_level
    return {name: PasswdEntry(hash=hash_password(password), level=parse_level(LEVELS[name]))
            for name, password in PASSWORDS.items()}


@pytest.fixture
def make_server(server_key, passwd) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(**options: Any) -> Server:
        server_options = {key: options.pop(key) for key in list(options)
                          if key in ("max_pending_per_host", "max_pending",
                                     "event_byte_limit", "event_send_timeout")}
        options = {"host": "127.0.0.1", "port": 0, "authmethod": "list", "passwd": passwd,
                   **options}
        config = DaemonConfig(**options)
        bus = EventBus()
        controller = FakeController(bus)
        server = Server(config, controller, bus, server_key, make_authenticator(config),
                        **server_options)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown(flush_timeout=0.5)


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


class RecordingClient(NicosClient):
    def __init__(self) -> None:
        super().__init__()
        self.signals: queue.Queue = queue.Queue()

    def signal(self, name: str, *args: Any) -> None:
        self.signals.put((name, *args))

    def next_event(self, names: tuple[str, ...] | None = None) -> tuple:
        while True:
            item = self.signals.get(timeout=WAIT)
            if names is None or item[0] in names:
                return item


@pytest.fixture
def clients() -> Iterator[Callable[..., RecordingClient]]:
    made: list[RecordingClient] = []

    def connect(server: Server, user: str = "bob", password: str | None = None,
                **options: Any) -> RecordingClient:
        client = RecordingClient()
        made.append(client)
        client.connect("127.0.0.1", server.port, user,
                       PASSWORDS[user] if password is None else password,
                       timeout=WAIT, **options)
        return client

    yield connect
    for client in made:
        client.disconnect()


def assert_works(client: RecordingClient) -> None:
    assert client.ask("getversion") == nicos.__version__


class RawClient:
    """Speaks the protocol byte by byte, so tests can misbehave on purpose."""

    def __init__(self, port: int, source: str = "127.0.0.1", client_id: bytes | None = None,
                 send_id: bool = True, rcvbuf: int | None = None) -> None:
        self.port = port
        self.source = source
        self.id = client_id if client_id is not None else os.urandom(16)
        self.sock = self._connect(rcvbuf)
        self.events: socket.socket | None = None
        self.banner: dict | None = None
        if send_id:
            self.sock.sendall(self.id)

    def _connect(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(WAIT)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((self.source, 0))
        sock.connect(("127.0.0.1", self.port))
        return sock

    def reply(self) -> tuple[bool, Any]:
        ok, payload = read_reply(self.sock)
        return ok, (decode(payload) if payload else None)

    def read_banner(self) -> dict:
        ok, self.banner = self.reply()
        assert ok, self.banner
        return self.banner

    def encrypt(self, password: str) -> str:
        key = rsa.PublicKey.load_pkcs1(base64.b64decode(self.banner["rsakey"]))
        return "RSA:" + base64.b64encode(rsa.encrypt(password.encode(), key)).decode()

    def authenticate(self, user: str, passwd: str) -> tuple[bool, Any]:
        self.send("authenticate", {"login": user, "passwd": passwd, "display": ""})
        return self.reply()

    def login(self, user: str = "bob") -> "RawClient":
        self.read_banner()
        ok, value = self.authenticate(user, self.encrypt(PASSWORDS[user]))
        assert ok, value
        return self

    def open_events(self, rcvbuf: int | None = None) -> socket.socket:
        self.events = self._connect(rcvbuf)
        self.events.sendall(self.id)
        return self.events

    def send(self, name: str, *args: Any) -> None:
        self.sock.sendall(encode_command(name, list(args)))

    def ask(self, name: str, *args: Any) -> tuple[bool, Any]:
        self.send(name, *args)
        return self.reply()

    def at_eof(self, sock: socket.socket | None = None) -> bool:
        """Whether the daemon closed the connection (reads and discards up to EOF)."""
        sock = sock or self.sock
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
        if self.events is not None:
            self.events.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawClient]]:
    made: list[RawClient] = []

    def connect(server: Server, **options: Any) -> RawClient:
        client = RawClient(server.port, **options)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()


def controller_of(server: Server) -> FakeController:
    return server.controller  # type: ignore[return-value]


def wait_for_event_sockets(server: Server) -> None:
    assert server.wait_until(lambda: all(c.has_event_socket for c in server.clients()), WAIT)


# -- handshake -----------------------------------------------------------------------

def test_banner_reveals_no_paths(server, raw):
    banner = raw(server).read_banner()
    assert banner == {
        "daemon_version": nicos.__version__, "protocol_version": 24,
        "pw_hashing": "rsa,plain", "rsakey": banner["rsakey"], "serializer": "json",
        "nicos_root": "", "custom_path": "", "custom_version": "",
    }
    assert rsa.PublicKey.load_pkcs1(base64.b64decode(banner["rsakey"])).n.bit_length() >= 2048


def test_login_and_levels(server, clients):
    for user, level in (("alice", 20), ("bob", 10), ("gina", 0)):
        client = clients(server, user)
        assert client.user_level == level
        assert_works(client)
    assert server.logged_in == 3


def test_wrong_password_refused_other_client_unaffected(server, clients):
    good = clients(server)
    with pytest.raises(LoginFailed, match="Invalid username or password!"):
        clients(server, "alice", "wrong password")
    with pytest.raises(LoginFailed, match="Invalid username or password!"):
        clients(server, "nobody", "whatever it is")
    assert_works(good)
    assert server.wait_until(lambda: server.pending == 0, WAIT)


def test_plain_text_password_is_refused(server, raw):
    client = raw(server)
    client.read_banner()
    assert client.authenticate("bob", PASSWORDS["bob"]) == (False, "Invalid username or password!")
    assert client.at_eof()


def test_undecryptable_password_is_refused(server, raw):
    client = raw(server)
    client.read_banner()
    assert client.authenticate("bob", "RSA:AAAA") == (False, "Invalid username or password!")
    assert client.at_eof()


def test_empty_user_name(server, raw):
    client = raw(server)
    client.read_banner()
    reply = client.authenticate("  ", client.encrypt("x"))
    assert reply == (False, "No username, please identify yourself!")
    assert client.at_eof()


@pytest.mark.parametrize("name, args", [
    ("getversion", []),
    ("authenticate", []),
    ("authenticate", ["bob"]),
    ("authenticate", [{"login": "bob"}]),
    ("authenticate", [{"login": "bob", "passwd": 5}]),
])
def test_malformed_login_request(server, raw, name, args):
    client = raw(server)
    client.read_banner()
    assert client.ask(name, *args) == (False, "invalid credentials")
    assert client.at_eof()


def test_throttle_after_repeated_failures(make_server, clients):
    server = make_server(throttle_failures=5, throttle_window=3600.0)
    good = clients(server)
    for _ in range(5):
        with pytest.raises(LoginFailed, match="Invalid username or password!"):
            clients(server, "bob", "wrong password")
    with pytest.raises(LoginFailed, match=r"too many failed logins, try again in \d+ s"):
        clients(server, "bob")  # even the right password is not tried
    assert_works(good)


def test_throttle_is_injectable(make_server, server_key, passwd):
    throttle = LoginThrottle(1, 3600.0)
    throttle.record_failure("127.0.0.1")
    config = DaemonConfig(host="127.0.0.1", port=0, passwd=passwd)
    bus = EventBus()
    server = Server(config, FakeController(bus), bus, server_key, make_authenticator(config),
                    throttle=throttle)
    server.start()
    try:
        with pytest.raises(LoginFailed, match="too many failed logins"):
            RecordingClient().connect("127.0.0.1", server.port, "bob", PASSWORDS["bob"],
                                      timeout=WAIT)
    finally:
        server.shutdown()


def test_untrusted_host_is_refused_before_the_banner(make_server, raw, clients):
    server = make_server(trustedhosts=(ipaddress.ip_network("127.0.0.1/32"),))
    good = clients(server)
    intruder = raw(server, source="127.0.0.2")
    assert intruder.reply() == (False, "permission denied")
    assert intruder.at_eof()
    assert_works(good)


def test_maxlogins(make_server, clients):
    server = make_server(maxlogins=2)
    first = clients(server)
    clients(server, "alice")
    with pytest.raises(LoginFailed, match=r"too many clients logged in \(2\)"):
        clients(server, "gina")
    assert_works(first)
    first.disconnect()
    assert server.wait_until(lambda: server.logged_in == 1, WAIT)
    assert_works(clients(server, "gina"))


def test_silent_peer_does_not_block_others(server, raw, clients):
    silent = raw(server, send_id=False)
    half_id = raw(server, send_id=False)
    half_id.sock.sendall(b"12345")
    assert server.wait_until(lambda: server.pending == 2, WAIT)
    assert_works(clients(server))
    silent.close()
    half_id.close()
    assert server.wait_until(lambda: server.pending == 0, WAIT)


def test_handshake_times_out(make_server, raw):
    server = make_server(login_timeout=0.2)
    silent = raw(server, send_id=False)
    assert silent.at_eof()
    idle = raw(server)  # sends its id, then nothing: the banner (if any), then EOF
    assert idle.at_eof()
    assert server.wait_until(lambda: server.pending == 0, WAIT)


def test_connections_before_login_are_limited_per_host(make_server, raw, clients):
    server = make_server(max_pending_per_host=3)
    good = clients(server)
    waiting = [raw(server, send_id=False) for _ in range(3)]
    assert server.wait_until(lambda: server.pending == 3, WAIT)
    extra = raw(server, send_id=False)
    assert extra.at_eof()
    other_host = raw(server, source="127.0.0.2")
    assert other_host.read_banner()["protocol_version"] == 24
    assert_works(good)
    for client in waiting:
        client.close()
    other_host.close()
    assert server.wait_until(lambda: server.pending == 0, WAIT)
    assert_works(clients(server, "alice"))


def test_event_connection_needs_a_completed_login(server, raw):
    control = raw(server)
    control.read_banner()
    # Same IP and id while the first connection is still in its handshake: refused.
    impostor = raw(server, client_id=control.id)
    assert impostor.at_eof()
    ok, _ = control.authenticate("bob", control.encrypt(PASSWORDS["bob"]))
    assert ok
    events = control.open_events()
    wait_for_event_sockets(server)
    controller_of(server).bus.emit("status", [0, 1])
    code, payload, _ = read_event(events)
    assert (code, decode(payload)) == (event2code["status"], [0, 1])


def test_authenticate_after_login_closes(server, raw, clients):
    good = clients(server)
    client = raw(server).login()
    assert client.authenticate("bob", "x") == (False, "already logged in")
    assert client.at_eof()
    assert_works(good)


# -- commands ------------------------------------------------------------------------

def test_level_refusals(server, clients):
    gina = clients(server, "gina")
    with pytest.raises(DaemonError, match="^queue needs user level USER$"):
        gina.run("x = 1")
    with pytest.raises(DaemonError, match="^eval needs user level USER$"):
        gina.ask("eval", "1", False)
    assert gina.ask("getstatus")["status"] == [-1, -1]
    bob = clients(server)
    with pytest.raises(DaemonError, match="^gettrace needs user level ADMIN$"):
        bob.ask("gettrace")
    assert_works(gina)


def test_control_arbitration_names_the_holder(server, clients):
    alice, bob = clients(server, "alice"), clients(server, "bob")
    reqid = alice.run("x = 1", "a.py")
    assert isinstance(reqid, str)
    controller_of(server).status = (0, 1)
    with pytest.raises(DaemonError,
                       match=r"^you do not have control of the session \(held by alice\)$"):
        bob.ask("stop", 2)
    with pytest.raises(DaemonError, match=r"\(held by alice\)"):
        bob.run("y = 2")
    assert bob.ask("emergency") is None
    alice.ask("unlock")
    assert bob.ask("stop", 2) is None
    calls = controller_of(server).calls
    names = [calls.get_nowait()[0] for _ in range(calls.qsize())]
    assert names == ["queue", "emergency", "stop"]


def test_request_event_reaches_every_client(server, clients):
    alice, gina = clients(server, "alice"), clients(server, "gina")
    reqid = alice.run("x = 1", "a.py")
    for client in (alice, gina):
        name, data = client.next_event(("request",))
        assert data["reqid"] == reqid and data["user"] == "alice"


def test_command_errors_and_internal_errors_keep_the_connection(server, clients):
    bob = clients(server)
    with pytest.raises(DaemonError, match="^no script is running$"):
        bob.ask("stop", 2)
    with pytest.raises(DaemonError, match="^internal error executing command: RuntimeError$"):
        bob.ask("eval", "crash", False)
    with pytest.raises(DaemonError, match="^invalid number of arguments$"):
        bob.ask("getstatus", 1)
    with pytest.raises(DaemonError, match="^simulation is not available$"):
        bob.ask("simulate", "n", "x = 1")
    assert_works(bob)


def test_exactly_one_reply_per_command(server, raw):
    client = raw(server).login("alice")
    frames = [
        encode_command("getversion", []),
        command_frame(0x7777, b"[]"),
        encode_command("getstatus", [1]),
        encode_command("stop", [2]),
        encode_command("eval", ["crash", False]),
        encode_command("keepalive", []),
        encode_command("eval", ["marker", False]),
    ]
    client.sock.sendall(b"".join(frames))  # pipelined: replies must stay in step
    replies = [client.reply() for _ in frames]
    assert replies == [
        (True, nicos.__version__),
        (False, "unknown command code 0x7777"),
        (False, "invalid number of arguments"),
        (False, "no script is running"),
        (False, "internal error executing command: RuntimeError"),
        (True, None),
        (True, "marker"),
    ]
    assert client.ask("getversion") == (True, nicos.__version__)


def test_transfer_of_upstream_bytes(server, raw):
    import pickle
    client = raw(server).login()
    wrapped = {"__pickle__": pickle.dumps(b"\x00\x01raw", protocol=2).decode("latin-1")}
    client.sock.sendall(command_frame(command2code["transfer"],
                                      json.dumps([wrapped]).encode()))
    assert client.reply() == (True, "/tmp/nicos-transfer")
    assert controller_of(server).calls.get(timeout=WAIT) == ("transfer", (b"\x00\x01raw",))


# -- hostile clients -------------------------------------------------------------------

def test_unknown_command_code_keeps_the_connection(server, raw, clients):
    good = clients(server)
    client = raw(server).login()
    client.sock.sendall(command_frame(0xBEEF, b"[]"))
    assert client.reply() == (False, "unknown command code 0xbeef")
    assert client.ask("getversion") == (True, nicos.__version__)
    assert_works(good)


def test_oversized_frame_is_refused_and_closed(make_server, raw, clients):
    server = make_server(max_command_bytes=4096)
    good = clients(server)
    client = raw(server).login()
    client.sock.sendall(struct.pack(">cHI", b"\x05", command2code["exec"], 4097))
    ok, reason = client.reply()
    assert not ok and "4097" in reason and "4096" in reason
    assert client.at_eof()
    client.close()
    assert_works(good)
    assert server.wait_until(lambda: server.logged_in == 1, WAIT)


def test_oversized_frame_during_login(server, raw):
    client = raw(server)
    client.read_banner()
    client.sock.sendall(struct.pack(">cHI", b"\x05", command2code["authenticate"], 10**8))
    ok, reason = client.reply()
    assert not ok and "exceeds the limit" in reason
    assert client.at_eof()


@pytest.mark.parametrize("logged_in", [True, False])
def test_garbage_start_byte_closes_without_reply(server, raw, clients, logged_in):
    good = clients(server)
    client = raw(server)
    if logged_in:
        client.login()
    else:
        client.read_banner()
    client.sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert client.sock.recv(1) == b""
    assert_works(good)


@pytest.mark.parametrize("payload, detail", [
    (b'[{"__pickle__": "cos\\nsystem\\n(S\'true\'\\ntR."}]', "pickled data is refused"),
    (b'["\xff\xfe"]', "not valid UTF-8"),
])
def test_refused_payload_gets_nak_then_close(server, raw, clients, payload, detail):
    good = clients(server)
    client = raw(server).login()
    client.sock.sendall(command_frame(command2code["getversion"], payload))
    ok, reason = client.reply()
    assert not ok
    assert reason.startswith("invalid command or garbled data: ") and detail in reason
    assert client.at_eof()
    assert_works(good)


def test_pickle_in_authenticate_is_refused(server, raw):
    client = raw(server)
    client.read_banner()
    client.sock.sendall(command_frame(command2code["authenticate"],
                                      b'[{"__pickle__": "x"}]'))
    assert client.reply() == (False, "invalid credentials")
    assert client.at_eof()


# -- events ----------------------------------------------------------------------------

def test_event_mask_and_unmask(server, clients):
    client = clients(server, eventmask=["message"])
    bus = controller_of(server).bus
    bus.emit("message", ["nicos", 0.0, 20, "masked\n", None, None])
    bus.emit("status", [0, 1])
    assert client.next_event(("message", "status")) == ("status", [0, 1])
    client.ask("eventunmask", ["message"])
    bus.emit("message", ["nicos", 0.0, 20, "shown\n", None, None])
    assert client.next_event(("message", "status"))[1][3] == "shown\n"


def test_mask_applies_to_events_queued_before_the_event_connection(server, raw):
    client = raw(server).login()
    bus = controller_of(server).bus
    bus.emit("message", ["nicos", 0.0, 20, "early\n", None, None])
    bus.emit("status", [0, 7])
    assert client.ask("eventmask", ["message", "no-such-event"]) == (True, None)
    events = client.open_events()
    code, payload, _ = read_event(events)
    assert (code, decode(payload)) == (event2code["status"], [0, 7])


def test_no_events_before_login(server, raw):
    client = raw(server)
    client.read_banner()
    controller_of(server).bus.emit("status", [0, 1])  # nobody logged in: nobody gets it
    ok, _ = client.authenticate("bob", client.encrypt(PASSWORDS["bob"]))
    assert ok
    events = client.open_events()
    controller_of(server).bus.emit("status", [0, 2])
    code, payload, _ = read_event(events)
    assert decode(payload) == [0, 2]


def test_client_not_reading_events_is_dropped(make_server, raw, clients):
    server = make_server(event_queue_limit=20)
    good = clients(server)
    slow = raw(server).login()
    slow.open_events(rcvbuf=4096)
    wait_for_event_sockets(server)
    bus = controller_of(server).bus
    text = "x" * 65536 + "\n"
    sent = 0
    for sent in range(1, 5000):
        bus.emit("message", ["nicos", 0.0, 20, text, None, str(sent)])
        # The good client keeps up: it has each event before the next is emitted.
        assert good.next_event(("message",))[1][5] == str(sent)
        if server.logged_in == 1:
            break
    assert server.wait_until(lambda: server.logged_in == 1, WAIT), "slow client not dropped"
    assert slow.at_eof()
    bus.emit("status", [0, sent])
    assert good.next_event(("status",)) == ("status", [0, sent])
    assert_works(good)


def test_quit_acks_and_closes_both_sockets(server, raw, clients):
    good = clients(server)
    client = raw(server).login()
    events = client.open_events()
    wait_for_event_sockets(server)
    client.send("quit")
    assert recv_exact(client.sock, 1) == b"\x06"
    assert client.at_eof()
    assert client.at_eof(events)
    assert server.wait_until(lambda: server.logged_in == 1, WAIT)
    assert_works(good)


def test_vanished_client_leaves_the_script_alone(server, raw):
    client = raw(server).login("alice")
    client.open_events()
    wait_for_event_sockets(server)
    assert client.ask("queue", "long.py", "sleep(100)")[0]
    controller_of(server).status = (0, 1)
    client.close()
    assert server.wait_until(lambda: server.logged_in == 0, WAIT)
    calls = controller_of(server).calls
    assert [calls.get_nowait()[0] for _ in range(calls.qsize())] == ["queue"]


def test_shutdown_flushes_events_and_disconnects(make_server, clients):
    server = make_server()
    client = clients(server)
    wait_for_event_sockets(server)
    bus = controller_of(server).bus
    for line in range(50):
        bus.emit("status", [0, line])
    server.shutdown()
    received = []
    while True:
        item = client.next_event()
        if item[0] == "disconnected":
            break
        if item[0] == "status":
            received.append(item[1][1])
    assert received == list(range(50))
    assert server.wait_until(lambda: server.logged_in == 0, WAIT)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=WAIT).recv(1)


def test_shutdown_closes_pending_connections(make_server, raw):
    server = make_server()
    waiting = raw(server, send_id=False)
    assert server.wait_until(lambda: server.pending == 1, WAIT)
    server.shutdown()
    assert waiting.at_eof()


def test_ipv6_listener(make_server, clients):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = make_server(host="::1")
    except OSError as err:
        pytest.skip(f"IPv6 loopback unusable: {err}")
    client = RecordingClient()
    client.connect("::1", server.port, "bob", PASSWORDS["bob"], timeout=WAIT)
    try:
        assert_works(client)
        wait_for_event_sockets(server)
    finally:
        client.disconnect()


def test_port_property_and_double_start(server):
    assert server.port > 0
    assert server.address == ("127.0.0.1", server.port)
    with pytest.raises(RuntimeError):
        server.start()
