"""Fuzzing the command dispatcher (hypothesis).

Three levels:

1. ``CommandHandler.handle`` with a *strict* controller that fails (AssertionError,
   which the handler would turn into an "internal error" reply) whenever it receives
   an argument the protocol does not allow. Any frame, from any user, in any script
   state gives exactly one well-formed reply, with one of the documented refusal
   reasons, and the level, script-state and control rules of docs/daemon.md hold.
2. The same frames against the real ``ScriptController`` (its threads not started, so
   nothing queued runs; ``exec`` and ``eval`` are left out because they run the fuzzed
   text as Python): never an internal error.
3. The real ``Server`` in-process on port 0: fuzzed byte streams before and after the
   login. Every complete command frame gets exactly one reply until the daemon closes
   the connection; it closes only after a refusal it has answered (or, for a bad start
   byte, without reply); nothing is left pending; the next login works.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import pickle
import re
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rsa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nicos.protocols.daemon import (
    ADMIN,
    GUEST,
    USER,
    code2command,
    command2code,
)
from nicos.protocols.daemon.codec import CodecError, decode, encode
from nicos.protocols.daemon.framing import (
    CommandDecoder,
    FrameError,
    FrameTooLarge,
    ReplyDecoder,
    command_frame,
    read_reply,
)
from nicos_daemon.access import ControlArbiter
from nicos_daemon.auth import make_authenticator
from nicos_daemon.auth.rsakeys import ServerKey
from nicos_daemon.common import User
from nicos_daemon.config import DaemonConfig
from nicos_daemon.events import EventBus
from nicos_daemon.handler import COMMANDS, CommandHandler
from nicos_daemon.server import Server

WAIT = 10.0  # seconds; a guard, never reached when the tests pass
# Fixed examples (derandomize) and no deadline: `make test` must not turn red on a
# busy machine or by the luck of the draw. Random, long exploration is `make fuzz`.
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ALICE = User("alice", ADMIN)
BOB = User("bob", USER)
CAROL = User("carol", USER)
GINA = User("gina", GUEST)

# -- the oracle: docs/daemon.md, "User levels" and "Control of the session" ----------------

GUEST_COMMANDS = {"getversion", "getstatus", "getmessages", "getscript", "gethistory",
                  "getcachekeys", "getdataset", "complete", "eventmask", "eventunmask",
                  "keepalive", "quit", "emergency", "history"}
ADMIN_COMMANDS = {"gettrace", "debug", "debuginput"}
CONTROL_COMMANDS = {"start", "queue", "unqueue", "rearrange", "update", "break", "continue",
                    "stop", "finish", "exec", "watch", "unwatch"}  # unlock: own rule
NEEDS_RUNNING = {"update", "break", "continue", "stop", "finish"}
NEEDS_IDLE = {"start"}


def required_level(name: str) -> int:
    if name in GUEST_COMMANDS:
        return GUEST
    if name in ADMIN_COMMANDS:
        return ADMIN
    return USER


# Every refusal the handler may send (docs/daemon.md, "Refusals and what they mean").
REFUSALS = [re.compile(pattern) for pattern in (
    r"unknown command code 0x[0-9a-f]{4}",
    r"invalid command or garbled data: .+",
    r"invalid number of arguments",
    r"\w+ needs user level (USER|ADMIN)",
    r"wrong argument type for \w+: expected .+",
    r"you do not have control of the session \(held by \w+\)",
    r"no script is running",
    r"a script is running",
    r"remote debugging is not supported",
    r"already logged in",
    r"the result of \d+ bytes exceeds the reply limit of \d+ bytes",
    r"controller refused: .*",  # StrictController's own CommandError, see below
)]


def is_documented_refusal(reason: Any) -> bool:
    return isinstance(reason, str) and any(p.fullmatch(reason) for p in REFUSALS)


# -- a controller that checks what it gets ------------------------------------------------

class StrictController:
    """The Controller interface; every method asserts the protocol's argument types.

    An assertion failing inside a command becomes an "internal error" reply, which the
    tests treat as a failure: the dispatcher let through something it should refuse.
    """

    def __init__(self) -> None:
        self.status = (-1, -1)

    @staticmethod
    def _user(user: Any) -> None:
        assert isinstance(user, User)

    def queue(self, name: str, code: str, user: User) -> str:
        assert type(name) is str and type(code) is str
        self._user(user)
        return "reqid-1"

    def start(self, name: str, code: str, user: User) -> str:
        assert self.status[0] < 0, "start while a script runs"
        return self.queue(name, code, user)

    def unqueue(self, reqid: str, user: User) -> None:
        assert type(reqid) is str
        self._user(user)

    def rearrange(self, ids: list[str]) -> None:
        assert type(ids) is list and all(type(i) is str for i in ids)
        assert len(ids) <= 10_000

    def update(self, code: str, reason: str, reqid: str | None, user: User) -> None:
        assert type(code) is str and type(reason) is str
        assert reqid is None or type(reqid) is str
        assert self.status[0] >= 0
        self._user(user)

    def _level(self, level: Any, user: User) -> None:
        assert type(level) is int and 1 <= level <= 5, level
        assert self.status[0] >= 0
        self._user(user)

    def break_(self, level: int, user: User) -> None:
        self._level(level, user)

    def stop(self, level: int, user: User) -> None:
        self._level(level, user)

    def continue_(self, user: User) -> None:
        assert self.status[0] >= 0
        self._user(user)

    def finish(self, user: User) -> None:
        assert self.status[0] >= 0
        self._user(user)

    def emergency(self, user: User) -> None:
        self._user(user)

    def exec_(self, code: str, user: User) -> None:
        assert type(code) is str
        self._user(user)

    def eval_(self, expr: str, stringify: bool) -> Any:
        assert type(expr) is str and type(stringify) is bool
        return repr(expr) if stringify else [expr, {"k": expr}]

    def watch(self, exprs: list[str]) -> None:
        assert type(exprs) is list and all(type(e) is str for e in exprs)

    unwatch = watch

    def getstatus(self) -> dict:
        return {"status": list(self.status), "script": "", "scriptname": "",
                "eta": [1, -1], "watch": {}, "requests": [], "mode": "master",
                "setups": [[], []], "devices": [], "devicefailures": {}}

    def getmessages(self, n: Any) -> list:
        assert (type(n) is int and n >= 0) or (type(n) is str and (n == "*" or n.isdigit()))
        return []

    def getscript(self) -> str:
        return ""

    def history(self, limit: Any) -> list:
        assert type(limit) is int and 1 <= limit <= 10_000
        return []

    def __getattr__(self, name: str) -> Any:
        # a command added after this test was written: accept anything, return None
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: None

    def gettrace(self) -> str:
        return ""

    def gethistory(self, key: str, fromtime: Any, totime: Any, interval: Any) -> list:
        assert type(key) is str
        for value in (fromtime, totime):
            assert type(value) is float and math.isfinite(value)
        assert interval is None or (type(interval) is float and math.isfinite(interval)
                                    and interval >= 0)
        return []

    def getcachekeys(self, query: str) -> list:
        assert type(query) is str
        if query == "refuse":
            from nicos_daemon.common import CommandError
            raise CommandError("controller refused: test")
        return []

    def getdataset(self, index: Any) -> Any:
        assert (type(index) is int) or index == "*"
        return None

    def complete(self, line: str, lastword: str) -> list[str]:
        assert type(line) is str and type(lastword) is str
        return [lastword]

    def transfer(self, content: bytes) -> str:
        assert type(content) is bytes and len(content) <= 16 * 1024 * 1024
        return "/tmp/x"

    def simulate(self, name: str, code: str, simid: str | None, user: User) -> None:
        assert type(name) is str and type(code) is str
        assert simid is None or type(simid) is str
        self._user(user)


class Events:
    def __init__(self) -> None:
        self.masked: set[str] = set()

    def mask(self, names: list[str]) -> None:
        assert all(type(n) is str for n in names)
        self.masked |= set(names)

    def unmask(self, names: list[str]) -> None:
        assert all(type(n) is str for n in names)
        self.masked -= set(names)


# -- frame strategies -------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(-2**64, 2**64),
    st.floats(), st.text(max_size=12), st.sampled_from(["*", "0", "12", "1e3", "nan", "-1",
                                                        "inf", "", " ", "refuse"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
TRANSFER_BYTES = {"__pickle__": pickle.dumps(b"\x00abc\xff", 2).decode("latin-1")}

VALID_BY_TYPE: dict[str, st.SearchStrategy] = {
    "str": st.text(max_size=20),
    "bool": st.booleans(),
    "list of str": st.lists(st.text(max_size=8), max_size=4),
    "str or null": st.one_of(st.none(), st.text(max_size=8)),
    "'*' or a number (str or int)": st.one_of(st.just("*"), st.integers(0, 10**6),
                                              st.integers(0, 99).map(str)),
    "a number or numeric str": st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                         st.integers(-10**6, 10**6),
                                         st.floats(-1e6, 1e6).map(repr)),
    "a number or null": st.one_of(st.none(), st.floats(0, 1e6), st.integers(0, 100)),
    "int or '*'": st.one_of(st.just("*"), st.integers(-5, 5)),
    "int from 1 to 5": st.integers(1, 5),
    "int from 1 to 10000": st.integers(1, 10_000),
    "anything": json_values,
}


@st.composite
def arguments(draw: Any, name: str | None) -> Any:
    """An argument list for command ``name``: mostly well-typed, sometimes not."""
    spec = COMMANDS.get(name) if name else None
    if spec is None or draw(st.integers(0, 9)) == 0:
        return draw(st.lists(json_values, max_size=5))
    count = spec.maxargs if spec.maxargs is not None else spec.minargs
    count = max(0, count + draw(st.sampled_from([0, 0, 0, 0, -1, 1])))
    if spec.maxargs is not None and spec.minargs < spec.maxargs and draw(st.booleans()):
        count = spec.minargs
    args = []
    for index in range(count):
        kind = spec.params[index][1].name if index < len(spec.params) else "anything"
        if kind.startswith("bytes"):
            args.append(draw(st.one_of(st.just(TRANSFER_BYTES), json_values)))
        elif draw(st.integers(0, 4)) == 0:
            args.append(draw(json_values))
        else:
            args.append(draw(VALID_BY_TYPE.get(kind, json_values)))
    return args


def _pickle_document() -> bytes:
    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("true",))
    return json.dumps([{"__pickle__": pickle.dumps(Evil(), 2).decode("latin-1")}]).encode()


EVIL_PICKLE = _pickle_document()
known_names = sorted(command2code)


@st.composite
def frames(draw: Any, names: list[str] = known_names) -> tuple[int, bytes]:
    """(command code, payload)."""
    if draw(st.integers(0, 9)) == 0:
        code = draw(st.integers(0, 0xFFFF))
    else:
        code = command2code[draw(st.sampled_from(names))]
    name = code2command.get(code)
    kind = draw(st.integers(0, 19))
    if kind == 0:
        payload = draw(st.binary(max_size=40))
    elif kind == 1:
        payload = draw(st.sampled_from([
            EVIL_PICKLE, b"", b"{}", b'"x"', b"null", b"[", b"\xef\xbb\xbf[]", b"[1,]",
            b"[" * 500 + b"]" * 500, b"[NaN]", b"[Infinity, -Infinity]", b'["\\ud800"]',
            b"[1" + b"0" * 5000 + b"]", json.dumps([TRANSFER_BYTES]).encode()]))
    elif kind == 2:
        payload = json.dumps(draw(json_values), allow_nan=True).encode()
    else:
        args = draw(arguments(name))
        try:
            payload = json.dumps(args, allow_nan=True).encode()
        except ValueError:
            payload = b"[]"
    return code, payload


# -- level 1: the handler with the strict controller ----------------------------------------

def single_reply(frame: bytes) -> tuple[bool, Any]:
    decoder = ReplyDecoder(max_payload=64 * 1024 * 1024)
    replies = decoder.feed(frame)
    assert len(replies) == 1 and decoder.buffered == 0, replies
    ok, payload = replies[0]
    return ok, (decode(payload) if payload else None)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([ALICE, BOB, CAROL, GINA]), frames()),
                min_size=1, max_size=8),
       st.sampled_from([(-1, -1), (-2, 3), (0, 1), (1, 2), (2, 5)]))
def test_any_frame_from_any_user_gets_one_documented_reply(
        sequence: list[tuple[User, tuple[int, bytes]]], status: tuple[int, int]) -> None:
    controller = StrictController()
    controller.status = status
    arbiter = ControlArbiter()
    handlers = {user: CommandHandler(controller, arbiter, user, Events(), peer="127.0.0.1",
                                     version="9.9")
                for user in (ALICE, BOB, CAROL, GINA)}
    for user, (code, payload) in sequence:
        holder_before = arbiter.holder
        reply = handlers[user].handle(code, payload)
        ok, value = single_reply(reply.frame)
        assert ok == reply.ok
        name = code2command.get(code)
        event("accepted" if ok else "refused: " + str(value).split(":")[0][:30])
        if not ok:
            assert is_documented_refusal(value), (name, payload[:80], value)
            if reply.close:
                assert value.startswith("invalid command or garbled data") or \
                    (name == "authenticate" and value == "already logged in")
            continue
        # accepted: the documented rules held
        assert name is not None and name != "authenticate"
        assert user.level >= required_level(name), (user, name)
        if name in NEEDS_RUNNING:
            assert status[0] >= 0
        if name in NEEDS_IDLE:
            assert status[0] < 0
        if name in CONTROL_COMMANDS and user.level < ADMIN and holder_before is not None:
            assert holder_before.level <= user.level, (user, name, holder_before)
        if name == "unlock" and holder_before is not None and user.level < ADMIN:
            assert holder_before.name == user.name
        assert reply.close == (name == "quit")


def test_strict_controller_is_really_strict() -> None:
    """The oracle works: a wrong type reaching the controller is an internal error."""
    handler = CommandHandler(StrictController(), ControlArbiter(), ALICE, Events())
    original = COMMANDS["getcachekeys"]
    reply = handler.handle(command2code["getcachekeys"], encode(["x"]))
    assert reply.ok
    controller = handler.controller
    controller.getcachekeys = lambda query: StrictController.getcachekeys(controller, 1)
    reply = handler.handle(command2code["getcachekeys"], encode(["x"]))
    assert not reply.ok and reply.value.startswith("internal error")
    assert COMMANDS["getcachekeys"] is original


# -- level 2: the real script controller ------------------------------------------------------

class _Config:
    updateinterval = 0.2

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir


@pytest.fixture(scope="module")
def real_controller() -> Iterator[Any]:
    from nicos_daemon.controller import ScriptController

    with tempfile.TemporaryDirectory() as tmp:
        controller = ScriptController(EventBus(), _Config(Path(tmp)))
        yield controller  # threads never started: queued scripts never run
        controller.shutdown(timeout=1.0)


SAFE_NAMES = [name for name in known_names if name not in ("exec", "eval")]


@FUZZ
@given(sequence=st.lists(st.tuples(st.sampled_from([ALICE, BOB, GINA]), frames(SAFE_NAMES)),
                         min_size=1, max_size=6))
def test_real_controller_never_gives_an_internal_error(
        real_controller: Any, sequence: list[tuple[User, tuple[int, bytes]]]) -> None:
    arbiter = ControlArbiter()
    for user, (code, payload) in sequence:
        if code2command.get(code) in ("exec", "eval"):
            continue
        handler = CommandHandler(real_controller, arbiter, user, Events())
        reply = handler.handle(code, payload)
        ok, value = single_reply(reply.frame)
        if not ok:
            assert isinstance(value, str) and value
            assert not value.startswith("internal error"), (code2command.get(code), value)
            assert not value.startswith("cannot send the result"), value


# -- level 3: the real server on loopback ----------------------------------------------------

MAX_COMMAND = 2048  # max_command_bytes; the config allows 1 KiB at least


@pytest.fixture(scope="module")
def server_key() -> ServerKey:
    # openssl takes ~0.1 s; pure-Python rsa.newkeys takes 1-10 s, which would be half
    # of these tests' time.
    openssl = shutil.which("openssl")
    if openssl is not None:
        result = subprocess.run([openssl, "genrsa", "-traditional", "2048"],
                                capture_output=True, timeout=60)
        if result.returncode == 0:
            return ServerKey(rsa.PrivateKey.load_pkcs1(result.stdout))
    return ServerKey(rsa.newkeys(2048)[1])


@pytest.fixture(scope="module")
def server(server_key: ServerKey) -> Iterator[Server]:
    config = DaemonConfig(host="127.0.0.1", port=0, authmethod="none",
                          max_command_bytes=1024, login_timeout=WAIT,
                          throttle_failures=1000, throttle_window=0.1, maxlogins=50)
    bus = EventBus()
    srv = Server(config, StrictController(), bus, server_key, make_authenticator(config))
    srv.start()
    yield srv
    srv.shutdown(flush_timeout=0.5)


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    return sock


def login(server: Server, sock: socket.socket) -> bytes:
    client_id = os.urandom(16)
    sock.sendall(client_id)
    ok, payload = read_reply(sock)
    assert ok and payload
    banner = decode(payload)
    key = rsa.PublicKey.load_pkcs1(base64.b64decode(banner["rsakey"]))
    passwd = "RSA:" + base64.b64encode(rsa.encrypt(b"any", key)).decode()
    sock.sendall(command_frame(command2code["authenticate"],
                               encode([{"login": "fuzz", "passwd": passwd, "display": ""}])))
    ok, payload = read_reply(sock)
    assert ok and decode(payload) == {"user_level": ADMIN}
    return client_id


def read_to_end(sock: socket.socket) -> bytes:
    data = bytearray()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def expected_replies(stream: bytes) -> tuple[int, bool]:
    """(number of replies, whether the daemon closes by itself) for a command stream
    sent after the login and followed by the client's end of stream."""
    decoder = CommandDecoder(max_payload=1024)
    count = 0
    try:
        # byte by byte: no frame is lost in the feed that also fails
        for index in range(len(stream)):
            for code, payload in decoder.feed(stream[index:index + 1]):
                count += 1
                name = code2command.get(code)
                if name is None:
                    continue  # unknown code: refused, the connection stays
                try:
                    args = decode(payload, allow_transfer_bytes=name == "transfer")
                except CodecError:
                    return count, True
                # garbled; authenticate after the login; quit (if without arguments)
                if type(args) is not list or name == "authenticate" or \
                        (name == "quit" and args == []):
                    return count, True
    except FrameTooLarge:
        return count + 1, True  # NAK with the reason, then close
    except FrameError:
        return count, True  # bad start byte: closed without a reply
    return count, False


