"""CommandHandler dispatch, without sockets: checks, their order, replies."""

import json
import logging
import pickle
from typing import Any

import pytest

from nicos.protocols.daemon import ADMIN, GUEST, USER, code2command, command2code
from nicos.protocols.daemon.codec import decode, encode
from nicos.protocols.daemon.framing import ReplyDecoder
from nicos_daemon.access import ControlArbiter
from nicos_daemon.common import CommandError, User
from nicos_daemon.handler import COMMANDS, CommandHandler, command_help

ALICE = User("alice", ADMIN)
BOB = User("bob", USER)
CAROL = User("carol", USER)
GUESTUSER = User("guest", GUEST)


class StubController:
    """Records calls; behaviour per method can be replaced through ``results``."""

    def __init__(self) -> None:
        self.status = (-1, -1)
        self.calls: list[tuple[str, tuple]] = []
        self.results: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args: Any) -> Any:
            self.calls.append((name, args))
            result = self.results.get(name)
            if isinstance(result, BaseException):
                raise result
            if callable(result):
                return result(*args)
            return result
        return method


class StubEvents:
    def __init__(self) -> None:
        self.masked: set[str] = set()

    def mask(self, names: list[str]) -> None:
        self.masked |= set(names)

    def unmask(self, names: list[str]) -> None:
        self.masked -= set(names)


@pytest.fixture
def controller() -> StubController:
    return StubController()


@pytest.fixture
def arbiter() -> ControlArbiter:
    return ControlArbiter()


def make_handler(controller, arbiter, user=BOB) -> CommandHandler:
    return CommandHandler(controller, arbiter, user, StubEvents(), peer="127.0.0.1",
                          version="9.9")


def run(handler: CommandHandler, name: str, *args: Any, payload: bytes | None = None):
    if payload is None:
        payload = encode(list(args))
    return handler.handle(command2code[name], payload)


def frame_value(frame: bytes) -> tuple[bool, Any]:
    [(ok, payload)] = ReplyDecoder().feed(frame)
    return ok, decode(payload) if payload else None


# -- the table -------------------------------------------------------------------

def test_every_protocol_command_has_a_documented_handler():
    assert set(COMMANDS) == set(command2code)
    helps = command_help()
    for name in command2code:
        assert helps[name], name


@pytest.mark.parametrize("name, level", [
    ("getversion", GUEST), ("getstatus", GUEST), ("getmessages", GUEST),
    ("emergency", GUEST), ("quit", GUEST), ("eventmask", GUEST), ("keepalive", GUEST),
    ("queue", USER), ("start", USER), ("exec", USER), ("eval", USER), ("stop", USER),
    ("transfer", USER), ("unlock", USER), ("watch", USER),
    ("gettrace", ADMIN), ("debug", ADMIN), ("debuginput", ADMIN),
])
def test_levels_follow_the_recommendation(name, level):
    assert COMMANDS[name].level == level


# -- replies -----------------------------------------------------------------------

def test_value_reply_and_ack(controller, arbiter):
    handler = make_handler(controller, arbiter)
    reply = run(handler, "getversion")
    assert (reply.ok, reply.value, reply.close) == (True, "9.9", False)
    assert frame_value(reply.frame) == (True, "9.9")
    reply = run(handler, "keepalive")
    assert reply.frame == b"\x06"


def test_unknown_code_keeps_connection(controller, arbiter):
    reply = make_handler(controller, arbiter).handle(0x7777, b"[]")
    assert (reply.ok, reply.close) == (False, False)
    assert reply.value == "unknown command code 0x7777"


@pytest.mark.parametrize("payload, detail", [
    (b'[{"__pickle__": "x"}]', "pickled data is refused"),
    (b'["\xff"]', "not valid UTF-8"),
    (b"[1, 2", "garbled JSON"),
    (b'{"a": 1}', "must be a JSON array"),
])
def test_garbled_payload_is_refused_and_closes(controller, arbiter, payload, detail):
    reply = run(make_handler(controller, arbiter), "getversion", payload=payload)
    assert reply.ok is False and reply.close is True
    assert reply.value.startswith("invalid command or garbled data: ")
    assert detail in reply.value


def test_wrong_argument_count(controller, arbiter):
    handler = make_handler(controller, arbiter)
    assert run(handler, "getstatus", 1).value == "invalid number of arguments"
    assert run(handler, "queue", "x").value == "invalid number of arguments"
    assert controller.calls == []


