"""The script controller in-process: queue, events, break/continue/stop, update, watch.

Events are collected from the real EventBus (decoded from the frames it
produces), and tests wait for specific events, never for time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nicos.protocols.daemon import (
    BREAK_AFTER_STEP,
    ERROR,
    INPUT,
    STATUS_IDLE,
    STATUS_IDLEEXC,
    STATUS_INBREAK,
    STATUS_RUNNING,
    code2event,
)
from nicos.protocols.daemon.framing import EventDecoder
from nicos_daemon.common import CommandError, User
from nicos_daemon.controller import ScriptController
from nicos_daemon.events import EventBus

ALICE = User("alice", 10)
WAIT = 10.0


class Recorder:
    """An EventBus subscriber that decodes what it receives."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.cond = threading.Condition()
        self.decoder = EventDecoder()
        self.cursor = 0

    def push(self, event: str, frame: bytes) -> None:
        from nicos.protocols.daemon.codec import decode

        with self.cond:
            for code, payload, _ in self.decoder.feed(frame):
                self.events.append((code2event[code], decode(payload)))
            self.cond.notify_all()

    def wait_for(self, name: str, pred: Callable[[Any], bool] = lambda data: True) -> Any:
        with self.cond:
            while True:
                for index in range(self.cursor, len(self.events)):
                    event, data = self.events[index]
                    if event == name and pred(data):
                        self.cursor = index + 1
                        return data
                if not self.cond.wait(WAIT):
                    raise AssertionError(f"no {name} event; got {self.events[self.cursor:]}")

    def of(self, name: str) -> list[Any]:
        with self.cond:
            return [data for event, data in self.events if event == name]

    def texts(self) -> list[str]:
        return [m[3] for m in self.of("message")]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ScriptController, Recorder]]:
    bus = EventBus()
    recorder = Recorder()
    bus.subscribe(recorder)
    controller = ScriptController(bus, SimpleNamespace(updateinterval=0.02, datadir=tmp_path))
    controller.start_threads()
    yield controller, recorder
    controller.shutdown()


def test_script_run_event_sequence(setup: tuple[ScriptController, Recorder]) -> None:
    controller, rec = setup
    reqid = controller.queue("hello", "print('one')\nprint('two')\n", ALICE)
    done = rec.wait_for("done")
    assert done["reqid"] == reqid and done["success"] is True
    names = [event for event, _ in rec.events]
    assert names[:2] == ["request", "processing"]
    assert names.index("done") == len(names) - 1
    statuses = rec.of("status")
    assert statuses[0] == [STATUS_RUNNING, -1] and statuses[-1][0] == STATUS_IDLE
    assert all(s[0] == STATUS_RUNNING for s in statuses[:-1])  # no idle between blocks
    messages = rec.of("message")
    assert messages[0][2] == INPUT and "hello" in messages[0][3]
    assert [m[3] for m in messages[1:]] == ["one\n", "two\n"]
    assert all(m[5] == reqid for m in messages)
    assert controller.getmessages("*")[-1][3] == "two\n"


def test_error_shows_user_traceback_only(setup: tuple[ScriptController, Recorder]) -> None:
    controller, rec = setup
    controller.queue("", "x = 1\ndef f():\n    raise ValueError('boom')\nf()\n", ALICE)
    assert rec.wait_for("done")["success"] is False
    error = [m for m in rec.of("message") if m[2] == ERROR][0]
    assert error[3] == "ValueError - boom\n"
    assert 'File "<script>", line 4, in <module>' in error[4]
    assert "raise ValueError('boom')" in error[4]
    assert "controller.py" not in error[4] and "pyctl" not in error[4]
    assert rec.of("status")[-1][0] == STATUS_IDLEEXC


def test_syntax_error_and_time_sleep_are_refused(setup: tuple[ScriptController,
                                                               Recorder]) -> None:
    controller, rec = setup
    controller.queue("", "x = (\n", ALICE)
    assert rec.wait_for("done")["success"] is False
    controller.queue("", "import time\ntime.sleep(1)\n", ALICE)
    assert rec.wait_for("done")["success"] is False
    texts = rec.texts()
    assert any(t.startswith("SyntaxError in script, line 1") for t in texts)
    assert any("instead of 'time.sleep'" in t for t in texts)


