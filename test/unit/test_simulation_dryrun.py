"""Dry runs in-process: devices jump, time is virtual, limits still refuse,
ranges are recorded; the runner's checks for undefined names."""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterator

import pytest

from nicos.core import BUSY, OK, LimitError, ManualClock, Session
from nicos.core.paths import setup_search_path
from nicos.simulation.hooks import SimulationHooks
from nicos.simulation.names import undefined_names
from nicos.simulation.runner import run_simulation


@pytest.fixture
def dry() -> Iterator[Session]:
    clock = ManualClock()
    session = Session(hooks=SimulationHooks(clock), clock=clock, dry_run=True)
    session.load_setup("demo")
    yield session
    session.shutdown()


def run(session: Session, code: str) -> None:
    exec(compile(code, "<script>", "exec"), session.namespace)


def test_moves_jump_and_take_virtual_time(dry: Session) -> None:
    threads_before = threading.active_count()
    sth = dry.devices["sth"]  # speed 2 deg/s
    run(dry, "move(sth, 10)")
    assert sth.read() == 10.0 and sth.status()[0] == BUSY  # there, busy for 5 s
    run(dry, "wait(sth)")
    assert dry.clock.time() == 5.0 and sth.status() == (OK, "")
    run(dry, "maw(sth, 4, mono, 3)")  # 3 s and 2 s in parallel: 3 s
    assert dry.clock.time() == 8.0
    assert threading.active_count() == threads_before  # nothing really moved
    assert dry.dry_run is not None
    assert dry.dry_run.ranges() == {"sth": [4.0, 0.0, 10.0], "mono": [3.0, 2.0, 3.0]}
    assert dry.devices["sth_coder"].read() == pytest.approx(4.0, abs=0.01)  # follows


def test_counts_scans_and_sleep_take_their_time(dry: Session) -> None:
    run(dry, "values = count(t=30)")
    assert dry.clock.time() == 30.0 and dry.namespace["values"] == [0, 0, 0, 0]
    run(dry, "sleep(100)\ncount(mon1=50000)")  # monitor: 5000 counts per second
    assert dry.clock.time() == 140.0
    run(dry, "scan(sth, 0, 1, 11, t=1)")  # 10 steps of 0.5 s, 11 counts of 1 s
    assert dry.clock.time() == 156.0
    assert not dry.datadir and dry.data.get(-1).status == "finished"


def test_limits_refuse_as_in_a_real_run(dry: Session) -> None:
    with pytest.raises(LimitError, match="sth: cannot move to 95.000 deg"):
        run(dry, "scan(sth, 80, 5, 4, t=1)")
    assert dry.clock.time() == 0.0 and dry.devices["sth"].read() == 0.0


def test_undefined_names_are_found_in_branches_not_taken() -> None:
    code = ("for i in range(3):\n"
            "    x = i\n"
            "def f(a, *rest, k=1):\n"
            "    return a + k + len(rest) + x\n"
            "if False:\n"
            "    maw(sht, 1)\n"
            "    mvoe(mono, 2)\n"
            "import os.path as p\n"
            "print(p, f(1), undefined_too)\n")
    found = undefined_names(ast.parse(code), {"maw", "move", "sth", "mono"})
    assert found == [("sht", 6, "sth"), ("mvoe", 7, "move"), ("undefined_too", 9, "")]


def request(code: str, **devices: dict) -> dict:
    return {"simid": "s1", "name": "", "code": code, "user": "tester", "setups": ["demo"],
            "setup_paths": [str(p) for p in setup_search_path()], "devices": devices,
            "max_messages": 100}


def test_runner_starts_from_the_instruments_state() -> None:
    result = run_simulation(request("maw(sth, 10)\ncount(t=2)\n",
                                    sth={"value": 4.0, "speed": 3.0}))
    assert result.ok and result.duration == 4.0  # 6 deg at 3 deg/s, then 2 s
    assert result.devinfo == {"sth": ["10.000 deg", "4.000 deg", "10.000 deg", []]}
    refused = run_simulation(request("maw(sth, 10)\n", sth={"userlimits": [-5, 5]}))
    assert not refused.ok and refused.devinfo == {}
