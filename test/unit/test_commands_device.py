"""Device commands: argument checks in the user's words, limits before motion,
and stopping: a stop that reaches a waiting script stops the devices."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pyctl
from nicos.core import (
    BUSY,
    OK,
    DaemonHooks,
    LimitError,
    ManualClock,
    Session,
    UsageError,
)
from nicos.devices.generic import VirtualCoder, VirtualMotor, VirtualTemperature
from nicos.protocols.daemon import BREAK_AFTER_STEP

WAIT = 10.0


class Messages(logging.Handler):
    """Collects what the commands tell the user (logger "nicos")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@pytest.fixture
def messages() -> Iterator[Messages]:
    handler = Messages()
    logger = logging.getLogger("nicos")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def instrument(session: Session, speed: float = 0.0) -> dict[str, Any]:
    devices = {
        "mono": VirtualMotor("mono", session, abslimits=(0.5, 6), curvalue=2.0, unit="A",
                             speed=speed),
        "sth": VirtualMotor("sth", session, abslimits=(-90, 90), speed=speed),
        "T": VirtualTemperature("T", session, abslimits=(0, 400), ramp=0),
    }
    devices["coder"] = VirtualCoder("coder", session, motor=devices["sth"])
    session.devices.update(devices)
    session.namespace.update(devices)
    return devices


@pytest.fixture
def session() -> Iterator[Session]:
    session = Session(setup_paths=[])
    instrument(session)
    yield session
    session.shutdown()


def call(session: Session, command: str, *args: Any, **kwargs: Any) -> Any:
    return session.namespace[command](*args, **kwargs)


@pytest.mark.parametrize(("command", "args", "kwargs", "message"), [
    ("maw", ("mono",), {}, "maw() needs a device and a target, e.g. maw(mono, 2.5)"),
    ("maw", (), {}, "maw() needs a device and a target, e.g. maw(mono, 2.5)"),
    ("maw", (2.5, "mono"), {}, "maw() expected a device, got 2.5, e.g. maw(mono, 2.5)"),
    ("maw", ("mono", 1, "sth"), {}, "maw() got no target for sth, e.g. maw(mono, 2.5)"),
    ("maw", ("mno", 1), {}, "maw(): no device named 'mno' (did you mean 'mono'?)"),
    ("maw", ("coder", 1), {}, "maw(): coder cannot be moved (it is a VirtualCoder)"),
    ("maw", ("mono", 1), {"speed": 2}, "maw() has no option 'speed', e.g. maw(mono, 2.5)"),
    ("move", ("mono",), {}, "move() needs a device and a target, e.g. move(mono, 2.5)"),
    ("read", (5,), {}, "read() expected a device, got 5, e.g. read(mono)"),
    ("wait", (5,), {}, "wait() waits for devices, not for a time; use sleep(5) for that, "
                       "e.g. wait(mono, T)"),
    ("adjust", ("sth",), {}, "adjust() needs a device and the value it should read now, "
                             "e.g. adjust(sth, 0)"),
    ("adjust", ("T", 3), {}, "adjust(): T cannot be adjusted (it has no offset)"),
    ("adjust", ("sth", "zero"), {}, "adjust() needs a number as new value, got 'zero', "
                                    "e.g. adjust(sth, 0)"),
    ("stop", (1,), {}, "stop() expected a device, got 1, e.g. stop(mono)"),
    ("sleep", (), {}, "sleep() needs a time in seconds, e.g. sleep(10)"),
    ("sleep", ("x",), {}, "sleep() needs a time in seconds as a number >= 0, got 'x', "
                          "e.g. sleep(10)"),
    ("help", (1, 2), {}, "help() got too many arguments, e.g. help(maw)"),
    ("NewSetup", (1,), {}, "NewSetup() needs names as strings, got 1, e.g. NewSetup('demo')"),
    ("AddSetup", (), {}, "AddSetup() needs the names of setups, e.g. AddSetup('cryo')"),
])
def test_argument_errors_in_the_users_words(session: Session, command: str, args: tuple,
                                            kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError) as info:
        call(session, command, *args, **kwargs)
    assert str(info.value) == message


def test_maw_moves_and_read_and_status_report(session: Session, messages: Messages) -> None:
    mono = session.devices["mono"]
    assert call(session, "maw", mono, 2.5, "sth", -3) is None
    assert mono.read() == 2.5 and session.devices["sth"].read() == -3
    call(session, "read", mono, "sth")
    call(session, "status", "mono")
    assert messages.texts() == ["mono = 2.500 A", "sth = -3.000 deg", "mono: ok, idle"]


def test_all_targets_are_checked_before_anything_moves(session: Session) -> None:
    mono, sth = session.devices["mono"], session.devices["sth"]
    with pytest.raises(LimitError, match="sth: cannot move to 99.000 deg"):
        call(session, "move", mono, 3, sth, 99)
    assert mono.read() == 2.0 and mono.target is None
    assert sth.read() == 0.0


def test_read_and_status_of_everything_go_on_after_an_error(session: Session,
                                                            messages: Messages) -> None:
    session.devices["mono"].failmode = "communication"
    call(session, "read")
    texts = messages.texts()
    assert any("mono: no answer" in t for t in texts)
    assert "T = 295.00 K" in texts


