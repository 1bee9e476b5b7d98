"""Reference check: driver.py against the REAL upstream daemon (NICOS 3.12.2).

This pins down the driver's behaviour (and the upstream facts in README.md)
against the genuine article, so that a failing test of *our* daemon through
the driver can be blamed on our daemon.  It needs PyPI on first run (the
upstream fetch, ~15 s); set NICOS_SKIP_UPSTREAM_REFERENCE=1 to skip it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .fetch import REPO_ROOT, UpstreamEnv, ensure_upstream

pytestmark = pytest.mark.skipif(
    os.environ.get("NICOS_SKIP_UPSTREAM_REFERENCE") == "1",
    reason="NICOS_SKIP_UPSTREAM_REFERENCE=1",
)

USER, PASSWORD = "refuser", "refpass"
LOOP = "printinfo('start')\nfor i in range(20):\n    printinfo('step', i)\n    sleep(0.2)\nprintinfo('end')\n"


def _bench_module() -> ModuleType:
    path = REPO_ROOT / "bench" / "upstream_daemon.py"
    spec = importlib.util.spec_from_file_location("_bench_upstream_daemon", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DriverProc:
    """driver.py in a subprocess; every reply is awaited with a timeout."""

    def __init__(self, up: UpstreamEnv, port: int, user: str, password: str) -> None:
        self.proc = subprocess.Popen(
            up.driver_command("127.0.0.1", port, user, password),
            env=up.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def __call__(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.lines.get(timeout=float(cmd.get("timeout", 40)) + 10))
        assert reply["op"] == cmd["op"]
        return reply

    def close(self) -> None:
        try:
            self(op="quit")
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def upstream() -> UpstreamEnv:
    return ensure_upstream()


@pytest.fixture(scope="module")
def daemon_port(upstream: UpstreamEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    bench = _bench_module()
    port = bench.free_port()
    workdir: Path = tmp_path_factory.mktemp("upstream-daemon")
    proc = bench.start_upstream_daemon(port, workdir, USER, PASSWORD, upstream=upstream)
    try:
        yield port
    finally:
        bench.stop(proc)


@pytest.fixture()
def drv(upstream: UpstreamEnv, daemon_port: int) -> Iterator[DriverProc]:
    d = DriverProc(upstream, daemon_port, USER, PASSWORD)
    try:
        reply = d(op="connect", eventmask=["livedata"])
        assert reply["ok"], reply
        yield d
    finally:
        d.close()


def _statuses(d: DriverProc, since: int) -> list[list[int]]:
    return [ev["data"] for ev in d(op="events", names=["status"], since=since)["events"]]


def test_login_and_banner(drv: DriverProc) -> None:
    hello = drv(op="hello")
    assert hello["nicos_version"] == "3.12.2"
    status = drv(op="status")
    assert status["connected"] and status["user_level"] == 20


def test_connect_reply_and_wrong_password(upstream: UpstreamEnv, daemon_port: int) -> None:
    good = DriverProc(upstream, daemon_port, USER, PASSWORD)
    try:
        reply = good(op="connect", raw=True)
        assert reply["ok"] and reply["user_level"] == 20 and reply["serializer"] == "json"
        banner = reply["banner"]
        assert banner["protocol_version"] == 24 and banner["serializer"] == "json"
        assert banner["pw_hashing"] == "rsa,plain" and "__bytes__" in banner["rsakey"]
        assert json.loads(reply["raw"][1]) == {"user_level": 20}
    finally:
        good.close()
    bad = DriverProc(upstream, daemon_port, USER, "wrong")
    try:
        reply = bad(op="connect")
        assert not reply["ok"] and reply["nak"] == "Invalid username or password!"
    finally:
        bad.close()


def test_getstatus_and_eval(drv: DriverProc) -> None:
    st = drv(op="ask", command="getstatus")
    assert st["ok"]
    assert set(st["result"]) == {
        "status",
        "script",
        "scriptname",
        "eta",
        "watch",
        "requests",
        "mode",
        "setups",
        "devices",
        "devicefailures",
    }
    assert drv(op="eval", expr="1+1") == {"ok": True, "result": 2, "op": "eval"}
    err = drv(op="eval", expr="1/0")
    assert not err["ok"] and err["exception"]["__exception__"] == "ZeroDivisionError"
    text = drv(op="eval", expr="1/0", stringify=True)
    assert text["result"] == "<cannot be evaluated: division by zero>"
    nak = drv(op="ask", command="continue")
    assert nak["nak"] == "no script is running"


def test_script_messages_and_done(drv: DriverProc) -> None:
    mark = drv(op="mark")["seq"]
    run = drv(op="run", code="print('hello')\nsleep(0.2)\nprintinfo('x is', 2)\n", name="demo.py")
    assert run["ok"]
    done = drv(op="wait_event", name="done", match={"reqid": run["reqid"]}, timeout=15)
    assert done["ok"] and done["event"]["data"]["success"] is True
    msgs = [ev["data"] for ev in drv(op="events", names=["message"], since=mark)["events"]]
    texts = [(m[2], m[3]) for m in msgs]
    assert (21, "demo.py\n") in texts and (20, "hello\n") in texts and (20, "x is 2\n") in texts
    assert texts[-1] == (21, "\n")
    assert all(m[5] == run["reqid"] for m in msgs)
    st = _statuses(drv, mark)
    assert st[:3] == [[0, -1], [0, 0], [0, 1]] and st[-2:] == [[-1, 3], [-1, -1]]


def test_break_continue(drv: DriverProc) -> None:
    mark = drv(op="mark")["seq"]
    run = drv(op="run", code=LOOP, name="loop.py")
    assert drv(op="wait_event", name="message", match={"3": "step 1\n"}, timeout=10)["ok"]
    assert drv(op="ask", command="break", args=[2])["ok"]
    paused = drv(op="wait_event", name="status", match={"0": 1}, timeout=5)
    assert paused["ok"] and paused["event"]["data"] == [1, 4]
    assert drv(op="ask", command="getstatus")["result"]["status"] == [1, 4]
    assert drv(op="ask", command="break", args=[2])["nak"] == "script is already paused"
    assert drv(op="ask", command="continue")["ok"]
    assert drv(op="wait_event", name="status", match=[0, 4], timeout=5)["ok"]
    assert drv(op="ask", command="stop", args=[2])["ok"]
    done = drv(op="wait_event", name="done", match={"reqid": run["reqid"]}, timeout=10)
    assert done["event"]["data"]["success"] is False
    texts = [ev["data"][3] for ev in drv(op="events", names=["message"], since=mark)["events"]]
    for expected in (
        f"Pause requested by {USER}\n",
        f"Script paused by {USER}\n",
        f"Script continued by {USER}\n",
        f"Stop requested by {USER}\n",
        f"Script stopped by {USER}\n",
    ):
        assert expected in texts
    st = _statuses(drv, mark)
    assert [2, 4] in st and st[-2:] == [[-2, 4], [-2, -1]]
    assert drv(op="events", names=["blocked"], since=mark)["events"][0]["data"] == []
