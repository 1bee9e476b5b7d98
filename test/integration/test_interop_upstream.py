"""The UNCHANGED upstream NICOS 3.12.2 client against our daemon.

The upstream release runs in its own virtual environment (test/integration/upstream/
fetch.py) and is driven through driver.py (JSON lines).  These tests are required:
if the upstream release cannot be fetched (e.g. no access to PyPI), they fail;
they are never skipped.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import DaemonProcess, Gate, make_idle
from upstream.fetch import UpstreamEnv, ensure_upstream

STATUS_KEYS = {"status", "script", "scriptname", "eta", "watch", "requests", "mode",
               "setups", "devices", "devicefailures"}


@pytest.fixture(scope="module")
def upstream() -> UpstreamEnv:
    try:
        return ensure_upstream()
    except Exception as err:  # noqa: BLE001 - must fail, never skip
        pytest.fail(f"cannot provide the upstream NICOS client: {err}", pytrace=False)


class DriverProc:
    """driver.py in a subprocess; every reply is awaited with a timeout."""

    def __init__(self, up: UpstreamEnv, daemon: DaemonProcess, user: str, password: str,
                 cwd: Path) -> None:
        self.proc = subprocess.Popen(
            up.driver_command(daemon.host, daemon.port, user, password),
            env=up.env(), cwd=cwd,  # a cwd without our nicos/ package in it
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # EOF

    def __call__(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.lines.get(timeout=float(cmd.get("timeout", 40)) + 20)
        assert line, f"driver ended (exit code {self.proc.poll()}) during {cmd}"
        reply = json.loads(line)
        assert reply["op"] == cmd["op"], reply
        return reply

    def wait(self, name: str, match: Any = None, timeout: float = 10, **kw: Any) -> Any:
        """Data of the first matching event after the driver's cursor; fails on timeout."""
        cmd: dict[str, Any] = {"op": "wait_event", "name": name, "timeout": timeout, **kw}
        if match is not None:
            cmd["match"] = match
        reply = self(**cmd)
        assert reply["ok"], reply
        return reply["event"]["data"]

    def events(self, names: list[str], since: int) -> list[Any]:
        return [e["data"] for e in self(op="events", names=names, since=since)["events"]]

    def mark(self) -> int:
        return self(op="mark")["seq"]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self(op="quit")
                self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture()
def driver(upstream: UpstreamEnv, daemon: DaemonProcess,
           tmp_path: Path) -> Iterator[Callable[..., DriverProc]]:
    """``driver(user="admin", password=None)`` -> a DriverProc, not yet connected."""
    started: list[DriverProc] = []

    def make(user: str = "admin", password: str | None = None) -> DriverProc:
        if password is None:
            password = daemon.accounts[user].password
        proc = DriverProc(upstream, daemon, user, password, tmp_path)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.close()


@pytest.fixture()
def admin(driver: Callable[..., DriverProc]) -> DriverProc:
    d = driver("admin")
    reply = d(op="connect", eventmask=["livedata"])
    assert reply["ok"], reply
    return d


@pytest.fixture(autouse=True)
def back_to_idle(daemon: DaemonProcess) -> Iterator[None]:
    yield
    if daemon.alive():
        cleanup = daemon.connect("admin")
        try:
            make_idle(cleanup)
            cleanup.ask("unlock")
        finally:
            cleanup.disconnect()


def test_it_is_the_upstream_client(upstream: UpstreamEnv, admin: DriverProc) -> None:
    hello = admin(op="hello")
    assert hello["nicos_version"] == "3.12.2"
    assert Path(hello["client_module"]).is_relative_to(upstream.tree)


def test_connect_with_rsa_login(driver: Callable[..., DriverProc]) -> None:
    d = driver("admin")
    reply = d(op="connect", raw=True)
    assert reply["ok"], reply
    assert reply["user_level"] == 20
    assert reply["serializer"] == "json"  # detected from our banner
    banner = reply["banner"]
    assert banner["protocol_version"] == 24 and banner["pw_hashing"].startswith("rsa")
    assert json.loads(reply["raw"][1]) == {"user_level": 20}
    status = d(op="status")
    assert status["connected"] and status["user_level"] == 20