def test_adjust_and_stop_report(session: Session, messages: Messages) -> None:
    call(session, "maw", "sth", 2)
    call(session, "adjust", "sth", 0)
    assert session.devices["sth"].read() == 0.0
    call(session, "stop", "sth")
    assert messages.texts()[-2:] == [
        "sth adjusted: 2.000 deg is now 0.000 deg (offset 2.000 deg)",
        "sth stopped at 0.000 deg"]


class StopOnFirstBreakpoint(DaemonHooks):
    """Acts like a stop request from a client reaching the waiting script."""

    class Stop(BaseException):
        pass

    def __init__(self) -> None:
        self.levels: list[int] = []

    def breakpoint(self, level: int) -> None:
        self.levels.append(level)
        raise self.Stop("stopped by tester")


def test_stop_while_waiting_stops_the_devices_and_says_where(messages: Messages) -> None:
    hooks = StopOnFirstBreakpoint()
    clock = ManualClock()
    session = Session(setup_paths=[], hooks=hooks, clock=clock)
    try:
        devices = instrument(session, speed=1.0)
        with pytest.raises(StopOnFirstBreakpoint.Stop):
            call(session, "maw", "mono", 5, "sth", 30)
        assert hooks.levels == [BREAK_AFTER_STEP]
        for name in ("mono", "sth"):
            assert devices[name].status() == (OK, "idle")
        clock.advance(100.0)
        assert devices["mono"].read() == 2.0 and devices["sth"].read() == 0.0
        assert messages.texts(logging.WARNING) == [
            "mono stopped at 2.000 A (script stopped)",
            "sth stopped at 0.000 deg (script stopped)"]
    finally:
        session.shutdown()


class PyctlHooks(DaemonHooks):
    """What the daemon has to provide, on a real pyctl controller: act on
    requests only in the script thread, sleep interruptibly."""

    def __init__(self, ctl: pyctl.Controller) -> None:
        self.ctl = ctl
        self.script_thread: threading.Thread | None = None

    def _in_script(self) -> bool:
        return threading.current_thread() is self.script_thread

    def breakpoint(self, level: int) -> None:
        if not self._in_script():
            return
        request, arg = self.ctl.pending()
        if request and arg[1] >= level:
            self.ctl.breakpoint()

    def sleep(self, seconds: float) -> None:
        if not self._in_script():
            super().sleep(seconds)
            return
        if self.ctl.wait(seconds, lambda request, arg: arg[1] >= BREAK_AFTER_STEP):
            self.ctl.breakpoint()


def test_break_and_stop_reach_a_script_waiting_in_maw(messages: Messages) -> None:
    paused = threading.Event()
    seen_while_paused: list[Any] = []
    busy = threading.Event()

    def on_break(frame: Any, arg: Any) -> None:
        seen_while_paused.append(session.devices["sth"].status()[0])
        paused.set()
        ctl.wait_for_continue()

    ctl = pyctl.Controller(on_break, break_only_in_filename="<script>")

    class BusyWatcher(PyctlHooks):
        def emit(self, event: str, data: Any) -> None:
            if event == "cache" and data[1] == "sth/status" and str(BUSY) in data[3]:
                busy.set()

    hooks = BusyWatcher(ctl)
    session = Session(setup_paths=[], hooks=hooks)
    instrument(session, speed=1.0)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            ctl.start_exec(compile("maw(sth, 80)\n", "<script>", "exec"), session.namespace)
        except BaseException as err:  # noqa: BLE001 - inspected by the test
            outcome.append(err)

    script = threading.Thread(target=run)
    hooks.script_thread = script
    try:
        script.start()
        assert busy.wait(WAIT)
        ctl.set_break(("break", BREAK_AFTER_STEP, "tester"))
        assert paused.wait(WAIT)
        assert seen_while_paused == [BUSY]  # paused inside maw, the motor moving on
        ctl.set_continue(("continue", "tester"))
        ctl.set_stop(("stop", BREAK_AFTER_STEP, "tester"))
        script.join(WAIT)
        assert not script.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], pyctl.ControlStop)
        sth = session.devices["sth"]
        assert sth.status() == (OK, "idle")
        position = sth.read()
        assert 0 < position < 80
        assert messages.texts(logging.WARNING) == [
            f"sth stopped at {position:.3f} deg (script stopped)"]
    finally:
        session.shutdown()
        script.join(WAIT)


def test_emergency_stop_halts_every_moving_device() -> None:
    registered: list[Callable[[], None]] = []

    class Hooks(DaemonHooks):
        def register_emergency_stop(self, func: Callable[[], None]) -> None:
            registered.append(func)

    clock = ManualClock()
    session = Session(setup_paths=[], hooks=Hooks(), clock=clock)
    try:
        devices = instrument(session, speed=1.0)
        devices["T"].ramp = 60.0
        call(session, "move", "mono", 5, "sth", 30, "T", 100)
        clock.advance(2.0)
        assert all(devices[n].status()[0] == BUSY for n in ("mono", "sth", "T"))
        assert len(registered) == 1  # one function for the whole session
        for func in registered:  # what the daemon does on "emergency"
            func()
        assert all(devices[n].status() == (OK, "idle") for n in ("mono", "sth", "T"))
        clock.advance(50.0)
        assert (devices["mono"].read(), devices["sth"].read(), devices["T"].read()) == \
            (4.0, 2.0, 293.0)
    finally:
        session.shutdown()
