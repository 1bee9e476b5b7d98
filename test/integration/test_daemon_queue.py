"""The request queue: order, unqueue, rearrange, update of queued and running scripts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from daemonproc import EventRecorder, Gate

from nicos.clients.base import DaemonError


def start_blocker(client: EventRecorder, gate: Gate) -> str:
    """A running script that waits for *gate*; returns once it is in its loop."""
    code = "print('blocker')\n" + gate.wait_code() + "print('blocker released')\n"
    reqid = client.run(code, "blocker.py")
    client.wait_for("status", lambda d: d[0] == 0 and d[1] in (2, 3))
    return reqid


def processed_since(client: EventRecorder, since: int) -> list[str]:
    return [e.data["reqid"] for e in client.events("processing", since)]


def outputs(client: EventRecorder, since: int, reqids: list[str]) -> dict[str, list[str]]:
    return {reqid: [m[3] for m in client.messages(since, reqid) if m[2] == 20]
            for reqid in reqids}


def test_queued_scripts_run_in_order(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    blocker = start_blocker(client, gate)
    queued = []
    for letter in "ABC":
        reqid = client.run(f"print('script {letter}')", f"{letter}.py")
        event = client.wait_for("request", lambda d, r=reqid: d.get("reqid") == r, since=since)
        assert event.data == {"reqid": reqid, "name": f"{letter}.py",
                              "script": f"print('script {letter}')", "user": "admin"}
        queued.append(reqid)
    status = client.ask("getstatus")
    assert [r["reqid"] for r in status["requests"]] == queued
    assert status["requests"][0] == {"reqid": queued[0], "name": "A.py",
                                     "script": "print('script A')", "user": "admin"}
    assert status["status"][0] == 0
    gate.open()
    for reqid in [blocker, *queued]:
        assert client.wait_done(reqid, since=since).data["success"] is True
    assert processed_since(client, since) == [blocker, *queued]
    printed = [m[3] for m in client.messages(since) if m[3].startswith("script ")]
    assert printed == ["script A\n", "script B\n", "script C\n"]
    # Each script starts only after the previous one is done.
    order = [(e.name, e.data["reqid"]) for e in client.events(("processing", "done"), since)]
    assert order == [(kind, r) for r in [blocker, *queued] for kind in ("processing", "done")]


def test_unqueue(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    blocker = start_blocker(client, gate)
    a = client.run("print('A runs')", "A.py")
    b = client.run("print('B runs')", "B.py")
    assert client.ask("unqueue", a) is None
    assert client.wait_for("blocked", since=since).data == [a]
    assert [r["reqid"] for r in client.ask("getstatus")["requests"]] == [b]
    with pytest.raises(DaemonError):
        client.ask("unqueue", a)
    with pytest.raises(DaemonError):
        client.ask("unqueue", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(DaemonError):
        client.ask("unqueue", blocker)  # already executing
    gate.open()
    assert client.wait_done(b, since=since).data["success"] is True
    assert processed_since(client, since) == [blocker, b]
    assert a not in [e.data["reqid"] for e in client.events("done", since)]
    assert "A runs\n" not in [m[3] for m in client.messages(since)]


def test_unqueue_all(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    blocker = start_blocker(client, gate)
    queued = [client.run(f"print('q{i}')") for i in range(3)]
    assert client.ask("unqueue", "*") is None
    assert sorted(client.wait_for("blocked", since=since).data) == sorted(queued)
    assert client.ask("getstatus")["requests"] == []
    gate.open()
    client.wait_done(blocker, since=since)
    after = client.run("print('after unqueue all')")
    client.wait_done(after, since=since)
    assert processed_since(client, since) == [blocker, after]


def test_rearrange(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    blocker = start_blocker(client, gate)
    a, b, c = (client.run(f"print('order {x}')", f"{x}.py") for x in "ABC")
    assert client.ask("rearrange", [c, a, b]) is None
    rearranged = client.wait_for("rearranged", since=since)
    # Upstream sends one event per moved id; the last one holds the final order.
    last = client.events("rearranged", rearranged.seq)[-1]
    assert last.data == [c, a, b]
    assert [r["reqid"] for r in client.ask("getstatus")["requests"]] == [c, a, b]
    with pytest.raises(DaemonError, match="Inconsistency"):
        client.ask("rearrange", [a, b])  # c missing
    with pytest.raises(DaemonError, match="Inconsistency"):
        client.ask("rearrange", [a, b, c, "00000000-0000-0000-0000-000000000000"])
    assert [r["reqid"] for r in client.ask("getstatus")["requests"]] == [c, a, b]
    gate.open()
    for reqid in (blocker, c, a, b):
        client.wait_done(reqid, since=since)
    assert processed_since(client, since) == [blocker, c, a, b]
    printed = [m[3] for m in client.messages(since) if m[3].startswith("order ")]
    assert printed == ["order C\n", "order A\n", "order B\n"]


def test_update_queued_script(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    start_blocker(client, gate)
    a = client.run("print('old A')", "A.py")
    new_text = "print('new A')\nprint('more A')"
    assert client.ask("update", new_text, "better", a) is None
    updated = client.wait_for("updated", since=since)
    assert updated.data == {"reqid": a, "name": "A.py", "script": new_text + "\n",
                            "user": "admin"}
    assert client.ask("getstatus")["requests"][0]["script"] == new_text + "\n"
    with pytest.raises(DaemonError, match="script doesn't exist"):
        client.ask("update", "print(1)\n", "", "00000000-0000-0000-0000-000000000000")
    gate.open()
    done = client.wait_done(a, since=since)
    assert done.data["success"] is True and done.data["script"] == new_text + "\n"
    assert outputs(client, since, [a])[a] == ["new A\n", "more A\n"]


def test_update_running_script(client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    since = client.mark()
    head = "print('head')\n" + gate.wait_code()
    reqid = client.run(head + "print('tail old')\n", "upd.py")
    client.wait_for("status", lambda d: d[0] == 0 and d[1] in (2, 3))
    # Changes in already executed blocks are refused.
    with pytest.raises(DaemonError, match="differs in already executed part"):
        client.ask("update", "print('HEAD')\n" + gate.wait_code() + "print('x')\n", "no")
    with pytest.raises(DaemonError, match="too short"):
        client.ask("update", "print('head')\n", "no")  # 1 block, 2 started
    with pytest.raises(DaemonError):
        client.ask("update", "print('head')\n" + gate.wait_code() + "print(\n", "syntax")
    # Same executed part (comments and spacing do not count), new remainder.
    new_text = ("print( 'head' )  # a comment\n" + gate.wait_code()
                + "print('tail new')\nprint('one more')\n")
    mark = client.mark()
    assert client.ask("update", new_text, "new tail") is None
    processing = client.wait_for("processing", lambda d: d["reqid"] == reqid, since=mark)
    assert processing.data["script"] == new_text
    assert client.ask("getscript") == new_text
    gate.open()
    done = client.wait_done(reqid, since=since)
    assert done.data["success"] is True
    printed = outputs(client, since, [reqid])[reqid]
    assert printed == ["head\n", "tail new\n", "one more\n"]


def test_update_running_single_line_refused(client: EventRecorder) -> None:
    reqid = client.run("sleep(3600)")
    client.wait_for("status", lambda d: d == [0, 1])
    with pytest.raises(DaemonError, match="cannot update single-line script"):
        client.ask("update", "sleep(1)\nprint(2)\n", "no")
    client.ask("stop", 2)
    assert client.wait_done(reqid).data["success"] is False