@pytest.mark.parametrize("user, level", [("user", 10), ("guest", 0)])
def test_levels(driver: Callable[..., DriverProc], user: str, level: int) -> None:
    d = driver(user)
    reply = d(op="connect")
    assert reply["ok"] and reply["user_level"] == level, reply


@pytest.mark.parametrize("user, password", [("admin", "wrong-password-9"),
                                            ("nobody", "wrong-password-9")])
def test_wrong_password_refused(driver: Callable[..., DriverProc], user: str,
                                password: str) -> None:
    d = driver(user, password)
    reply = d(op="connect")
    assert not reply["ok"]
    assert reply["nak"] == "Invalid username or password!", reply
    assert d(op="status")["connected"] is False


def test_getstatus_and_eval(admin: DriverProc) -> None:
    status = admin(op="ask", command="getstatus")
    assert status["ok"], status
    result = status["result"]
    assert set(result) == STATUS_KEYS
    assert len(result["status"]) == 2 and result["status"][0] in (-1, -2)
    assert len(result["eta"]) == 2 and len(result["setups"]) == 2
    version = admin(op="ask", command="getversion")
    assert version["ok"] and isinstance(version["result"], str)
    assert admin(op="eval", expr="1+1") == {"ok": True, "result": 2, "op": "eval"}
    assert admin(op="eval", expr="[1, (2, 'x')]")["result"] == [1, [2, "x"]]
    assert admin(op="eval", expr="1+1", stringify=True)["result"] == "2"
    text = admin(op="eval", expr="1/0", stringify=True)["result"]
    assert text.startswith("<cannot be evaluated: ")
    # A failed evaluation is a NAK (protocol reference §4.3: a pickle-free daemon cannot
    # send the exception object); the upstream client reports it as an error.
    for kwds in ({}, {"default": -1}):
        error = admin(op="eval", expr="1/0", **kwds)
        assert not error["ok"], error
        assert error["nak"] == "exception raised while evaluating: division by zero", error
    # the connection is still fine
    assert admin(op="ask", command="getversion") == version
    nak = admin(op="ask", command="continue")
    assert nak["nak"] == "no script is running"


def test_queue_script_messages_and_done(admin: DriverProc) -> None:
    mark = admin.mark()
    code = "print('hello')\nsleep(0.01)\nprintinfo('x is', 2)\n"
    run = admin(op="run", code=code, name="demo.py")
    assert run["ok"], run
    reqid = run["reqid"]
    request = admin.wait("request", {"reqid": reqid})
    assert request == {"reqid": reqid, "name": "demo.py", "script": code, "user": "admin"}
    assert admin.wait("processing", {"reqid": reqid}) == request
    assert admin.wait("message", {"3": "hello\n", "5": reqid})[2] == 20
    assert admin.wait("message", {"3": "x is 2\n", "5": reqid})[2] == 20
    done = admin.wait("done", {"reqid": reqid}, timeout=15)
    assert done == {**request, "success": True}
    statuses = admin.events(["status"], mark)
    assert statuses[0][0] == 0 and statuses[-1][0] == -1
    messages = admin.events(["message"], mark)
    assert all(len(m) == 6 and m[5] == reqid for m in messages)
    # getmessages through the upstream client
    recent = admin(op="ask", command="getmessages", args=["5"])
    assert recent["ok"] and "x is 2\n" in [m[3] for m in recent["result"]]


def test_script_error(admin: DriverProc) -> None:
    run = admin(op="run", code="print('a')\nraise ValueError('boom')\n", name="err.py")
    error = admin.wait("message", {"2": 40, "5": run["reqid"]})
    assert "ValueError" in error[3] and "boom" in error[3]
    assert admin.wait("done", {"reqid": run["reqid"]})["success"] is False