whole_frames = frames().map(lambda f: command_frame(*f))
command_streams = st.lists(st.one_of(
    whole_frames, whole_frames, whole_frames, whole_frames, whole_frames, whole_frames,
    frames().map(lambda f: command_frame(*f)[:-1]),  # truncated
    st.builds(lambda code, n: struct.pack(">BHI", 5, code, n), st.integers(0, 0xFFFF),
              st.integers(1025, 0xFFFFFFFF)),  # oversize header
    st.binary(min_size=1, max_size=8),  # garbage
), min_size=1, max_size=8).map(b"".join)


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(stream=command_streams)
def test_server_answers_every_frame_or_closes(server: Server, stream: bytes) -> None:
    expected, closes = expected_replies(stream)
    event(f"{expected} replies expected, {'closed by the daemon' if closes else 'open'}")
    with connect(server) as sock:
        login(server, sock)
        # The daemon may have closed before all is sent (after quit, say).
        with contextlib.suppress(OSError):
            sock.sendall(stream)
            # Our end of the stream; without it a short garbage tail would wait for
            # more: the daemon checks the start byte once the 7-byte header is complete.
            sock.shutdown(socket.SHUT_WR)
        data = read_to_end(sock)
    decoder = ReplyDecoder(max_payload=1 << 26)
    replies = decoder.feed(data)
    assert decoder.buffered == 0, "a reply was cut off"
    assert len(replies) == expected, (stream[:200], replies)
    for ok, payload in replies:
        value = decode(payload) if payload else None
        assert ok or is_documented_refusal(value) or \
            re.fullmatch(r"command payload of \d+ bytes exceeds the limit of 1024", value), value
        if not ok:
            assert not value.startswith("internal error"), value
    assert server.wait_until(lambda: server.pending == 0 and server.logged_in == 0, WAIT)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(id_length=st.integers(0, 20), rest=st.one_of(
    command_streams,
    frames(["authenticate"]).map(lambda f: command_frame(*f)),
    st.binary(max_size=64)))
