"""The instrument through a real daemon process (setup "demo", the fixture's
default): a scan over the wire (events, getdataset, the file in the daemon's
data directory), gethistory/getcachekeys, and simulate with its events."""

from __future__ import annotations

import time

import numpy
from daemonproc import DaemonProcess, EventRecorder

SIM_WAIT = 60.0  # a simulation starts a Python process of its own


def test_scan_dataset_file_and_history_over_the_wire(client: EventRecorder,
                                                     daemon: DaemonProcess) -> None:
    began = time.time()
    since = client.mark()
    reqid = client.run("sth.speed = 0\nscan(sth, 9, 0.5, 5, t=0.05)\n", "scan.py")
    assert client.wait_done(reqid).data["success"] is True

    announced = client.wait_for("dataset", since=since).data
    assert announced["scaninfo"] == "scan(sth, 9, 0.5, 5, t=0.05)" and announced["npoints"] == 5
    points = [e.data for e in client.events("datapoint", since)]
    assert [p[0] for p in points] == [announced["uid"]] * 5
    assert [p[1] for p in points] == [[9.0], [9.5], [10.0], [10.5], [11.0]]

    dataset = client.ask("getdataset", -1)
    assert dataset["uid"] == announced["uid"] and dataset["status"] == "finished"
    assert dataset["xresults"] == [p[1] for p in points]
    assert [v["name"] for v in dataset["yvalueinfo"]] == ["timer", "mon1", "ctr1", "image"]
    ctr1 = numpy.array(dataset["yresults"])[:, 2]
    assert ctr1.argmax() == 2  # the peak at sth = 10 (ctr1 sees 2000/s at the top)
    assert any(d["uid"] == dataset["uid"] for d in client.ask("getdataset", "*"))

    (path,) = dataset["filepaths"]
    assert path.startswith(str(daemon.datadir))
    data = numpy.loadtxt(path, ndmin=2)
    assert data.shape == (5, 5) and list(data[:, 0]) == [9.0, 9.5, 10.0, 10.5, 11.0]

    history = client.ask("gethistory", "sth/value", began - 1, time.time() + 1)
    assert [9.0, 9.5, 10.0, 10.5, 11.0] == [v for _, v in history if v >= 9.0]
    assert all(began - 3600 < t < time.time() + 1 for t, _ in history)
    thinned = client.ask("gethistory", "sth/value", began - 1, time.time() + 1, 3600)
    assert len(thinned) <= 2
    keys = dict(client.ask("getcachekeys", "sth/"))
    assert keys["sth/value"] == 11.0 and keys["sth/speed"] == 0.0
    assert client.ask("getcachekeys", "sth/value, sth/speed,nothing/value") == [
        ["sth/speed", 0.0], ["sth/value", 11.0]]


def test_simulate_over_the_wire(client: EventRecorder) -> None:
    since = client.mark()
    sent = time.time()
    assert client.ask("simulate", "dry", "maw(mono, 3)\ncount(t=10)\n", "sim-ok") is None
    result = client.wait_for("simresult", lambda d: d[2] == "sim-ok", SIM_WAIT, since).data
    received = time.time()
    stoptime, devinfo, _ = result
    # the end if started now: mono from 2.0 A to 3 A at 0.5 A/s (2 s), a 10 s count
    assert sent + 12 <= stoptime <= received + 12
    assert devinfo == {"mono": ["3.000 A", "2.000 A", "3.000 A", []]}

    assert client.ask("simulate", "", "maw(T, 500)\n", "sim-bad") is None
    result = client.wait_for("simresult", lambda d: d[2] == "sim-bad", SIM_WAIT, since).data
    assert result[0] == -1
    errors = [e.data for e in client.events("simmessage", since) if e.data[5] == "sim-bad"]
    assert errors and "LimitError - T: cannot move to 500.00 K" in errors[-1][3]
    assert client.eval("mono.read()") == 2.0  # nothing really moved