def test_break_continue_and_stop(setup: tuple[ScriptController, Recorder]) -> None:
    controller, rec = setup
    gate = threading.Event()
    controller.namespace["gate"] = gate
    controller.queue("", "gate.wait()\nx = 1\nwhile True:\n    x += 1\n", ALICE)
    rec.wait_for("status", lambda s: s == [STATUS_RUNNING, -1])
    controller.break_(1, ALICE)
    gate.set()
    assert rec.wait_for("status", lambda s: s[0] == STATUS_INBREAK) == [STATUS_INBREAK, 2]
    with pytest.raises(CommandError, match="already paused"):
        controller.break_(1, ALICE)
    controller.continue_(ALICE)
    rec.wait_for("status", lambda s: s[0] == STATUS_RUNNING)
    controller.stop(2, ALICE)
    done = rec.wait_for("done")
    assert done["success"] is False
    assert "Script stopped by alice\n" in rec.texts()
    with pytest.raises(CommandError, match="no script is running"):
        controller.stop(2, ALICE)


def test_sleep_is_interrupted_by_stop_and_pauses_on_step_break(
        setup: tuple[ScriptController, Recorder]) -> None:
    controller, rec = setup
    controller.queue("", "sleep(3600)\n", ALICE)
    rec.wait_for("status", lambda s: s == [STATUS_RUNNING, -1])
    rec.wait_for("status", lambda s: s == [STATUS_RUNNING, 1])
    controller.break_(BREAK_AFTER_STEP, ALICE)
    # the pause is reported at the script's line, not inside sleep()
    assert rec.wait_for("status", lambda s: s[0] == STATUS_INBREAK) == [STATUS_INBREAK, 1]
    controller.stop(BREAK_AFTER_STEP, ALICE)
    assert rec.wait_for("done")["success"] is False


def test_emergency_stops_script_and_runs_stop_functions(
        setup: tuple[ScriptController, Recorder]) -> None:
    controller, rec = setup
    stopped = []
    controller.register_emergency_stop(lambda: stopped.append("motor"))
    controller.emergency(ALICE)  # idle
    assert stopped == ["motor"]
    controller.queue("", "sleep(3600)\n", ALICE)
    queued = controller.queue("", "print('never')\n", ALICE)
    rec.wait_for("status", lambda s: s == [STATUS_RUNNING, -1])
    controller.emergency(ALICE)
    assert rec.wait_for("done")["success"] is False
    assert stopped == ["motor", "motor"]
    assert [queued] in rec.of("blocked")


def test_queue_order_unqueue_rearrange_update(setup: tuple[ScriptController,
                                                            Recorder]) -> None:
    controller, rec = setup
    gate = threading.Event()
    controller.namespace.update(gate=gate, order=[])
    first = controller.queue("", "gate.wait()\norder.append(0)\n", ALICE)
    a = controller.queue("a", "order.append('a')\n", ALICE)
    b = controller.queue("b", "order.append('b')\n", ALICE)
    c = controller.queue("c", "order.append('c')\n", ALICE)
    d = controller.queue("d", "order.append('d')\n", ALICE)
    rec.wait_for("processing", lambda r: r["reqid"] == first)
    controller.unqueue(b, ALICE)
    assert rec.wait_for("blocked") == [b]
    controller.rearrange([first, d, c, a])
    assert rec.wait_for("rearranged") == [d, c, a]
    controller.update("order.append('C')\n", "", c, ALICE)
    assert rec.wait_for("updated")["script"] == "order.append('C')\n"
    with pytest.raises(CommandError, match="Inconsistency"):
        controller.rearrange([a, c])
    gate.set()
    rec.wait_for("done", lambda r: r["reqid"] == a)
    assert controller.namespace["order"] == [0, "d", "C", "a"]