def test_break_continue_stop(admin: DriverProc, tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    mark = admin.mark()
    code = "print('looping')\n" + gate.wait_code() + "print('released')\n"
    run = admin(op="run", code=code, name="loop.py")
    reqid = run["reqid"]
    admin.wait("message", {"3": "looping\n"})
    admin.wait("status", {"0": 0, "1": {"$in": [2, 3]}})
    assert admin(op="ask", command="break", args=[2])["ok"]
    paused = admin.wait("status", {"0": 1})
    assert paused[1] in (2, 3)
    assert admin(op="ask", command="getstatus")["result"]["status"] == paused
    assert admin(op="ask", command="break", args=[2])["nak"] == "script is already paused"
    assert admin(op="ask", command="continue")["ok"]
    assert admin.wait("status", {"0": 0})[1] in (2, 3)
    assert admin(op="ask", command="continue")["nak"] == "script is not paused"
    assert admin(op="ask", command="stop", args=[2])["ok"]
    admin.wait("status", {"0": 2})
    done = admin.wait("done", {"reqid": reqid})
    assert done["success"] is False
    texts = [m[3] for m in admin.events(["message"], mark)]
    for expected in ("Pause requested by admin\n", "Script paused by admin\n",
                     "Script continued by admin\n", "Stop requested by admin\n",
                     "Script stopped by admin\n"):
        assert expected in texts, (expected, texts)
    assert "released\n" not in texts
    assert admin.events(["status"], mark)[-1][0] == -2
    assert admin.events(["blocked"], mark) == [[]]


def test_queue_unqueue_while_running(admin: DriverProc, tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    mark = admin.mark()
    first = admin(op="run", code=gate.wait_code(), name="first.py")["reqid"]
    admin.wait("status", {"0": 0, "1": {"$in": [1, 2]}})
    second = admin(op="run", code="print('second')", name="second.py")["reqid"]
    third = admin(op="run", code="print('third')", name="third.py")["reqid"]
    requests = admin(op="ask", command="getstatus")["result"]["requests"]
    assert [r["reqid"] for r in requests] == [second, third]
    assert admin(op="ask", command="unqueue", args=[second])["ok"]
    assert admin.wait("blocked") == [second]
    start = admin(op="run", code="print(1)", noqueue=True)
    assert start["nak"] == "a script is running"
    gate.open()
    admin.wait("done", {"reqid": third})
    processed = [d["reqid"] for d in admin.events(["processing"], mark)]
    assert processed == [first, third]


def test_emergency_from_upstream_guest(driver: Callable[..., DriverProc],
                                       admin: DriverProc, tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    run = admin(op="run", code=gate.wait_code(), name="long.py")
    admin.wait("status", {"0": 0, "1": {"$in": [1, 2]}})
    guest = driver("guest")
    assert guest(op="connect")["ok"]
    assert guest(op="ask", command="emergency")["ok"]
    assert admin.wait("done", {"reqid": run["reqid"]})["success"] is False


TRANSFER = """
import json, sys
from nicos.clients.base import NicosClient, ConnectionData

class Client(NicosClient):
    def signal(self, name, *args):
        if name in ('error', 'failed', 'broken'):
            print(json.dumps({'signal': name, 'args': [str(a) for a in args]}), flush=True)

host, port, user, password = sys.argv[1:5]
client = Client(print)
client.connect(ConnectionData(host, int(port), user, password))
path = client.ask('transfer', bytes(range(256)) + b'upstream')
print(json.dumps({'path': path}), flush=True)
client.disconnect()
"""


def test_transfer_from_upstream_client(upstream: UpstreamEnv, daemon: DaemonProcess,
                                       tmp_path: Path) -> None:
    account = daemon.accounts["user"]
    proc = subprocess.run(
        [str(upstream.python), "-c", TRANSFER, daemon.host, str(daemon.port),
         account.name, account.password],
        env=upstream.env(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {"path"} <= set(replies[-1]), (replies, proc.stderr)
    path = replies[-1]["path"]
    assert isinstance(path, str), replies
    assert Path(path).read_bytes() == bytes(range(256)) + b"upstream"
    # the daemon refused nothing along the way
    assert all("signal" not in r for r in replies), replies