def test_server_before_login_answers_or_closes_and_never_logs_in(
        server: Server, id_length: int, rest: bytes) -> None:
    # A fresh id each time: one still in a handshake (the daemon lingers up to 1 s
    # after refusing) would make this connection a refused second one.
    client_id = os.urandom(16)
    with connect(server) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(client_id[:id_length] if id_length < 16 else client_id + rest)
            sock.shutdown(socket.SHUT_WR)
        data = read_to_end(sock)
    decoder = ReplyDecoder(max_payload=1 << 20)
    replies = decoder.feed(data)
    assert decoder.buffered == 0
    if id_length < 16:
        assert replies == []  # no id, no banner
    else:
        assert 1 <= len(replies) <= 2, replies
        ok, banner = replies[0]
        assert ok and decode(banner)["protocol_version"] == 24
        if len(replies) == 2:  # the refusal of the login
            ok, reason = replies[1]
            assert not ok and isinstance(decode(reason), str)
    assert server.wait_until(lambda: server.pending == 0 and server.logged_in == 0, WAIT)


def test_server_still_logs_in_after_the_fuzzing(server: Server) -> None:
    with connect(server) as sock:
        login(server, sock)
        sock.sendall(command_frame(command2code["getversion"], b"[]"))
        ok, payload = read_reply(sock)
        assert ok and isinstance(decode(payload), str)
