"""Every command of the protocol reference §6.3 once, with the shape of its reply."""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonproc import DaemonProcess, EventRecorder, Gate

from nicos.clients.base import DaemonError
from nicos.protocols.daemon import command2code

STATUS_KEYS = {"status", "script", "scriptname", "eta", "watch", "requests", "mode",
               "setups", "devices", "devicefailures"}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_request_dict(request: Any) -> None:
    assert isinstance(request, dict), request
    assert isinstance(request["reqid"], str) and isinstance(request["script"], str)
    assert request["name"] is None or isinstance(request["name"], str)
    assert isinstance(request["user"], str)


def check_status_shape(status: Any) -> None:
    assert isinstance(status, dict)
    assert set(status) == STATUS_KEYS, set(status) ^ STATUS_KEYS
    assert isinstance(status["status"], list) and len(status["status"]) == 2
    assert all(is_int(x) for x in status["status"]), status["status"]
    assert isinstance(status["script"], str)
    assert isinstance(status["scriptname"], str)
    eta = status["eta"]
    assert isinstance(eta, list) and len(eta) == 2 and is_int(eta[0]) and is_number(eta[1])
    assert isinstance(status["watch"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in status["watch"].items())
    assert isinstance(status["requests"], list)
    for request in status["requests"]:
        check_request_dict(request)
    assert status["mode"] in ("master", "slave", "simulation", "maintenance")
    setups = status["setups"]
    assert isinstance(setups, list) and len(setups) == 2
    assert all(isinstance(s, list) and all(isinstance(x, str) for x in s) for s in setups)
    assert isinstance(status["devices"], list)
    assert all(isinstance(d, str) for d in status["devices"])
    assert isinstance(status["devicefailures"], dict)
    assert all(isinstance(k, str) and isinstance(v, str)
               for k, v in status["devicefailures"].items())


def check_record(record: Any) -> None:
    assert isinstance(record, list) and len(record) == 6, record
    logger, created, level, text, exc_text, reqid = record
    assert isinstance(logger, str)
    assert is_number(created)
    assert is_int(level)
    assert isinstance(text, str) and text.endswith("\n")
    assert exc_text is None or isinstance(exc_text, str)
    assert reqid is None or isinstance(reqid, str)


def run_to_end(client: EventRecorder, code: str, name: str = "") -> dict[str, Any]:
    reqid = client.run(code, name)
    return client.wait_done(reqid).data


def start_waiting(client: EventRecorder, gate: Gate, before: str = "",
                  name: str = "") -> tuple[str, str]:
    """Start a script that waits for *gate*; returns (reqid, normalized text) once
    it is inside the waiting loop."""
    code = before + gate.wait_code() + "print('through the gate')\n"
    reqid = client.run(code, name)
    client.wait_for("processing", lambda d: d["reqid"] == reqid)
    first = before.count("\n") + 1
    client.wait_for("status", lambda d: d[0] == 0 and d[1] in (first, first + 1))
    return reqid, code


# -- simple queries -------------------------------------------------------------------


def test_getversion(client: EventRecorder) -> None:
    version = client.ask("getversion")
    assert isinstance(version, str) and version == client.banner["daemon_version"]


def test_getstatus_idle(client: EventRecorder) -> None:
    status = client.ask("getstatus")
    check_status_shape(status)
    assert status["status"][0] in (-1, -2)
    assert status["requests"] == []


def test_getstatus_after_script(client: EventRecorder) -> None:
    code = "x_after = 1\nprint('after')\n"
    assert run_to_end(client, code, "after.py")["success"] is True
    status = client.ask("getstatus")
    check_status_shape(status)
    assert status["status"][0] == -1
    assert status["script"] == code
    assert status["scriptname"] == "after.py"


def test_wrong_number_of_arguments(client: EventRecorder) -> None:
    with pytest.raises(DaemonError, match="invalid number of arguments"):
        client.ask("getstatus", 1)
    with pytest.raises(DaemonError, match="invalid number of arguments"):
        client.ask("eval")
    # The connection stays in step.
    assert client.ask("getversion") == client.banner["daemon_version"]


def test_getmessages(client: EventRecorder) -> None:
    token = f"token-{uuid.uuid4().hex}"
    assert run_to_end(client, f"print({token!r})\nprint('second line')\n")["success"]
    everything = client.ask("getmessages", "*")
    assert isinstance(everything, list)
    for record in everything:
        check_record(record)
    assert any(record[3] == f"{token}\n" and record[2] == 20 for record in everything)
    last_two = client.ask("getmessages", "2")
    assert last_two == everything[-2:]
    assert client.ask("getmessages", 1) == everything[-1:]
    assert client.ask("getmessages", "0") == everything


def test_getscript(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    reqid, code = start_waiting(client, gate, before="print('getscript')\n")
    assert client.ask("getscript") == code
    gate.open()
    assert client.wait_done(reqid).data["success"] is True
    assert isinstance(client.ask("getscript"), str)


def test_gettrace(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    reqid, _ = start_waiting(client, gate)
    trace = client.ask("gettrace")
    assert isinstance(trace, str)
    assert "<script>" in trace, trace
    gate.open()
    client.wait_done(reqid)
    assert isinstance(client.ask("gettrace"), str)


def test_complete(client: EventRecorder) -> None:
    client.ask("exec", "zz_unique_value = 1\ndef zz_unique_func(x):\n    pass\n"
                       "def zz_unique_noargs():\n    pass\n")
    found = client.ask("complete", "zz_uni", "zz_uni")
    assert isinstance(found, list) and all(isinstance(x, str) for x in found)
    assert found == sorted(set(found))
    # As upstream (rlcompleter): callables get "(", callables without parameters "()",
    # so that the CLI can insert the call syntax.
    assert found == ["zz_unique_func(", "zz_unique_noargs()", "zz_unique_value"]
    assert "print(" in client.ask("complete", "pri", "pri")
    assert client.ask("complete", "x = zz_unique_v", "zz_unique_v") == ["zz_unique_value"]
    assert client.ask("complete", "", "qqq_nothing_like_this") == []


def test_gethistory_and_getcachekeys(client: EventRecorder) -> None:
    history = client.ask("gethistory", "x/value", 0, 2_000_000_000)
    assert isinstance(history, list)
    assert all(isinstance(p, list) and len(p) == 2 for p in history)
    assert isinstance(client.ask("gethistory", "x/value", "0", "2000000000", None), list)
    keys = client.ask("getcachekeys", "x/")
    assert isinstance(keys, list)
    # Upstream sends a second reply here (bug); the next reply must be our own.
    assert client.ask("getversion") == client.banner["daemon_version"]


def test_getdataset(client: EventRecorder) -> None:
    assert isinstance(client.ask("getdataset", "*"), list)
    single = client.ask("getdataset", 0)
    assert single is None or isinstance(single, dict)
    assert client.ask("getversion") == client.banner["daemon_version"]


# -- connection management ------------------------------------------------------------


def test_eventmask_eventunmask_keepalive_unlock(client: EventRecorder) -> None:
    assert client.ask("eventmask", ["livedata", "no-such-event"]) is None
    assert client.ask("eventunmask", ["livedata", "no-such-event"]) is None
    assert client.ask("keepalive") is None
    assert client.ask("unlock") is None


def test_quit(client: EventRecorder) -> None:
    since = client.mark()
    assert client.ask("quit") is None
    client.wait_for("disconnected", since=since)
    assert not client.connected


# -- code execution -------------------------------------------------------------------


def test_exec(client: EventRecorder) -> None:
    since = client.mark()
    assert client.ask("exec", "exec_value = 6 * 7\nprint('exec says', exec_value)") is None
    assert client.ask("eval", "exec_value", False) == 42
    message = client.wait_for("message", lambda d: d[3] == "exec says 42\n", since=since)
    check_record(message.data)
    assert message.data[2] == 20
    # The echo of the code comes before its output, at level INPUT.
    echoes = [m for m in client.messages(since) if m[2] == 26]
    assert echoes and "exec_value = 6 * 7" in echoes[0][3]


def test_exec_error_is_a_message(client: EventRecorder) -> None:
    since = client.mark()
    assert client.ask("exec", "1/0") is None  # ACK anyway, like upstream
    error = client.wait_for("message", lambda d: d[2] == 40, since=since)
    assert "ZeroDivisionError" in error.data[3]
    since = client.mark()
    assert client.ask("exec", "def broken(:\n    pass\n") is None
    error = client.wait_for("message", lambda d: d[2] == 40, since=since)
    assert "SyntaxError" in error.data[3]


def test_eval(client: EventRecorder) -> None:
    assert client.ask("eval", "1+1", False) == 2
    assert client.ask("eval", "1+1", True) == "2"
    assert client.ask("eval", "None", False) is None
    assert client.ask("eval", "(1, 'a', [2.5])", False) == [1, "a", [2.5]]
    assert client.ask("eval", "{1: 2}", False) == {"1": 2}
    assert client.ask("eval", "'x' * 3", True) == "'xxx'"
    assert client.ask("eval", "1/0", True).startswith("<cannot be evaluated: ")
    with pytest.raises(DaemonError) as info:
        client.ask("eval", "1/0", False)
    assert "division by zero" in str(info.value)
    with pytest.raises(DaemonError):
        client.ask("eval", "undefined_name_qq", False)
    # Values JSON cannot carry give a NAK, never a "__pickle__" object.
    with pytest.raises(DaemonError):
        client.ask("eval", "b'bytes'", False)
    assert client.ask("eval", "b'bytes'", True) == "b'bytes'"
    # A dict key that upstream clients would unpickle is renamed or refused.
    try:
        value = client.ask("eval", "{'__pickle__': 'x'}", False)
    except DaemonError:
        pass
    else:
        assert "__pickle__" not in json.dumps(value)
    assert client.eval("2**10") == 1024


def test_eval_sees_script_namespace(client: EventRecorder) -> None:
    assert run_to_end(client, "shared_from_script = 'yes'\nprint('set')\n")["success"]
    assert client.ask("eval", "shared_from_script", False) == "yes"


# -- scripts and their control --------------------------------------------------------


def test_start_and_queue_reply(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    reqid = client.ask("start", "", "print('started')")
    assert isinstance(reqid, str)
    assert str(uuid.UUID(reqid)) == reqid
    done = client.wait_done(reqid).data
    assert done["success"] is True and done["name"] is None
    gate = gates()
    running, _ = start_waiting(client, gate)
    with pytest.raises(DaemonError, match="a script is running"):
        client.ask("start", "second", "print(2)")
    queued = client.ask("queue", "second", "print(2)")
    assert isinstance(queued, str) and queued != running
    status = client.ask("getstatus")
    check_status_shape(status)
    assert status["status"][0] == 0
    assert status["requests"] == [{"reqid": queued, "name": "second", "script": "print(2)",
                                   "user": "admin"}]
    gate.open()
    assert client.wait_done(queued).data["success"] is True


@pytest.mark.parametrize("command, args", [
    ("break", (2,)), ("continue", ()), ("stop", (2,)), ("finish", ()),
    ("update", ("print(1)\nprint(2)\n", "why")),
])
def test_script_commands_when_idle(client: EventRecorder, command: str, args: tuple) -> None:
    with pytest.raises(DaemonError, match="no script is running"):
        client.ask(command, *args)


def test_break_continue_stop_finish_replies(client: EventRecorder,
                                            gates: Callable[[], Gate]) -> None:
    gate = gates()
    reqid, _ = start_waiting(client, gate)
    with pytest.raises(DaemonError, match="script is not paused"):
        client.ask("continue")
    assert client.ask("finish") is None
    assert client.ask("break", 2) is None
    client.wait_status(1)
    with pytest.raises(DaemonError, match="script is already paused"):
        client.ask("break", 2)
    assert client.ask("continue") is None
    client.wait_status(0)
    assert client.ask("stop", 2) is None
    assert client.wait_done(reqid).data["success"] is False


def test_unqueue_rearrange_update_replies(client: EventRecorder,
                                          gates: Callable[[], Gate]) -> None:
    gate = gates()
    running, _ = start_waiting(client, gate)
    a = client.run("print('a')", "a")
    b = client.run("print('b')", "b")
    assert client.ask("rearrange", [b, a]) is None
    assert client.ask("update", "print('a2')", "", a) is None
    assert client.ask("unqueue", a) is None
    with pytest.raises(DaemonError):
        client.ask("unqueue", a)  # no longer queued
    assert client.ask("unqueue", "*") is None
    gate.open()
    assert client.wait_done(running).data["success"] is True


def test_emergency_idle_reply(client: EventRecorder) -> None:
    assert client.ask("emergency") is None
    assert client.ask("getstatus")["status"][0] in (-1, -2)


@pytest.mark.parametrize("command, args", [("debug", ("print(1)",)), ("debuginput", ("c",))])
def test_debug_commands(client: EventRecorder, command: str, args: tuple) -> None:
    # Remote debugging is not offered; the refusal must keep the connection in step.
    with pytest.raises(DaemonError):
        client.ask(command, *args)
    assert client.ask("getversion") == client.banner["daemon_version"]


def test_level_table(connect: Callable[..., EventRecorder]) -> None:
    """Per-command minimum levels (protocol reference §6.4 recommendation)."""
    guest, user = connect("guest"), connect("user")
    for command, args in (("queue", ("", "print(1)")), ("exec", ("x = 1",)),
                          ("eval", ("1", False)), ("watch", (["1"],)), ("unlock", ())):
        with pytest.raises(DaemonError, match="needs user level USER"):
            guest.ask(command, *args)
    with pytest.raises(DaemonError, match="needs user level ADMIN"):
        user.ask("gettrace")
    for command, args in (("getstatus", ()), ("getmessages", ("1",)), ("getscript", ()),
                          ("complete", ("", "pri")), ("keepalive", ()),
                          ("eventmask", (["livedata"],))):
        guest.ask(command, *args)
    assert guest.ask("getversion") == guest.banner["daemon_version"]


def test_simulate(client: EventRecorder) -> None:
    try:
        result = client.ask("simulate", "", "print(1)")
    except DaemonError:
        pass  # "not available" until there is an instrument layer
    else:
        assert result is None
    assert client.ask("getversion") == client.banner["daemon_version"]


# -- transfer: raw bytes, which only upstream clients send (as a pickle) ---------------


def upstream_json(args: list[Any]) -> bytes:
    """Arguments encoded exactly like the upstream JSON client does it."""
    def default(obj: Any) -> Any:
        return {"__pickle__": pickle.dumps(obj, 2).decode("latin1")}
    return json.dumps(args, default=default).encode()


@pytest.mark.parametrize("content", [b"hello \x00\xff binary\n" * 10, b""])
def test_transfer(daemon: DaemonProcess, content: bytes) -> None:
    account = daemon.accounts["user"]
    with daemon.raw() as conn:
        ok, reply = conn.login(account.name, account.password)
        assert ok, reply
        ok, path = conn.command_payload(command2code["transfer"], upstream_json([content]))
        assert ok, path
        assert isinstance(path, str)
        assert Path(path).read_bytes() == content
        # still in step
        assert conn.command("getversion")[0]
