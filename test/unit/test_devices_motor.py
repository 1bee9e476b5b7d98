"""The virtual motor and its coder.

Most tests run on a ManualClock: time moves only when the test says so, so
positions are exact and nothing depends on how fast the machine is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nicos.core import (
    BUSY,
    ERROR,
    OK,
    CommunicationError,
    ConfigurationError,
    InvalidValueError,
    LimitError,
    ManualClock,
    MoveError,
    Session,
)
from nicos.devices.generic import VirtualCoder, VirtualMotor


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def session(clock: ManualClock) -> Iterator[Session]:
    session = Session(setup_paths=[], clock=clock)
    yield session
    session.shutdown()


def make_motor(session: Session, name: str = "m", **config: Any) -> VirtualMotor:
    config = {"abslimits": (-10, 10), "speed": 1.0, "unit": "mm", **config}
    motor = VirtualMotor(name, session, **config)
    session.devices[name] = motor  # so that session.shutdown() ends it
    return motor


def test_moves_at_its_speed_and_is_readable_on_the_way(session: Session,
                                                       clock: ManualClock) -> None:
    motor = make_motor(session, speed=2.0)
    motor.start(5)
    assert motor.status() == (BUSY, "moving to 5.000 mm")
    clock.advance(1.0)
    assert motor.read() == 2.0 and motor.status()[0] == BUSY
    clock.advance(1.5)
    assert motor.read() == 5.0
    assert motor.status() == (OK, "idle")
    assert motor.target == 5.0 and motor.curvalue == 5.0


def test_stopped_mid_move_it_stays_where_it_was(session: Session, clock: ManualClock) -> None:
    motor = make_motor(session)
    motor.start(8)
    clock.advance(3.0)
    motor.stop()
    assert motor.read() == 3.0
    assert motor.status() == (OK, "idle")
    clock.advance(10.0)
    assert motor.read() == 3.0  # no motion after the stop


def test_limits_refuse_before_any_motion(session: Session) -> None:
    motor = make_motor(session, userlimits=(-5, 5))
    with pytest.raises(LimitError) as info:
        motor.start(7)
    assert str(info.value) == "m: cannot move to 7.000 mm: outside the user limits [-5, 5]"
    with pytest.raises(LimitError, match=r"outside the absolute limits \[-10, 10\]"):
        motor.start(-12)
    with pytest.raises(InvalidValueError, match="m: target must be a number, got 'far'"):
        motor.start("far")
    assert motor.status() == (OK, "idle") and motor.read() == 0.0 and motor.target is None
    with pytest.raises(InvalidValueError, match=r"must lie within the absolute limits"):
        motor.userlimits = (-20, 0)
    motor.userlimits = (-8, 8)
    assert motor.isAllowed(7) == (True, "")


def test_userlimits_in_setup_must_fit(session: Session) -> None:
    with pytest.raises(ConfigurationError, match="must lie within the absolute limits"):
        make_motor(session, userlimits=(-20, 0))


def test_speed_zero_arrives_at_once(session: Session) -> None:
    motor = make_motor(session, speed=0)
    assert motor.maw(4) == 4.0


def test_real_time_move_and_wait() -> None:
    session = Session(setup_paths=[])
    try:
        motor = make_motor(session, speed=200.0)
        assert motor.maw(3.0) == 3.0
        assert motor.status()[0] == OK
    finally:
        session.shutdown()


def test_adjust_shifts_offset_and_limits(session: Session, clock: ManualClock) -> None:
    motor = make_motor(session, userlimits=(-5, 5), curvalue=2.0)
    assert motor.adjust(0.0) == 2.0
    assert motor.read() == 0.0 and motor.offset == 2.0
    assert motor.userlimits == (-7.0, 3.0)
    assert motor.absolute_limits() == (-12.0, 8.0)
    motor.start(1.0)  # raw target 3
    clock.advance(5.0)
    assert motor.read() == 1.0 and motor.curvalue == 3.0


def test_failmode_refuse(session: Session) -> None:
    motor = make_motor(session, failmode="refuse")
    with pytest.raises(MoveError, match="refuses to move"):
        motor.start(1)
    motor.failmode = "none"
    motor.start(1)


def test_failmode_stall_reports_an_error_where_it_stalled(session: Session,
                                                         clock: ManualClock) -> None:
    motor = make_motor(session, speed=0)
    motor.failmode = "stall"
    motor.fail_at = 1.5
    motor.start(4)
    assert motor.status() == (ERROR, "stalled at 1.500 mm")
    with pytest.raises(MoveError, match="m: stalled at 1.500 mm"):
        motor.wait()
    motor.reset()
    assert motor.status() == (OK, "idle") and motor.read() == 1.5


def test_failmode_communication(session: Session) -> None:
    motor = make_motor(session)
    coder = VirtualCoder("c", session, motor=motor)
    motor.failmode = "communication"
    with pytest.raises(CommunicationError, match="no answer"):
        motor.read()
    with pytest.raises(CommunicationError):
        coder.read()
    assert motor.status()[0] == ERROR
    with pytest.raises(InvalidValueError, match="must be one of 'none', 'refuse'"):
        motor.failmode = "explode"


def test_coder_follows_motor(session: Session, clock: ManualClock) -> None:
    motor = make_motor(session)
    coder = VirtualCoder("c", session, motor=motor, noise=0.01, seed=1)
    motor.start(2)
    clock.advance(1.0)
    assert coder.read() == pytest.approx(1.0, abs=0.1)
    assert coder.status()[0] == BUSY


def test_values_are_published_as_cache_events(clock: ManualClock) -> None:
    from nicos.core import DaemonHooks

    class Recorder(DaemonHooks):
        def __init__(self) -> None:
            self.events: list[tuple[str, Any]] = []

        def emit(self, event: str, data: Any) -> None:
            self.events.append((event, data))

    hooks = Recorder()
    session = Session(setup_paths=[], clock=clock, hooks=hooks)
    try:
        motor = make_motor(session)
        motor.start(1)
        clock.advance(2.0)
        motor.read()
        cache = [data for event, data in hooks.events if event == "cache"]
        keys = {entry[1] for entry in cache}
        assert {"m/value", "m/status", "m/target"} <= keys
        assert [entry[3] for entry in cache if entry[1] == "m/value"][-1] == "1.0"
        assert session.current_values()["m/value"][1] == 1.0
    finally:
        session.shutdown()