def test_update_of_running_script(setup: tuple[ScriptController, Recorder]) -> None:
    controller, rec = setup
    gate = threading.Event()
    controller.namespace.update(gate=gate, seen=[])
    controller.queue("", "seen.append(1)\ngate.wait()\nseen.append(3)\n", ALICE)
    rec.wait_for("status", lambda s: s == [STATUS_RUNNING, 2])
    with pytest.raises(CommandError, match="differs in already executed part"):
        controller.update("seen.append(9)\ngate.wait()\nseen.append(3)\n", "", None, ALICE)
    controller.update("seen.append(1)\ngate.wait()\nseen.append('new')\n", "fix", None, ALICE)
    gate.set()
    rec.wait_for("done")
    assert controller.namespace["seen"] == [1, "new"]


def test_exec_eval_watch(setup: tuple[ScriptController, Recorder]) -> None:
    controller, rec = setup
    controller.exec_("value = 21\nprint('exec output')\n", ALICE)
    assert "exec output\n" in rec.texts()
    assert controller.eval_("value * 2", False) == 42
    assert controller.eval_("value * 2", True) == "42"
    assert controller.eval_("1/0", True) == "<cannot be evaluated: division by zero>"
    with pytest.raises(CommandError, match="exception raised while evaluating"):
        controller.eval_("1/0", False)
    with pytest.raises(CommandError, match="cannot be sent"):
        controller.eval_("object()", False)
    controller.watch(["value", "value + 1:grp"])
    first = rec.wait_for("watch")
    assert first == {"value:default": "21", "value + 1:grp": "22"}
    controller.exec_("value = 5", ALICE)
    assert rec.wait_for("watch")["value:default"] == "5"
    # no new watch event without a change: the next one follows the next change
    controller.exec_("value = 6", ALICE)
    assert rec.wait_for("watch")["value:default"] == "6"
    assert len(rec.of("watch")) == 3
    controller.unwatch(["*:grp"])
    assert rec.wait_for("watch") == {"value:default": "6"}


def test_queries(setup: tuple[ScriptController, Recorder]) -> None:
    controller, rec = setup
    controller.exec_("my_variable = 1", ALICE)
    assert "my_variable" in controller.complete("my_va", "my_va")
    status = controller.getstatus()
    assert set(status) == {"status", "script", "scriptname", "eta", "watch", "requests",
                           "mode", "setups", "devices", "devicefailures"}
    assert controller.gettrace() == ""
    path = Path(controller.transfer(b"\x00\x01data"))
    assert path.read_bytes() == b"\x00\x01data"


def test_instrument_session_in_the_script_namespace(
        setup: tuple[ScriptController, Recorder]) -> None:
    from nicos.core.status import BUSY
    from nicos_daemon.instrument import start_instrument

    controller, rec = setup
    session = start_instrument(controller, "demo")
    status = controller.getstatus()
    assert "demo" in status["setups"][1] and {"mono", "sth", "det"} <= set(status["devices"])
    controller.queue("", "maw(mono, 2.1)\nprint(read(mono))\n", ALICE)
    assert rec.wait_for("done")["success"] is True
    assert abs(session.devices["mono"].read() - 2.1) < 1e-6
    assert any(key == "mono/value" for key, _ in controller.getcachekeys("mono/"))
    # emergency stop reaches a motor moving in a running script
    controller.queue("", "maw(sth, 80)\n", ALICE)
    rec.wait_for("cache", lambda c: c[1] == "sth/status" and c[3].startswith(f"({BUSY},"))
    controller.emergency(ALICE)
    assert rec.wait_for("done")["success"] is False
    position = session.devices["sth"].read()
    assert 0 < position < 80
    assert session.devices["sth"].status()[0] != BUSY
    session.shutdown()


