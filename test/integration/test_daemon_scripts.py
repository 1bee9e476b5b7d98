"""Running scripts: event sequences, errors, break/continue, stop, emergency, sleep."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from daemonproc import Event, EventRecorder, Gate

from nicos.clients.base import DaemonError

INFO, INPUT, WARNING, ERROR = 20, 26, 30, 40


def index_of(events: list[Event], name: str, predicate: Callable = lambda d: True) -> int:
    for position, event in enumerate(events):
        if event.name == name and predicate(event.data):
            return position
    raise AssertionError(f"no {name} event in {events}")


def request_dict(reqid: str, name: str | None, script: str, user: str = "admin") -> dict:
    return {"reqid": reqid, "name": name, "script": script, "user": user}


def loop_script(gate: Gate, before: str = "print('looping')\n") -> tuple[str, range]:
    """A script that waits for *gate*, then prints 'released'; and the lines of its loop."""
    first = before.count("\n") + 1
    return before + gate.wait_code() + "print('released')\n", range(first, first + 2)


def start_loop(client: EventRecorder, gate: Gate, name: str = "loop.py") -> tuple[str, range]:
    """Start the loop script and return once it is inside its loop."""
    code, lines = loop_script(gate)
    reqid = client.run(code, name)
    client.wait_for("message", lambda d: d[3] == "looping\n" and d[5] == reqid)
    client.wait_for("status", lambda d: d[0] == 0 and d[1] in lines)
    return reqid, lines


def stopped_message(client: EventRecorder, since: int, reqid: str, user: str = "admin") -> None:
    texts = [m[3] for m in client.messages(since, reqid)]
    assert f"Script stopped by {user}\n" in texts, texts
    assert "released\n" not in texts


# -- normal runs ------------------------------------------------------------------------


def test_event_sequence_of_a_script(client: EventRecorder) -> None:
    since = client.mark()
    code = "print('first')\nprint('second')\nx = 1\nprint('third')"
    reqid = client.run(code, "seq.py")
    text = code + "\n"  # multi-line scripts are normalized to end with a newline
    done = client.wait_done(reqid)
    events = client.events(("request", "processing", "status", "message", "done"), since,
                           done.seq + 1)
    expected = request_dict(reqid, "seq.py", text)
    i_request = index_of(events, "request", lambda d: d.get("reqid") == reqid)
    assert events[i_request].data == expected
    i_processing = index_of(events, "processing", lambda d: d.get("reqid") == reqid)
    assert events[i_processing].data == expected
    i_running = index_of(events, "status", lambda d: d[0] == 0)
    prints = [i for i, e in enumerate(events)
              if e.name == "message" and e.data[2] == INFO and e.data[5] == reqid
              and e.data[3] in ("first\n", "second\n", "third\n")]
    assert [events[i].data[3] for i in prints] == ["first\n", "second\n", "third\n"]
    i_idle = max(i for i, e in enumerate(events) if e.name == "status" and e.data[0] == -1)
    assert i_request < i_processing < i_running < prints[0]
    assert prints[-1] < i_idle < len(events) - 1
    assert events[-1].name == "done"
    assert done.data == {**expected, "success": True}
    # Every status event is a pair of ints; between start and end it says running.
    statuses = [e.data for e in events[i_running:i_idle] if e.name == "status"]
    assert all(isinstance(s, list) and len(s) == 2 for s in statuses)
    assert all(s[0] == 0 for s in statuses), statuses
    # The script is echoed at level INPUT, and all its messages carry its reqid.
    echoes = [e.data for e in events if e.name == "message" and e.data[2] == INPUT]
    assert len(echoes) == 1 and echoes[0][5] == reqid
    # as upstream: header with user, time, 20 dashes and the name; the text; 51 dashes
    assert re.fullmatch(r">>> \[admin \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] -{20} seq\.py\n"
                        + re.escape(text) + "-{51}\n", echoes[0][3]), echoes[0][3]
    assert index_of(events, "message", lambda d: d[2] == INPUT) < prints[0]
    for i in prints:
        record = events[i].data
        assert isinstance(record[0], str) and isinstance(record[1], float)
        assert record[4] is None
    assert client.ask("getstatus")["status"][0] == -1


def test_single_line_expression_shows_value(client: EventRecorder) -> None:
    since = client.mark()
    reqid = client.run("6 * 7")
    done = client.wait_done(reqid)
    assert done.data == {**request_dict(reqid, None, "6 * 7"), "success": True}
    messages = client.messages(since, reqid)
    assert "42\n" in [m[3] for m in messages if m[2] == INFO]
    echoes = [m[3] for m in messages if m[2] == INPUT]
    assert len(echoes) == 1
    assert re.fullmatch(r">>> \[admin \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]  6 \* 7\n", echoes[0])


def test_exception_in_script(client: EventRecorder) -> None:
    since = client.mark()
    code = "print('before')\nraise ValueError('boom')\nprint('after')\n"
    reqid = client.run(code, "raise.py")
    done = client.wait_done(reqid)
    assert done.data["success"] is False
    messages = client.messages(since, reqid)
    texts = [m[3] for m in messages]
    assert "before\n" in texts and "after\n" not in texts
    errors = [m for m in messages if m[2] == ERROR]
    assert len(errors) == 1, messages
    assert "ValueError" in errors[0][3] and "boom" in errors[0][3]
    trace = errors[0][4]
    assert isinstance(trace, str) and "ValueError: boom" in trace
    assert 'File "<script>", line 2' in trace
    # The error is reported before done.
    assert client.wait_for("message", lambda d: d[2] == ERROR, since=since).seq < done.seq
    assert client.ask("getstatus")["status"][0] == -2


@pytest.mark.parametrize("code", [
    "x = (\nprint('never')\n",
    "print('never'",
    "import time\ntime.sleep(1)\nprint('never')\n",
])
def test_unrunnable_script(client: EventRecorder, code: str) -> None:
    since = client.mark()
    reqid = client.run(code, "bad.py")
    done = client.wait_done(reqid)
    assert done.data["success"] is False
    messages = client.messages(since, reqid)
    assert [m for m in messages if m[2] == ERROR], messages
    assert "never\n" not in [m[3] for m in messages]
    # The daemon keeps working.
    again = client.run("print('still alive')")
    assert client.wait_done(again).data["success"] is True
    assert "still alive\n" in [m[3] for m in client.messages(since, again)]


def test_syntax_error_message_names_it(client: EventRecorder) -> None:
    since = client.mark()
    reqid = client.run("x = (\n", "syntax.py")
    assert client.wait_done(reqid).data["success"] is False
    errors = [m[3] for m in client.messages(since, reqid) if m[2] == ERROR]
    assert any("SyntaxError" in text for text in errors), errors


def test_scripts_share_a_namespace(client: EventRecorder) -> None:
    first = client.run("shared_value = 41\nprint('set')\n")
    assert client.wait_done(first).data["success"] is True
    since = client.mark()
    second = client.run("print(shared_value + 1)\nprint('read')\n")
    assert client.wait_done(second).data["success"] is True
    assert "42\n" in [m[3] for m in client.messages(since, second)]


def test_bare_except_cannot_swallow_stop(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    code = ("print('looping')\ntry:\n    " + gate.wait_code().replace("\n    ", "\n        ")
            + "except:\n    print('swallowed')\nprint('released')\n")
    reqid = client.run(code, "bare.py")
    client.wait_for("message", lambda d: d[3] == "looping\n" and d[5] == reqid)
    client.wait_for("status", lambda d: d[0] == 0 and d[1] in (3, 4))
    since = client.mark()
    client.ask("stop", 2)
    assert client.wait_done(reqid).data["success"] is False
    texts = [m[3] for m in client.messages(since, reqid)]
    assert "swallowed\n" not in texts and "released\n" not in texts


# -- break and continue ---------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2, 3, 5])
def test_break_and_continue(client: EventRecorder, gates: Callable[[], Gate],
                            level: int) -> None:
    gate = gates()
    since = client.mark()
    reqid, lines = start_loop(client, gate)
    assert client.ask("break", level) is None
    paused = client.wait_status(1)
    assert paused.data[1] in lines, paused
    assert client.ask("getstatus")["status"] == paused.data
    assert client.ask("continue") is None
    resumed = client.wait_status(0)
    assert resumed.data[1] in lines
    gate.open()
    done = client.wait_done(reqid)
    assert done.data["success"] is True
    texts = [m[3] for m in client.messages(since, reqid)]
    for expected in ("Pause requested by admin\n", "Script paused by admin\n",
                     "Script continued by admin\n", "released\n"):
        assert expected in texts, (expected, texts)
    # After pausing: running again, then idle, then done.
    after = [e.data for e in client.events("status", paused.seq, done.seq)]
    assert after[0][0] == 1 and after[-1][0] == -1
    assert [s for s in after if s[0] not in (1, 0, -1)] == []


def test_break_in_sleep_pauses_at_once(client: EventRecorder) -> None:
    reqid = client.run("print('napping')\nsleep(3600)\nprint('woke')\n")
    client.wait_for("status", lambda d: d == [0, 2])
    client.ask("break", 2)
    assert client.wait_status(1).data == [1, 2]
    client.ask("stop", 2)
    assert client.wait_done(reqid).data["success"] is False


# -- stop ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2, 5])
def test_stop_running(client: EventRecorder, gates: Callable[[], Gate], level: int) -> None:
    gate = gates()
    since = client.mark()
    reqid, _ = start_loop(client, gate)
    assert client.ask("stop", level) is None
    done = client.wait_done(reqid)
    assert done.data["success"] is False
    stopped_message(client, since, reqid)
    statuses = [e.data for e in client.events("status", since, done.seq)]
    assert statuses[-1][0] == -2
    assert any(s[0] == 2 for s in statuses), statuses  # "stopping" was reported
    assert client.ask("getstatus")["status"][0] == -2


def test_stop_while_paused(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    reqid, _ = start_loop(client, gate)
    client.ask("break", 2)
    client.wait_status(1)
    assert client.ask("stop", 2) is None
    done = client.wait_done(reqid)
    assert done.data["success"] is False
    stopped_message(client, since, reqid)
    assert client.ask("getstatus")["status"][0] == -2


def test_stop_removes_queued_requests(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    reqid, _ = start_loop(client, gate)
    queued = [client.run(f"print('queued {i}')") for i in range(2)]
    client.ask("stop", 2)
    blocked = client.wait_for("blocked", since=since)
    assert sorted(blocked.data) == sorted(queued)
    done = client.wait_done(reqid)
    assert done.data["success"] is False
    # A request queued after the stop runs normally.
    later = client.run("print('after the stop')")
    assert client.wait_done(later).data["success"] is True
    processed = [e.data["reqid"] for e in client.events("processing", since)]
    assert processed == [reqid, later]


def test_stop_interrupts_sleep_at_once(client: EventRecorder) -> None:
    since = client.mark()
    reqid = client.run("print('long nap')\nsleep(3600)\nprint('woke')\n")
    client.wait_for("status", lambda d: d == [0, 2])
    client.ask("stop", 2)
    # Within the default wait of 10 s, not after the hour.
    done = client.wait_done(reqid)
    assert done.data["success"] is False
    stopped_message(client, since, reqid)
    assert "woke\n" not in [m[3] for m in client.messages(since, reqid)]


def test_stop_by_another_user_names_them(connect: Callable[..., EventRecorder],
                                         client: EventRecorder,
                                         gates: Callable[[], Gate]) -> None:
    other = connect("user")
    client.ask("unlock")  # admin queued before: make sure control is free for "user"
    gate = gates()
    code, lines = loop_script(gate)
    since = other.mark()
    reqid = other.run(code, "users.py")
    other.wait_for("status", lambda d: d[0] == 0 and d[1] in lines)
    other.ask("stop", 2)
    assert other.wait_done(reqid).data["success"] is False
    stopped_message(other, since, reqid, user="user")
    other.ask("unlock")


# -- emergency -----------------------------------------------------------------------------


def test_emergency_while_running(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    reqid, _ = start_loop(client, gate)
    queued = client.run("print('never runs')")
    assert client.ask("emergency") is None
    blocked = client.wait_for("blocked", since=since)
    assert queued in blocked.data
    done = client.wait_done(reqid)
    assert done.data["success"] is False
    messages = client.messages(since)
    assert any(m[2] >= WARNING and "Immediate stop requested by admin" in m[3]
               for m in messages), messages
    assert "released\n" not in [m[3] for m in messages]
    assert queued not in [e.data["reqid"] for e in client.events("processing", since)]


def test_emergency_while_paused(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    reqid, _ = start_loop(client, gate)
    client.ask("break", 2)
    client.wait_status(1)
    assert client.ask("emergency") is None
    done = client.wait_done(reqid)
    assert done.data["success"] is False
    assert "released\n" not in [m[3] for m in client.messages(since, reqid)]
    assert client.ask("getstatus")["status"][0] == -2


def test_emergency_in_sleep(client: EventRecorder) -> None:
    reqid = client.run("sleep(3600)")
    client.wait_for("status", lambda d: d == [0, 1])
    client.ask("emergency")
    assert client.wait_done(reqid).data["success"] is False


def test_emergency_while_idle(client: EventRecorder, connect: Callable[..., EventRecorder]) -> None:
    guest = connect("guest")  # allowed to everybody
    since = client.mark()
    assert guest.ask("emergency") is None
    client.wait_for("message", lambda d: "Immediate stop requested by guest" in d[3])
    assert client.ask("getstatus")["status"][0] in (-1, -2)
    # Nothing was started by it, and scripts run normally afterwards.
    after = client.run("print('after emergency')")
    assert client.wait_done(after).data["success"] is True
    assert [e.data["reqid"] for e in client.events(("processing", "done"), since)] == \
        [after, after]


def test_guest_cannot_control_scripts(connect: Callable[..., EventRecorder],
                                      client: EventRecorder,
                                      gates: Callable[[], Gate]) -> None:
    guest = connect("guest")
    with pytest.raises(DaemonError, match="needs user level"):
        guest.run("print('guest script')")
    gate = gates()
    reqid, _ = start_loop(client, gate)
    for command, args in (("break", (2,)), ("stop", (2,)), ("exec", ("x = 1",)),
                          ("eval", ("1", False))):
        with pytest.raises(DaemonError, match="needs user level"):
            guest.ask(command, *args)
    assert guest.ask("getstatus")["status"][0] == 0
    gate.open()
    assert client.wait_done(reqid).data["success"] is True


def test_user_lacks_control_while_admin_holds_it(connect: Callable[..., EventRecorder],
                                                 client: EventRecorder,
                                                 gates: Callable[[], Gate]) -> None:
    user = connect("user")
    gate = gates()
    reqid, _ = start_loop(client, gate)  # queueing gives the admin control
    with pytest.raises(DaemonError, match="you do not have control"):
        user.ask("stop", 2)
    gate.open()
    assert client.wait_done(reqid).data["success"] is True
    client.ask("unlock")
    assert user.ask("exec", "controlled_by_user = 1") is None
    user.ask("unlock")
