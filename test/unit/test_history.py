"""The value history store: recording from device threads without blocking,
queries with thinning, keys, and the daemon's getcachekeys/gethistory on it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from nicos.core import ManualClock, Session
from nicos.data.history import HistoryStore
from nicos.devices.generic import VirtualMotor
from nicos_daemon.controller import ScriptController
from nicos_daemon.events import EventBus
from nicos_daemon.history import cache_keys
from nicos_daemon.instrument import start_instrument


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    store = HistoryStore(tmp_path / "history.sqlite")
    yield store
    store.close()


def test_history_returns_recorded_values_in_time_order(store: HistoryStore) -> None:
    for second in range(10):
        store.record(1000.0 + second, "Mono/Value", 2.0 + second / 10)
    store.record(1003.5, "mono/status", (200, "idle"))
    assert store.history("mono/value", 1004.0, 1006.0) == [
        [1003.0, 2.3],  # the value in force at the start, with its own time
        [1004.0, 2.4], [1005.0, 2.5], [1006.0, 2.6]]
    assert store.history("mono/status", 0, 2000) == [[1003.5, [200, "idle"]]]
    assert store.history("mono/value", 2000, 3000) == [[1009.0, 2.9]]
    assert store.history("nothing/value", 0, 2000) == []


def test_interval_keeps_at_most_one_point_per_interval(store: HistoryStore) -> None:
    for tenth in range(100):
        store.record(100.0 + tenth / 10, "m/value", tenth)
    thinned = store.history("m/value", 100.0, 110.0, interval=2.0)
    assert [t for t, _ in thinned] == pytest.approx([100.0, 102.0, 104.0, 106.0, 108.0])
    assert [v for _, v in thinned] == [0, 20, 40, 60, 80]
    assert len(store.history("m/value", 100.0, 110.0)) == 100


def test_keys_latest_and_values_json_cannot_hold(store: HistoryStore) -> None:
    store.record(1.0, "a/value", 1)
    store.record(2.0, "a/value", 2)
    store.record(1.5, "a/speed", 0.5)
    store.record(1.0, "b/value", object())  # kept as its repr text
    assert store.keys("a/") == ["a/speed", "a/value"]
    assert store.keys() == ["a/speed", "a/value", "b/value"]
    latest = store.latest(["a/value", "b/value", "c/value"])
    assert latest["a/value"] == (2.0, 2) and set(latest) == {"a/value", "b/value"}
    assert latest["b/value"][1].startswith("<object object at")


def test_recording_never_blocks_when_the_disk_cannot_keep_up(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite", max_queue=10)
    blocker = sqlite3.connect(tmp_path / "h.sqlite", timeout=10.0)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # the writer waits for this lock
        for index in range(1000):
            store.record(float(index), "m/value", index)  # returns at once every time
        assert store.dropped > 900
    finally:
        blocker.rollback()
        blocker.close()
    assert store.flush()
    stored = store.history("m/value", 0, 1000)
    assert 10 <= len(stored) == 1000 - store.dropped
    store.close()
    store.record(5000.0, "m/value", 1)  # after close: ignored, no error


def test_the_session_feeds_the_store(tmp_path: Path, store: HistoryStore) -> None:
    clock = ManualClock()
    session = Session(setup_paths=[], clock=clock)
    session.add_value_listener(store.record)
    try:
        motor = VirtualMotor("m", session, abslimits=(-10, 10), speed=1.0)
        motor.start(2.0)
        clock.advance(1.0)
        clock.advance(2.0)
        assert motor.read() == 2.0
    finally:
        session.shutdown()
    values = [v for _, v in store.history("m/value", 0, 4e9)]
    assert values[0] == 0.0 and values[-1] == 2.0 and values == sorted(values)
    statuses = [v[0] for _, v in store.history("m/status", 0, 4e9)]
    assert 220 in statuses and statuses[-1] == 200  # busy, then ok
    assert store.history("m/target", 0, 4e9)[-1][1] == 2.0


def test_getcachekeys_prefers_live_values_and_falls_back_to_the_store(
        store: HistoryStore) -> None:
    store.record(1.0, "old/value", [1, 2])
    store.record(1.0, "m/value", 5.0)
    live = {"m/value": (2.0, 7.5), "m/status": (2.0, (200, "idle"))}
    assert cache_keys(live, store, "m/") == [["m/status", [200, "idle"]], ["m/value", 7.5]]
    assert cache_keys(live, store, "old/value, m/value") == [["m/value", 7.5],
                                                            ["old/value", [1, 2]]]
    assert cache_keys(live, None, "old/") == []


def test_daemon_gethistory_and_getcachekeys(tmp_path: Path) -> None:
    controller = ScriptController(EventBus(), SimpleNamespace(updateinterval=0.05,
                                                              datadir=tmp_path))
    session = start_instrument(controller, "demo")
    try:
        session.devices["mono"].speed = 0
        session.devices["mono"].maw(2.5)
        history = controller.gethistory("mono/value", 0, 4e9, None)
        assert history[-1][1] == 2.5
        assert controller.gethistory("mono/speed", 0, 4e9, None)[-1][1] == 0.0
        keys = dict(controller.getcachekeys("mono/"))
        assert keys["mono/value"] == 2.5 and keys["mono/status"][0] == 200
        assert (tmp_path / "value-history.sqlite").is_file()
    finally:
        controller.shutdown()  # shuts the session down, flushes the history
