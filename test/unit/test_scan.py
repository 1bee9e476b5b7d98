"""Scans and counts in-process, on a ManualClock: datasets, files, events,
argument checks, and how breakpoints, stops and finish requests reach a scan.

The hooks' sleep advances the clock, so a count of t=1 takes exactly one
second of virtual time and no real time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pytest

from nicos.core import (
    OK,
    DaemonHooks,
    LimitError,
    ManualClock,
    Session,
    UsageError,
)
from nicos.data.datafile import read_scan
from nicos.devices.generic import (
    Detector,
    VirtualCounter,
    VirtualImage,
    VirtualMotor,
    VirtualTimer,
)
from nicos.protocols.daemon import BREAK_AFTER_STEP, BREAK_NOW

PEAK = 10.0


class VirtualTimeHooks(DaemonHooks):
    """Records events and breakpoints; sleeping advances the clock; a
    "finish" request is pending once the clock passes ``finish_after``."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.events: list[tuple[str, Any]] = []
        self.breakpoints: list[int] = []
        self.finish_after: float | None = None
        self.on_breakpoint: Any = None

    def emit(self, event: str, data: Any) -> None:
        if event != "cache":
            self.events.append((event, data))

    def breakpoint(self, level: int) -> None:
        self.breakpoints.append(level)
        if self.on_breakpoint is not None:
            self.on_breakpoint(level)

    def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def consume_finish_request(self) -> bool:
        if self.finish_after is not None and self.clock.time() >= self.finish_after:
            self.finish_after = None
            return True
        return False

    def of(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]


class Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())


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


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hooks(clock: ManualClock) -> VirtualTimeHooks:
    return VirtualTimeHooks(clock)


@pytest.fixture
def session(tmp_path: Path, clock: ManualClock, hooks: VirtualTimeHooks) -> Iterator[Session]:
    session = Session(setup_paths=[], hooks=hooks, clock=clock, datadir=tmp_path / "data")
    sth = VirtualMotor("sth", session, abslimits=(-20, 20), userlimits=(-15, 15), speed=0)
    devices = {
        "sth": sth,
        "stt": VirtualMotor("stt", session, abslimits=(-50, 50), speed=0),
        "timer": VirtualTimer("timer", session),
        "mon": VirtualCounter("mon", session, countrate=1000.0, seed=1),
        "ctr": VirtualCounter("ctr", session, countrate=2000.0, motor=sth, peak_center=PEAK,
                              peak_width=0.5, background=0.0, seed=2),
        "image": VirtualImage("image", session, shape=(8, 8), countrate=5000.0, motor=sth,
                              peak_center=PEAK, peak_width=0.5, seed=3),
    }
    devices["det"] = Detector("det", session, timers=[devices["timer"]],
                              monitors=[devices["mon"]], counters=[devices["ctr"]],
                              images=[devices["image"]])
    session.devices.update(devices)
    session.namespace.update(devices)
    yield session
    session.shutdown()


def call(session: Session, command: str, *args: Any, **kwargs: Any) -> Any:
    return session.namespace[command](*args, **kwargs)


# --------------------------------------------------------------------------- data


def test_scan_gives_the_dataset_the_events_and_the_file(session: Session,
                                                        hooks: VirtualTimeHooks,
                                                        clock: ManualClock) -> None:
    started = clock.time()
    dataset = call(session, "scan", "sth", 8, 0.25, 17, t=1)
    # 17 counts of one second (each noticed within a poll round); moves at once
    assert 17.0 <= clock.time() - started <= 17.0 + 17 * 0.06

    assert dataset.positions.shape == (17, 1) and dataset.counts.shape == (17, 4)
    assert numpy.allclose(dataset.positions[:, 0], 8 + 0.25 * numpy.arange(17))
    assert numpy.allclose(dataset.column("timer"), 1.0)
    ctr = dataset.column("ctr")
    assert abs(dataset.positions[ctr.argmax(), 0] - PEAK) <= 0.25
    assert ctr.max() > 1500 and ctr[0] < 50  # top of the peak and four widths off
    assert dataset.status == "finished"

    # events: the dataset once, then one datapoint per point with its uid
    (announced,) = hooks.of("dataset")
    json.dumps(announced, allow_nan=False)  # plain JSON
    assert announced["uid"] == dataset.uid and announced["npoints"] == 17
    assert [v["name"] for v in announced["xvalueinfo"]] == ["sth"]
    assert [(v["name"], v["type"]) for v in announced["yvalueinfo"]] == [
        ("timer", "time"), ("mon", "monitor"), ("ctr", "counter"), ("image", "counter")]
    points = hooks.of("datapoint")
    assert len(points) == 17 and all(p[0] == dataset.uid for p in points)
    assert points[8][1] == [10.0] and points[8][2][0] == pytest.approx(1.0)

    # the file: one per scan, numpy reads it as it is
    path = Path(dataset.filepath)
    assert path == session.datadir / "scans" / "scan_000001.dat"
    data = numpy.loadtxt(path, ndmin=2)
    assert data.shape == (17, 5)
    assert numpy.array_equal(data[:, 0], dataset.positions[:, 0])
    assert numpy.array_equal(data[:, 1:], dataset.counts)
    header, names, same = read_scan(path)
    assert names == ["sth", "timer", "mon", "ctr", "image"]
    assert numpy.array_equal(same, data)
    assert header["counter"] == "1" and header["scaninfo"] == "scan(sth, 8, 0.25, 17, t=1)"
    assert header["ended"].endswith("status finished, 17 points")

    # the JSON form holds everything
    form = dataset.to_dict()
    assert form["status"] == "finished" and form["filepaths"] == [str(path)]
    assert numpy.array_equal(numpy.array(form["yresults"]), dataset.counts)


