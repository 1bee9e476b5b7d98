"""Event delivery: watch expressions, event masks, several clients, a client that dies."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from daemonproc import REPO_ROOT, WAIT, DaemonProcess, EventRecorder, Gate


@pytest.fixture()
def watching(client: EventRecorder) -> Iterator[list[str]]:
    """Expressions added to this list are unwatched after the test."""
    added: list[str] = []
    yield added
    if added and client.connected:
        client.ask("unwatch", added)


def test_watch_event_only_on_change(client: EventRecorder, watching: list[str]) -> None:
    # _tick() counts its evaluations and changes its value only every 4th time, so
    # a daemon that sent a watch event per evaluation would repeat values.
    client.ask("exec", "_tick_n = [0]\ndef _tick():\n    _tick_n[0] += 1\n"
                       "    return _tick_n[0] // 4\n")
    key = "_tick():default"
    since = client.mark()
    watching.append("_tick()")
    assert client.ask("watch", ["_tick()"]) is None
    # wait_for returns consecutive events carrying the key (the cursor moves past each)
    values = [int(client.wait_for("watch", lambda d: key in d).data[key]) for _ in range(4)]
    assert values == list(range(values[0], values[0] + 4)), values
    assert all(key in e.data for e in client.events("watch", since))


def test_watch_values_and_unwatch(client: EventRecorder, watching: list[str]) -> None:
    client.ask("exec", "wv_a = 1")
    watching.extend(["wv_a", "wv_missing:grp", "wv_b:grp"])
    assert client.ask("watch", ["wv_a", "wv_missing:grp"]) is None
    event = client.wait_for("watch", lambda d: "wv_a:default" in d and "wv_missing:grp" in d)
    assert event.data["wv_a:default"] == "1"
    assert event.data["wv_missing:grp"] == \
        "<cannot be evaluated: name 'wv_missing' is not defined>"
    client.ask("exec", "wv_a = [1, 'x']")
    event = client.wait_for("watch", lambda d: d.get("wv_a:default") == "[1, 'x']")
    status = client.ask("getstatus")
    assert status["watch"]["wv_a:default"] == "[1, 'x']"
    # unwatch one expression, then a whole group
    assert client.ask("unwatch", ["wv_a"]) is None
    assert "wv_a:default" not in client.ask("getstatus")["watch"]
    client.ask("exec", "wv_b = 'bee'")
    assert client.ask("watch", ["wv_b:grp"]) is None
    since = client.mark()
    client.wait_for("watch", lambda d: d.get("wv_b:grp") == "'bee'")
    assert all("wv_a:default" not in e.data for e in client.events("watch", since))
    assert client.ask("unwatch", ["*:grp"]) is None
    remaining = client.ask("getstatus")["watch"]
    assert "wv_b:grp" not in remaining and "wv_missing:grp" not in remaining


def test_watch_reaches_other_clients(connect: Callable[..., EventRecorder],
                                     client: EventRecorder, watching: list[str]) -> None:
    observer = connect("guest")
    client.ask("exec", "wv_shared = 'one'")
    watching.append("wv_shared")
    client.ask("watch", ["wv_shared"])
    observer.wait_for("watch", lambda d: d.get("wv_shared:default") == "'one'")
    client.ask("exec", "wv_shared = 'two'")
    observer.wait_for("watch", lambda d: d.get("wv_shared:default") == "'two'")


def test_eventmask(connect: Callable[..., EventRecorder], client: EventRecorder) -> None:
    masked_at_login = connect("user", eventmask=["message"])
    masked_later = connect("user")
    assert masked_later.ask("eventmask", ["message", "status"]) is None
    marks = {c: c.mark() for c in (client, masked_at_login, masked_later)}
    reqid = client.run("print('mask me')\nprint('me too')\n")
    for c in marks:
        # done comes after the messages on every connection, so once it is here,
        # the messages would have been too.
        c.wait_done(reqid, since=marks[c])
    assert "mask me\n" in [m[3] for m in client.messages(marks[client])]
    assert client.events("status", marks[client])
    assert masked_at_login.events("message", marks[masked_at_login]) == []
    assert masked_at_login.events("status", marks[masked_at_login])  # not masked there
    assert masked_later.events("message", marks[masked_later]) == []
    assert masked_later.events("status", marks[masked_later]) == []
    assert masked_later.events("processing", marks[masked_later])
    # unmask again
    assert masked_later.ask("eventunmask", ["message"]) is None
    since = masked_later.mark()
    reqid = client.run("print('unmasked')")
    masked_later.wait_done(reqid, since=since)
    assert "unmasked\n" in [m[3] for m in masked_later.messages(since)]
    assert masked_later.events("status", since) == []  # still masked


def test_events_reach_all_clients_in_the_same_order(
        connect: Callable[..., EventRecorder], client: EventRecorder) -> None:
    others = [connect(user) for user in ("user", "guest")]
    marks = [c.mark() for c in (client, *others)]
    reqid = client.run("for i in range(20):\n    print('line', i)\n")
    seqs = []
    for c, since in zip((client, *others), marks, strict=True):
        c.wait_done(reqid, since=since)
        seqs.append([(e.name, json.dumps(e.data)) for e in c.events(
            ("request", "processing", "message", "done"), since)])
    assert seqs[0] == seqs[1] == seqs[2]
    assert len([m for m in seqs[0] if m[0] == "message" and "line " in m[1]]) == 20


ORPHAN = """
import sys
from nicos.clients.base import NicosClient
host, port, user, password, code = sys.argv[1:6]
client = NicosClient()
client.connect(host, int(port), user, password)
print(client.run(code, 'orphan.py'), flush=True)
sys.stdin.read()  # hold the connection until killed
"""


def test_killed_client_leaves_script_running(daemon: DaemonProcess, client: EventRecorder,
                                             gates: Callable[[], Gate]) -> None:
    gate = gates()
    code = "print('orphan started')\n" + gate.wait_code() + "print('orphan finished')\n"
    account = daemon.accounts["user"]
    client.ask("unlock")
    since = client.mark()
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, daemon.host, str(daemon.port), account.name,
         account.password, code],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout],  # type: ignore
                     daemon=True).start()
    try:
        reqid = lines.get(timeout=WAIT * 3).strip()
        client.wait_for("status", lambda d: d[0] == 0 and d[1] in (2, 3), since=since)
    finally:
        proc.kill()  # SIGKILL: the sockets close without a quit
        proc.wait(WAIT)
    assert client.ask("getversion") == client.banner["daemon_version"]
    status = client.ask("getstatus")
    assert status["status"][0] == 0 and status["scriptname"] == "orphan.py"
    # New logins still work, and the orphan finishes normally.
    late = daemon.connect("guest")
    try:
        late_since = late.mark()
        gate.open()
        done = client.wait_done(reqid, since=since)
        assert done.data["success"] is True and done.data["user"] == "user"
        late.wait_done(reqid, since=late_since)
        assert "orphan finished\n" in [m[3] for m in client.messages(since, reqid)]
    finally:
        late.disconnect()
    # The dead client's control of the session does not block the admin.
    assert client.ask("exec", "after_orphan = 1") is None
    client.ask("unlock")