@pytest.mark.parametrize("name, args, message", [
    ("queue", [1, "code"], "wrong argument type for name: expected str"),
    ("eval", ["1", 1], "wrong argument type for stringify: expected bool"),
    ("stop", [True], "wrong argument type for level: expected int from 1 to 5"),
    ("stop", [9], "wrong argument type for level: expected int from 1 to 5"),
    ("watch", [["a", 1]], "wrong argument type for exprs: expected list of str"),
    ("getmessages", [-1], "wrong argument type for n"),
    ("getmessages", ["abc"], "wrong argument type for n"),
    ("gethistory", ["k", "soon", 1], "wrong argument type for fromtime"),
    ("update", ["c", "r", 5], "wrong argument type for reqid: expected str or null"),
    ("transfer", ["text"], "wrong argument type for content: expected bytes"),
])
def test_wrong_argument_types(controller, arbiter, name, args, message):
    controller.status = (0, 1)
    reply = run(make_handler(controller, arbiter), name, *args)
    assert reply.ok is False and reply.close is False
    assert reply.value.startswith(message)
    assert controller.calls == []


def test_level_refusal_names_the_level(controller, arbiter):
    guest = make_handler(controller, arbiter, GUESTUSER)
    assert run(guest, "queue", "", "x").value == "queue needs user level USER"
    assert run(guest, "eval", "1", False).value == "eval needs user level USER"
    assert run(make_handler(controller, arbiter, BOB), "gettrace").value == \
        "gettrace needs user level ADMIN"
    assert run(guest, "getstatus").ok
    assert run(guest, "emergency").ok
    assert [name for name, _ in controller.calls] == ["getstatus", "emergency"]


def test_level_is_checked_before_types_and_control(controller, arbiter):
    arbiter.take(ALICE)
    reply = run(make_handler(controller, arbiter, GUESTUSER), "stop", "wrong")
    assert reply.value == "stop needs user level USER"


def test_script_state_checks(controller, arbiter):
    handler = make_handler(controller, arbiter)
    assert run(handler, "stop", 2).value == "no script is running"
    assert run(handler, "continue").value == "no script is running"
    controller.status = (-2, -1)
    assert run(handler, "break", 2).value == "no script is running"
    controller.status = (0, 3)
    assert run(handler, "start", "", "x").value == "a script is running"
    assert run(handler, "stop", 2).ok
    assert controller.calls == [("stop", (2, BOB))]


def test_queue_passes_the_user_and_returns_the_reqid(controller, arbiter):
    controller.results["queue"] = "id-1"
    reply = run(make_handler(controller, arbiter), "queue", "scan.py", "x = 1\n")
    assert reply.value == "id-1"
    assert controller.calls == [("queue", ("scan.py", "x = 1\n", BOB))]


def test_command_error_becomes_nak(controller, arbiter):
    controller.results["unqueue"] = CommandError("script doesn't exist")
    reply = run(make_handler(controller, arbiter), "unqueue", "nope")
    assert (reply.ok, reply.value, reply.close) == (False, "script doesn't exist", False)


def test_unexpected_exception_is_logged_and_answered_once(controller, arbiter, caplog):
    controller.results["getscript"] = ZeroDivisionError("boom")
    with caplog.at_level(logging.ERROR, logger="nicos_daemon.handler"):
        reply = run(make_handler(controller, arbiter), "getscript")
    assert reply.value == "internal error executing command: ZeroDivisionError"
    assert reply.close is False
    assert any(record.exc_info for record in caplog.records)


def test_unencodable_result_is_an_error_reply(controller, arbiter):
    controller.results["getstatus"] = {"x": object()}
    reply = run(make_handler(controller, arbiter), "getstatus")
    assert reply.ok is False
    assert reply.value.startswith("cannot send the result: ")
    assert frame_value(reply.frame)[0] is False


def test_pickle_key_in_results_is_never_sent(controller, arbiter):
    controller.results["eval_"] = {"__pickle__": "evil"}
    reply = run(make_handler(controller, arbiter), "eval", "x", False)
    assert b"__pickle__" not in reply.frame


def test_optional_arguments(controller, arbiter):
    handler = make_handler(controller, arbiter)
    run(handler, "gethistory", "x/value", "100", 200)
    run(handler, "gethistory", "x/value", 100.5, 200, None)
    run(handler, "gethistory", "x/value", 1, 2, 5)
    run(handler, "simulate", "n", "code")
    run(handler, "simulate", "n", "code", "sim-1")
    run(handler, "getmessages", "*")
    run(handler, "getmessages", 5)
    run(handler, "getdataset", "*")
    assert controller.calls == [
        ("gethistory", ("x/value", 100.0, 200.0, None)),
        ("gethistory", ("x/value", 100.5, 200.0, None)),
        ("gethistory", ("x/value", 1.0, 2.0, 5.0)),
        ("simulate", ("n", "code", None, BOB)),
        ("simulate", ("n", "code", "sim-1", BOB)),
        ("getmessages", ("*",)),
        ("getmessages", (5,)),
        ("getdataset", ("*",)),
    ]


