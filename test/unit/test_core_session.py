"""Session services: device lookup, published values, emergency stop."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import numpy
import pytest

from nicos.core import (
    BUSY,
    OK,
    DaemonHooks,
    ManualClock,
    Moveable,
    NicosError,
    Session,
    UsageError,
)
from nicos.core.usercommand import bind_command, usercommand
from nicos.devices.generic import VirtualMotor


class Events(DaemonHooks):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def emit(self, event: str, data: Any) -> None:
        self.events.append((event, data))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hooks() -> Events:
    return Events()


@pytest.fixture
def session(clock: ManualClock, hooks: Events) -> Iterator[Session]:
    session = Session(setup_paths=[], clock=clock, hooks=hooks)
    yield session
    session.shutdown()


def motor(session: Session, name: str) -> VirtualMotor:
    device = VirtualMotor(name, session, abslimits=(-10, 10), speed=1.0)
    session.devices[name] = device
    return device


def test_get_device(session: Session) -> None:
    mono = motor(session, "mono")
    assert session.getDevice("mono") is mono and session.getDevice(mono) is mono
    assert session.getDevice("mono", Moveable) is mono
    with pytest.raises(UsageError, match=r"no device named 'mnoo' \(did you mean 'mono'\?\)"):
        session.getDevice("mnoo")


def test_publish_sends_changes_only(session: Session, hooks: Events) -> None:
    session.publish("Mono", "value", 1.0)
    session.publish("Mono", "value", 1.0)
    session.publish("Mono", "value", 2)
    session.publish("Mono", "image", numpy.zeros(3))
    cache = [data for event, data in hooks.events if event == "cache"]
    assert [(c[1], c[2], c[3]) for c in cache] == [("mono/value", "=", "1.0"),
                                                   ("mono/value", "=", "2")]
    seen: list[tuple[str, Any]] = []
    session.add_value_listener(lambda t, key, value: seen.append((key, value)))
    session.publish("mono", "status", (OK, "idle"))
    assert seen == [("mono/status", (OK, "idle"))]


def test_emergency_stop_tries_every_device_and_reports_failures(session: Session,
                                                                clock: ManualClock) -> None:
    first, second = motor(session, "first"), motor(session, "second")

    def broken_stop() -> None:
        raise NicosError("controller unreachable")

    session.register_emergency_stop(broken_stop)
    first.start(5)
    second.start(5)
    clock.advance(1.0)
    with pytest.raises(NicosError, match="1 device\\(s\\) could not be stopped: "
                                         ".*controller unreachable"):
        session.emergency_stop()
    assert first.status()[0] == OK and second.status()[0] == OK


def test_shut_down_devices_leave_the_emergency_list(session: Session,
                                                    clock: ManualClock) -> None:
    gone = motor(session, "gone")
    gone.start(5)
    gone.shutdown()
    assert gone.status()[0] == OK
    assert gone.stop not in session._emergency_functions


def test_facility_commands_are_bound_to_the_session(session: Session) -> None:
    @usercommand(needs="a device", example="where(mono)")
    def where(session: Session, device: Any) -> str:
        """Say where a device is."""
        return f"{device} at {session.getDevice(device).read()}"

    bound = bind_command(where, session)
    motor(session, "mono")
    assert bound("mono") == "mono at 0.0"
    assert bound.__doc__ == "Say where a device is." and bound.__name__ == "where"
    assert str(inspect.signature(bound)) == "(device: 'Any') -> 'str'"
    with pytest.raises(UsageError, match=r"^where\(\) needs a device, e.g. where\(mono\)$"):
        bound()


def test_status_busy_while_moving(session: Session, clock: ManualClock) -> None:
    mono = motor(session, "mono")
    mono.start(1)
    assert mono.status()[0] == BUSY
    clock.advance(1.0)
    assert mono.status()[0] == OK
