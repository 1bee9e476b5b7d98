"""Simulations in real separate processes, as the daemon runs them: duration,
ranges, limit violations and typos reported before anything moves, and the
bounds (time limit, number running, number of messages)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nicos.core import Session
from nicos.protocols.daemon import ERROR, WARNING
from nicos_daemon.common import CommandError
from nicos_daemon.simulation import Simulations

WAIT = 60.0  # a guard: starting a Python process with numpy takes a moment


class Events:
    """Collects what the simulations emit; tests wait for a simid's result."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[tuple[str, Any]] = []

    def emit(self, event: str, data: Any) -> None:
        with self.cond:
            self.events.append((event, data))
            self.cond.notify_all()

    def result(self, simid: str) -> list[Any]:
        with self.cond:
            if not self.cond.wait_for(lambda: self._result(simid) is not None, WAIT):
                raise AssertionError(f"no simresult for {simid}: {self.events}")
            result = self._result(simid)
            assert result is not None
            return result

    def _result(self, simid: str) -> list[Any] | None:
        return next((d for e, d in self.events if e == "simresult" and d[2] == simid), None)

    def messages(self, simid: str) -> list[list[Any]]:
        with self.cond:
            return [d for e, d in self.events if e == "simmessage" and d[5] == simid]


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    session = Session()
    session.load_setup("demo")
    yield session
    session.shutdown()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def sims(events: Events) -> Iterator[Simulations]:
    simulations = Simulations(events.emit)
    yield simulations
    simulations.shutdown()


def test_simulation_reports_duration_and_ranges(session: Session, events: Events,
                                                sims: Simulations) -> None:
    code = ("printinfo('aligning')\n"
            "maw(sth, 10)\n"        # 5 s at 2 deg/s
            "scan(sth, 10, 1, 3, t=2)\n"  # 2 steps of 0.5 s, 3 counts of 2 s
            "sleep(100)\n")
    before = time.time()
    simid = sims.start(session, "align", code, None, "tester")
    stoptime, devinfo, same = events.result(simid)
    after = time.time()
    assert same == simid
    assert before + 112 <= stoptime <= after + 112  # the end if started now
    assert devinfo == {"sth": ["12.000 deg", "0.000 deg", "12.000 deg", []]}
    texts = [m[3] for m in events.messages(simid)]
    assert texts == ["aligning\n"]
    assert session.devices["sth"].read() == 0.0  # nothing really moved


def test_simulation_reports_a_limit_violation_before_anything_moves(
        session: Session, events: Events, sims: Simulations) -> None:
    simid = sims.start(session, "", "maw(sth, 10)\nscan(sth, 80, 5, 4, t=1)\n", "sim-7",
                       "tester")
    assert simid == "sim-7"
    stoptime, devinfo, _ = events.result(simid)
    assert stoptime == -1
    assert devinfo == {"sth": ["10.000 deg", "0.000 deg", "10.000 deg", []]}
    (error,) = [m for m in events.messages(simid) if m[2] == ERROR]
    assert error[3] == ("line 2: LimitError - scan(): point 4 of 4: sth: cannot move to "
                        "95.000 deg: outside the user limits [-90, 90]\n")
    assert error[5] == "sim-7" and 'File "<script>", line 2' in error[4]
    assert session.devices["sth"].read() == 0.0


def test_simulation_uses_the_instruments_current_state(session: Session, events: Events,
                                                       sims: Simulations) -> None:
    sth = session.devices["sth"]
    sth.userlimits = (-5, 5)
    try:
        simid = sims.start(session, "", "maw(sth, 8)\n", None, "tester")
        assert events.result(simid)[0] == -1
    finally:
        sth.userlimits = (-90, 90)
    assert any("outside the user limits [-5, 5]" in m[3] for m in events.messages(simid))


def test_simulation_finds_typos(session: Session, events: Events, sims: Simulations) -> None:
    typo = sims.start(session, "", "maw(sth, 1)\nread(sht)\n", None, "tester")
    branch = sims.start(session, "", "if False:\n    maw(mnoo, 3)\nsleep(5)\n", None, "tester")
    assert events.result(typo)[0] == -1
    warning, error = [(m[2], m[3]) for m in events.messages(typo)]
    assert warning[0] == WARNING
    assert warning[1].startswith("line 2: name 'sht' is not defined (did you mean 'st")
    assert error == (ERROR, "line 2: NameError - name 'sht' is not defined\n")
    assert events.result(branch)[0] > 0  # runs through; the typo is only warned about
    assert [m[3] for m in events.messages(branch)] == [
        "line 2: name 'mnoo' is not defined (did you mean 'mono'?)\n"]


def test_bounds_time_running_and_messages(session: Session, events: Events) -> None:
    sims = Simulations(events.emit, timeout=2.0, max_running=1, max_messages=20)
    try:
        endless = sims.start(session, "", "while True:\n    pass\n", None, "tester")
        with pytest.raises(CommandError, match=r"too many simulations running \(at most 1\)"):
            sims.start(session, "", "sleep(1)\n", None, "tester")
        assert events.result(endless)[0] == -1
        assert [m[3] for m in events.messages(endless)] == [
            "simulation stopped: it took longer than 2 s\n"]
        chatty = sims.start(session, "", "for i in range(500):\n    print(i)\n", None, "tester")
        assert events.result(chatty)[0] > 0
        texts = [m[3] for m in events.messages(chatty)]
        assert len(texts) == 21 and texts[:2] == ["0\n", "1\n"]
        assert texts[-1] == "more than 20 messages: the rest is not shown\n"
    finally:
        sims.shutdown()
    assert sims.running == 0