def test_datasets_are_numbered_on_from_the_files_there(session: Session, tmp_path: Path) -> None:
    scans = session.datadir / "scans"
    scans.mkdir(parents=True)
    (scans / "scan_000041.dat").write_text("# an older scan\n")
    first = call(session, "count", t=1)
    assert len(first) == 4 and first[0] == pytest.approx(1.0)
    latest = session.data.get(-1)
    assert latest.counter == 42 and latest.positions.shape == (1, 0)
    assert Path(latest.filepath).name == "scan_000042.dat"
    assert numpy.loadtxt(latest.filepath, ndmin=2).shape == (1, 4)
    call(session, "count", 2)  # count(2) is count(t=2)
    assert session.data.get(-1).column("timer")[0] == pytest.approx(2.0)
    assert [d.counter for d in session.data.recent()] == [42, 43]


def test_cscan_several_devices_and_explicit_positions(session: Session) -> None:
    dataset = call(session, "cscan", session.devices["sth"], 10, 0.5, 2, "det", t=1)
    assert list(dataset.positions[:, 0]) == [9.0, 9.5, 10.0, 10.5, 11.0]
    assert dataset.scaninfo == "cscan(sth, 10, 0.5, 2, det, t=1)"
    dataset = call(session, "scan", ["sth", "stt"], [0, 0], [1, 2], 3, t=1)
    assert dataset.positions.tolist() == [[0, 0], [1, 2], [2, 4]]
    dataset = call(session, "scan", "sth", [3, 1, 2], mon=100)
    assert list(dataset.positions[:, 0]) == [3, 1, 2]
    assert list(dataset.column("mon")) == [100, 100, 100]  # a monitor preset


def test_timescan_records_the_time(session: Session) -> None:
    dataset = call(session, "timescan", 3, t=2)
    assert dataset.positions.shape == (3, 1) and dataset.xinfo == [("time", "s")]
    # the time of each count's start: counts take 2 s, noticed within a poll round
    assert numpy.allclose(dataset.positions[:, 0], [0.0, 2.0, 4.0], atol=0.2)


def test_the_data_files_need_no_data_directory(clock: ManualClock,
                                               hooks: VirtualTimeHooks) -> None:
    session = Session(setup_paths=[], hooks=hooks, clock=clock)  # no datadir
    try:
        session.devices["timer"] = VirtualTimer("timer", session)
        session.devices["det"] = Detector("det", session, timers=[session.devices["timer"]])
        dataset = call(session, "timescan", 2, t=1)
        assert dataset.filepath == "" and len(dataset) == 2
    finally:
        session.shutdown()


# ----------------------------------------------------------------- refusals


