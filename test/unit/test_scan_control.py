"""Scans under the real script controller (pyctl, script thread, event bus):
where "break after step" and "break now" pause a scan, and what a stop and
an emergency stop leave behind.

Where the script is paused is read from the script thread's own stack
while it waits in the break.  Tests wait for events, never for time.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nicos.core.session import Session
from nicos.core.status import BUSY, OK
from nicos.data.datafile import read_scan
from nicos.protocols.daemon import BREAK_AFTER_STEP, BREAK_NOW, STATUS_INBREAK, code2event
from nicos.protocols.daemon.framing import EventDecoder
from nicos_daemon.common import User
from nicos_daemon.controller import ScriptController
from nicos_daemon.events import EventBus
from nicos_daemon.instrument import start_instrument

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


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ScriptController, Recorder, Session]]:
    bus = EventBus()
    recorder = Recorder()
    bus.subscribe(recorder)
    controller = ScriptController(bus, SimpleNamespace(updateinterval=0.02, datadir=tmp_path))
    session = start_instrument(controller, "demo")
    controller.start_threads()
    yield controller, recorder, session
    controller.shutdown()  # also ends simulations and flushes the value history


def paused_in(controller: ScriptController) -> list[str]:
    """Names of the functions on the script thread's stack (it is paused)."""
    thread = controller._script_thread
    assert thread is not None and thread.ident is not None
    frame = sys._current_frames()[thread.ident]
    return [entry.name for entry in traceback.extract_stack(frame)]


def is_busy(key: str) -> Callable[[Any], bool]:
    return lambda cache: cache[1] == key and cache[3].startswith(f"({BUSY},")


def test_break_after_step_pauses_between_points(
        setup: tuple[ScriptController, Recorder, Session]) -> None:
    controller, rec, session = setup
    session.devices["sth"].speed = 0
    controller.queue("", "scan(sth, 9, 0.5, 4, t=0.2)\n", ALICE)
    rec.wait_for("datapoint")
    controller.break_(BREAK_AFTER_STEP, ALICE)
    rec.wait_for("status", lambda s: s[0] == STATUS_INBREAK)

    stack = paused_in(controller)
    assert "run_scan" in stack
    assert "count_once" not in stack and "wait_for_devices" not in stack
    assert session.devices["det"].status() == (OK, "idle")
    measured = rec.of("datapoint")
    assert 1 <= len(measured) < 4
    assert all(point[2][0] == pytest.approx(0.2) for point in measured)  # counts completed

    controller.continue_(ALICE)
    assert rec.wait_for("done")["success"] is True
    points = rec.of("datapoint")
    assert [p[1] for p in points] == [[9.0], [9.5], [10.0], [10.5]]
    assert all(point[2][0] == pytest.approx(0.2) for point in points)


def test_break_now_pauses_inside_the_count_and_a_stop_halts_the_detector(
        setup: tuple[ScriptController, Recorder, Session]) -> None:
    controller, rec, session = setup
    session.devices["sth"].speed = 0
    controller.queue("", "scan(sth, 9, 0.5, 4, t=60)\n", ALICE)
    rec.wait_for("cache", is_busy("det/status"))
    controller.break_(BREAK_NOW, ALICE)
    rec.wait_for("status", lambda s: s[0] == STATUS_INBREAK)
    assert "count_once" in paused_in(controller)

    controller.stop(BREAK_NOW, ALICE)
    assert rec.wait_for("done")["success"] is False
    assert session.devices["det"].status() == (OK, "idle")
    texts = [m[3] for m in rec.of("message")]
    assert any(t.startswith("det stopped at timer ") and "(script stopped)" in t
               for t in texts)
    assert "scan 1 stopped at point 1 of 4 (0 points measured)\n" in texts
    dataset = controller.getdataset(-1)
    assert dataset["status"] == "stopped" and dataset["yresults"] == []
    header, _, data = read_scan(dataset["filepaths"][0])
    assert data.shape == (0, 5) and header["ended"].endswith("status stopped, 0 points")


def test_emergency_stop_during_a_scan_halts_every_moving_device(
        setup: tuple[ScriptController, Recorder, Session]) -> None:
    controller, rec, session = setup
    sth, stt = session.devices["sth"], session.devices["stt"]
    sth.speed = stt.speed = 1.0
    controller.queue("", "scan([sth, stt], [40, 60], [1, 1], 3, t=0.1)\n", ALICE)
    rec.wait_for("cache", is_busy("sth/status"))
    rec.wait_for("cache", is_busy("stt/status"))
    controller.emergency(ALICE)
    assert rec.wait_for("done")["success"] is False
    assert sth.status()[0] != BUSY and stt.status()[0] != BUSY
    assert 0 < sth.read() < 40 and 20 < stt.read() < 60
    texts = [m[3] for m in rec.of("message")]
    assert "scan 1 stopped at point 1 of 3 (0 points measured)\n" in texts
    assert controller.getdataset(-1)["status"] == "stopped"
    assert controller.getdataset("*")[-1]["uid"] == rec.of("dataset")[0]["uid"]
