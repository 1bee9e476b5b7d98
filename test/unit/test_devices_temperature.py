"""The virtual temperature controller, on a ManualClock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nicos.core import BUSY, NOTREACHED, OK, ManualClock, NicosTimeoutError, Session
from nicos.devices.generic import VirtualTemperature


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def session(clock: ManualClock) -> Iterator[Session]:
    session = Session(setup_paths=[], clock=clock)
    yield session
    session.shutdown()


def make_temperature(session: Session, **config: Any) -> VirtualTemperature:
    config = {"abslimits": (0, 400), "curvalue": 300.0, "ramp": 60.0, **config}
    device = VirtualTemperature("T", session, **config)
    session.devices["T"] = device
    return device


def test_ramps_to_the_setpoint(session: Session, clock: ManualClock) -> None:
    temperature = make_temperature(session, tolerance=0.5)
    temperature.start(290)
    assert temperature.setpoint == 290.0
    assert temperature.status() == (BUSY, "ramping to 290.00 K")
    clock.advance(5.0)  # 1 K per second
    assert temperature.read() == 295.0
    clock.advance(4.6)  # 0.4 K away: within the tolerance, counts as arrived
    assert temperature.status()[0] == OK
    clock.advance(1.0)
    assert temperature.read() == 290.0 and temperature.status() == (OK, "idle")


def test_timeout_gives_a_timeout_error(session: Session, clock: ManualClock) -> None:
    temperature = make_temperature(session, ramp=6.0, timeout=30.0)  # 0.1 K/s
    temperature.start(200)
    clock.advance(31.0)
    status = temperature.status()
    assert status[0] == NOTREACHED and "not reached within 30 s" in status[1]
    with pytest.raises(NicosTimeoutError, match="T: setpoint 200.00 K not reached"):
        temperature.wait()


def test_stop_holds_the_current_temperature(session: Session, clock: ManualClock) -> None:
    temperature = make_temperature(session)
    temperature.start(310)
    clock.advance(2.0)
    temperature.stop()
    clock.advance(20.0)
    assert temperature.read() == 302.0