@pytest.mark.parametrize(("command", "args", "kwargs", "message"), [
    ("scan", ("sth", 0, 1), {"t": 1},
     r"scan\(\) needs a device, start, step and number of points, e.g. scan\(sth, 0, 0.1"),
    ("scan", ("sth", 0, 1, 0), {}, r"needs the number of points as a whole number >= 1"),
    ("scan", ("sth", 0, "x", 3), {}, r"needs step as a number, got 'x'"),
    ("scan", ("sth2", 0, 1, 3), {}, r"scan\(\): no device named 'sth2' \(did you mean 'sth'"),
    ("scan", ("timer", 0, 1, 3), {}, r"timer cannot be moved"),
    ("scan", (["sth", "stt"], [0], [1, 1], 3), {}, r"needs one start per device \(2\), got 1"),
    ("scan", ("sth", 0, 1, 3, 5), {}, r"got 5 where a detector"),
    ("scan", ("sth", 0, 1, 3), {"tt": 1}, r"det: no preset 'tt'"),
    ("cscan", ("sth", 0, 1), {}, r"cscan\(\) needs a device, center, step and number"),
    ("timescan", (0,), {}, r"whole number >= 1 \(or -1: until stopped\)"),
    ("count", (), {"t": -1}, r"det: preset t=-1 must be a positive number"),
    ("count", ("sth",), {}, r"count\(\): sth cannot count"),
])
def test_wrong_arguments_are_refused_in_the_users_words(
        session: Session, hooks: VirtualTimeHooks, command: str, args: tuple,
        kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        call(session, command, *args, **kwargs)
    assert hooks.of("dataset") == []


def test_a_scan_leaving_the_limits_is_refused_before_anything_moves(
        session: Session, hooks: VirtualTimeHooks) -> None:
    with pytest.raises(LimitError, match=r"scan\(\): point 7 of 10: sth: cannot move to "
                                         r"16.000 deg: outside the user limits"):
        call(session, "scan", "sth", 10, 1, 10, t=1)
    assert session.devices["sth"].read() == 0.0
    assert hooks.of("dataset") == [] and not (session.datadir / "scans").exists()


# ------------------------------------------------------- breaks, stops, finish


def test_breakpoints_between_points_and_in_counts(session: Session,
                                                  hooks: VirtualTimeHooks) -> None:
    call(session, "scan", "sth", 0, 1, 3, t=1)
    between = [level for level in hooks.breakpoints if level == BREAK_AFTER_STEP]
    in_counts = [level for level in hooks.breakpoints if level == BREAK_NOW]
    assert len(between) == 2  # between three points; moves at speed 0 never wait
    assert len(in_counts) >= 3  # every round of waiting for a count


def test_a_finish_request_ends_the_count_and_the_scan_goes_on(session: Session,
                                                              hooks: VirtualTimeHooks) -> None:
    hooks.finish_after = 12.5  # during the count of the second point (10..20 s)
    dataset = call(session, "scan", "sth", 0, 1, 3, t=10)
    timers = list(dataset.column("timer"))
    assert timers[0] == pytest.approx(10.0) and timers[2] == pytest.approx(10.0)
    assert 2.5 <= timers[1] < 3.0
    assert dataset.status == "finished"


class Stop(BaseException):
    """What the script controller raises for a stop request."""


def test_a_stop_during_a_count_halts_the_detector_and_closes_the_dataset(
        session: Session, hooks: VirtualTimeHooks, clock: ManualClock,
        messages: Messages) -> None:
    def stop_in_second_count(level: int) -> None:
        if level == BREAK_NOW and clock.time() >= 13.0:
            raise Stop("stopped by tester")

    hooks.on_breakpoint = stop_in_second_count
    with pytest.raises(Stop):
        call(session, "scan", "sth", 0, 1, 5, t=10)
    det = session.devices["det"]
    assert det.status() == (OK, "idle")
    assert any(t.startswith("det stopped at timer 3.") and t.endswith("(script stopped)")
               for t in messages.texts)
    dataset = session.data.get(-1)
    assert dataset.status == "stopped" and len(dataset) == 1
    assert "scan 1 stopped at point 2 of 5 (1 points measured)" in messages.texts
    header, _, data = read_scan(dataset.filepath)
    assert data.shape == (1, 5) and header["ended"].endswith("status stopped, 1 points")


def test_a_stop_while_moving_halts_the_motors_and_says_where(
        session: Session, hooks: VirtualTimeHooks, clock: ManualClock,
        messages: Messages) -> None:
    sth, stt = session.devices["sth"], session.devices["stt"]
    sth.speed = stt.speed = 1.0

    def stop_while_moving(level: int) -> None:
        if level == BREAK_AFTER_STEP and clock.time() >= 1.0 and sth.status()[0] != OK:
            raise Stop("stopped by tester")

    hooks.on_breakpoint = stop_while_moving
    with pytest.raises(Stop):
        call(session, "scan", ["sth", "stt"], [5, 5], [1, 1], 3, t=1)
    clock.advance(100.0)  # stopped motors stay where they are
    assert sth.status() == (OK, "idle") and stt.status() == (OK, "idle")
    assert 0 < sth.read() < 5 and 0 < stt.read() < 5
    warnings = [t for t in messages.texts if "stopped at" in t]
    assert warnings == [f"sth stopped at {sth.read():.3f} deg (script stopped)",
                        f"stt stopped at {stt.read():.3f} deg (script stopped)",
                        "scan 1 stopped at point 1 of 3 (0 points measured)"]