def test_transfer_accepts_the_upstream_bytes_pickle_only_there(controller, arbiter):
    controller.results["transfer"] = "/data/transfer/nicos123"
    # What an upstream JSON client sends for bytes (built here, never unpickled).
    wrapped = {"__pickle__": pickle.dumps(b"\x00\xffdata", protocol=2).decode("latin-1")}
    payload = json.dumps([wrapped]).encode()
    handler = make_handler(controller, arbiter)
    reply = handler.handle(command2code["transfer"], payload)
    assert reply.value == "/data/transfer/nicos123"
    assert controller.calls == [("transfer", (b"\x00\xffdata",))]
    reply = handler.handle(command2code["exec"], payload)
    assert reply.close is True and "pickled data is refused" in reply.value


def test_debug_is_not_supported(controller, arbiter):
    handler = make_handler(controller, arbiter, ALICE)
    assert run(handler, "debug", "x = 1").value == "remote debugging is not supported"
    assert run(handler, "debuginput", "c").value == "remote debugging is not supported"


def test_authenticate_after_login_closes(controller, arbiter):
    reply = run(make_handler(controller, arbiter), "authenticate", {"login": "x"})
    assert (reply.ok, reply.value, reply.close) == (False, "already logged in", True)


def test_quit_acks_closes_and_releases_control(controller, arbiter):
    handler = make_handler(controller, arbiter)
    assert run(handler, "exec", "x = 1").ok
    assert arbiter.holder == BOB
    reply = run(handler, "quit")
    assert (reply.ok, reply.frame, reply.close) == (True, b"\x06", True)
    assert arbiter.holder is None


def test_eventmask_reaches_the_filter(controller, arbiter):
    handler = make_handler(controller, arbiter)
    assert run(handler, "eventmask", ["livedata", "watch"]).ok
    assert run(handler, "eventunmask", ["watch"]).ok
    assert handler.events.masked == {"livedata"}


# -- control arbitration -----------------------------------------------------------

def test_first_user_takes_control_equal_level_shares(controller, arbiter):
    bob, carol = make_handler(controller, arbiter, BOB), make_handler(controller, arbiter, CAROL)
    assert run(bob, "watch", ["x"]).ok
    assert arbiter.holder == BOB
    assert run(carol, "watch", ["y"]).ok
    assert arbiter.holder == BOB


def test_admin_script_locks_users_out_until_unlock(controller, arbiter):
    controller.results["queue"] = "id-1"
    alice, bob = make_handler(controller, arbiter, ALICE), make_handler(controller, arbiter)
    assert run(alice, "exec", "x = 1").ok
    assert arbiter.holder is None  # admins do not take control by other commands
    assert run(alice, "queue", "", "x").ok
    assert arbiter.holder == ALICE
    controller.status = (0, 1)
    refusal = "you do not have control of the session (held by alice)"
    assert run(bob, "stop", 2).value == refusal
    assert run(bob, "queue", "", "y").value == refusal
    assert run(bob, "unlock").value == refusal
    assert run(bob, "emergency").ok  # never needs control
    assert run(alice, "unlock").ok
    assert run(bob, "stop", 2).ok
    assert arbiter.holder == BOB


def test_holder_may_unlock_itself(controller, arbiter):
    bob = make_handler(controller, arbiter)
    run(bob, "exec", "x = 1")
    assert run(bob, "unlock").ok
    assert arbiter.holder is None


def test_refused_queue_does_not_take_control(controller, arbiter):
    controller.results["start"] = CommandError("a script is running")
    arbiter.take(CAROL)
    reply = run(make_handler(controller, arbiter), "start", "", "x")
    assert reply.value == "a script is running"
    assert arbiter.holder == CAROL


def test_audit_log_names_user_and_command(controller, arbiter, caplog):
    controller.status = (0, 1)
    with caplog.at_level(logging.INFO, logger="nicos_daemon.handler"):
        run(make_handler(controller, arbiter), "stop", 2)
    assert "bob@127.0.0.1: stop 2" in caplog.text


def test_all_codes_map_to_commands():
    for code, name in code2command.items():
        assert COMMANDS[name].name == name, code
