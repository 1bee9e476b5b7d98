"""Virtual channels and the detector, on a ManualClock."""

from __future__ import annotations

from collections.abc import Iterator

import numpy
import pytest

from nicos.core import (
    BUSY,
    OK,
    CommunicationError,
    DaemonHooks,
    ManualClock,
    Session,
    UsageError,
)
from nicos.devices.generic import (
    Detector,
    VirtualCounter,
    VirtualImage,
    VirtualMotor,
    VirtualTimer,
)


class FinishOnRequest(DaemonHooks):
    """Hooks whose user asks to finish the count once, after a while."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.finish_after: float | None = None

    def consume_finish_request(self) -> bool:
        if self.finish_after is not None and self.clock.time() >= self.finish_after:
            self.finish_after = None
            return True
        return False

    def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)  # waiting moves virtual time on


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hooks(clock: ManualClock) -> FinishOnRequest:
    return FinishOnRequest(clock)


@pytest.fixture
def session(clock: ManualClock, hooks: FinishOnRequest) -> Iterator[Session]:
    session = Session(setup_paths=[], clock=clock, hooks=hooks)
    yield session
    session.shutdown()


@pytest.fixture
def parts(session: Session) -> dict:
    motor = VirtualMotor("sth", session, abslimits=(-20, 20), speed=0)
    parts = {
        "sth": motor,
        "timer": VirtualTimer("timer", session),
        "mon": VirtualCounter("mon", session, countrate=1000.0, seed=1),
        "ctr": VirtualCounter("ctr", session, countrate=1000.0, motor=motor,
                              peak_center=5.0, peak_width=1.0, background=0.0, seed=2),
        "image": VirtualImage("image", session, shape=(16, 32), countrate=10000.0,
                              motor=motor, peak_center=5.0, seed=3),
    }
    parts["det"] = Detector("det", session, timers=[parts["timer"]], monitors=[parts["mon"]],
                            counters=[parts["ctr"]], images=[parts["image"]])
    session.devices.update(parts)
    return parts


def test_timer_preset_counts_all_channels_for_that_time(parts: dict,
                                                        clock: ManualClock) -> None:
    det = parts["det"]
    parts["sth"].maw(5.0)
    det.start(t=2.0)
    assert det.status() == (BUSY, "counting")
    clock.advance(1.0)
    assert det.status()[0] == BUSY
    clock.advance(1.5)  # past the preset: the count ended at 2.0 s exactly
    assert det.status() == (OK, "idle")
    timer, mon, ctr, total = det.read()
    assert timer == 2.0
    assert 1800 < mon < 2200 and 1800 < ctr < 2200
    image = det.read_arrays()[0]
    assert image.shape == (16, 32) and image.dtype.kind == "i" and image.sum() == total
    assert 18000 < total < 22000
    assert numpy.unravel_index(image.argmax(), image.shape) in {(7, 15), (7, 16), (8, 15),
                                                                (8, 16)}
    assert det.value_info() == [("timer", "s"), ("mon", "cts"), ("ctr", "cts"),
                                ("image", "cts")]
    assert det.lastpreset == {"t": 2.0}


def test_counts_follow_the_peak(parts: dict, clock: ManualClock) -> None:
    det, motor = parts["det"], parts["sth"]
    results = {}
    for position in (2.0, 5.0):
        motor.maw(position)
        det.start(t=1.0)
        clock.advance(1.0)
        results[position] = det.read()
    assert results[5.0][2] > 10 * results[2.0][2] + 10  # ctr, 3 widths off the peak
    assert results[5.0][3] > 5 * results[2.0][3]  # image (with background)


def test_monitor_preset(parts: dict, clock: ManualClock) -> None:
    det = parts["det"]
    det.start(mon=500)
    clock.advance(5.0)
    assert det.status()[0] == OK
    timer, mon, _, _ = det.read()
    assert mon == 500 and timer < 1.0


def test_wait_honours_a_finish_request(parts: dict, hooks: FinishOnRequest,
                                       clock: ManualClock) -> None:
    det = parts["det"]
    hooks.finish_after = 3.0
    det.start(t=100.0)
    values = det.wait()  # the hooks' sleep advances the clock
    assert 3.0 <= values[0] < 3.2
    assert det.status()[0] == OK


def test_stop_ends_the_count(parts: dict, clock: ManualClock) -> None:
    det = parts["det"]
    det.start(t=10)
    clock.advance(1.0)
    det.stop()
    clock.advance(5.0)
    assert det.read()[0] == 1.0 and det.status()[0] == OK


def test_preset_mistakes(parts: dict) -> None:
    det = parts["det"]
    with pytest.raises(UsageError, match="det: no preset 'x'; use one of t, timer, mon, ctr"):
        det.start(x=1)
    with pytest.raises(UsageError, match="preset t=-1 must be a positive number"):
        det.start(t=-1)
    assert det.status()[0] == OK


def test_failing_channel_stops_the_ones_started(parts: dict) -> None:
    det = parts["det"]
    parts["ctr"].failmode = "refuse"
    with pytest.raises(CommunicationError, match="ctr: the electronics do not start"):
        det.start(t=1)
    assert all(parts[n].status()[0] == OK for n in ("timer", "mon", "image"))
    assert det.status()[0] == OK