def test_stop_escalates_to_emergency_for_a_script_stuck_in_c(
        setup: tuple[ScriptController, Recorder]) -> None:
    controller, rec = setup
    stopped: list[str] = []
    controller.register_emergency_stop(lambda: stopped.append("motor"))
    gate = threading.Lock()
    gate.acquire()
    controller.namespace["gate"] = gate
    # acquire() blocks in C, called straight from the script
    controller.queue("", "print('blocking')\ngate.acquire()\nprint('never')\n", ALICE)
    rec.wait_for("status", lambda s: s == [STATUS_RUNNING, 2])
    controller.stop(2, ALICE)
    controller.stop(2, ALICE)
    assert stopped == []  # immediate, not yet emergency
    stuck = rec.wait_for("message", lambda m: "does not respond to the immediate stop" in m[3])
    assert "a call at script line 2" in stuck[3]
    controller.stop(2, ALICE)
    assert stopped == ["motor"]
    rec.wait_for("message", lambda m: "does not respond to the emergency stop" in m[3])
    controller.stop(2, ALICE)  # a fourth repeats the emergency stop
    assert stopped == ["motor", "motor"]
    gate.release()
    assert rec.wait_for("done")["success"] is False
    texts = rec.texts()
    assert "never\n" not in texts and "Script stopped by alice\n" in texts
    escalations = [t for t in texts if t.startswith("Stop requested")]
    assert escalations == [
        "Stop requested by alice\n",
        "Stop requested again by alice: escalated to immediate stop, at the next line of "
        "the script, its cleanup code included\n",
        "Stop requested a third time by alice: escalated to emergency stop, all devices "
        "are stopped\n",
        "Stop requested again by alice: emergency stop repeated\n",
    ]


def test_time_sleep_is_interruptible_in_the_script_thread_only(tmp_path: Path) -> None:
    real_sleep = time.sleep
    bus = EventBus()
    rec = Recorder()
    bus.subscribe(rec)
    controller = ScriptController(bus, SimpleNamespace(updateinterval=0.02, datadir=tmp_path))
    controller.start_threads()
    try:
        assert time.sleep is not real_sleep
        # elsewhere it is time.sleep, errors included
        time.sleep(0)
        with pytest.raises(ValueError, match="non-negative"):
            time.sleep(-1)
        with pytest.raises(TypeError):
            time.sleep("1")
        controller.queue("", "import time as t\nt.sleep(3600)\nprint('woke')\n", ALICE)
        rec.wait_for("status", lambda s: s == [STATUS_RUNNING, 2])
        controller.stop(BREAK_AFTER_STEP, ALICE)
        assert rec.wait_for("done")["success"] is False
        assert "woke\n" not in rec.texts()
    finally:
        controller.shutdown()
    assert time.sleep is real_sleep


class HoldBeforeFirstLine:
    """Holds the script thread in the window between taking a request from the
    queue and running its first line (at its 'processing' event)."""

    def __init__(self, controller: ScriptController) -> None:
        self.controller = controller
        self.taken = threading.Event()
        self.release = threading.Event()
        controller.bus.subscribe(self)

    def push(self, event: str, frame: bytes) -> None:
        if event == "processing" and \
                threading.current_thread() is self.controller._script_thread:
            self.taken.set()
            assert self.release.wait(WAIT)


@pytest.mark.parametrize("how", ["stop", "emergency"])
def test_stop_between_taking_and_starting_a_request_is_not_lost(
        setup: tuple[ScriptController, Recorder], how: str) -> None:
    controller, recorder = setup
    hold = HoldBeforeFirstLine(controller)
    controller.queue("", "print('must not run')\n", ALICE)
    assert hold.taken.wait(WAIT)
    if how == "stop":
        controller.stop(BREAK_AFTER_STEP, ALICE)
    else:
        controller.emergency(ALICE)
    hold.release.set()
    done = recorder.wait_for("done")
    assert done["success"] is False
    assert "must not run\n" not in recorder.texts()
    assert any("Script stopped by alice" in text for text in recorder.texts())


def test_finish_between_taking_and_starting_a_request_is_not_lost(
        setup: tuple[ScriptController, Recorder]) -> None:
    controller, recorder = setup
    hold = HoldBeforeFirstLine(controller)
    controller.namespace["finish_asked"] = controller.consume_finish_request
    controller.queue("", "print('finish asked:', finish_asked())\n", ALICE)
    assert hold.taken.wait(WAIT)
    controller.finish(ALICE)
    hold.release.set()
    assert recorder.wait_for("done")["success"] is True
    assert "finish asked: True\n" in recorder.texts()
