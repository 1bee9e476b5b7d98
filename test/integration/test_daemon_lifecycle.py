"""Start-up refusals, clean shutdown with a running script, crash and restart."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonproc import DaemonProcess, Gate

from nicos.clients.base import ConnectionFailed


def test_sigterm_stops_running_script_and_exits_cleanly(
        new_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = new_daemon("sigterm")
    client = daemon.connect("admin")
    since = client.mark()
    reqid = client.run("print('napping')\nsleep(3600)\n")
    client.wait_for("status", lambda d: d == [0, 2])
    daemon.stop_and_check()
    # The script was stopped and its last events were still delivered, then the
    # connection was closed.
    done = client.wait_done(reqid, since=since, timeout=20)
    assert done.data["success"] is False
    disconnected = client.wait_for("disconnected", since=since, timeout=20)
    assert done.seq < disconnected.seq
    assert not client.connected


def test_killed_daemon_restarts_with_same_key_and_queue(
        new_daemon: Callable[..., DaemonProcess], gates: Callable[[], Gate]) -> None:
    daemon = new_daemon("restart")
    first = daemon.connect("user")
    banner = dict(first.banner)
    since = first.mark()
    gate_a, gate_b = gates(), gates()
    running = first.run(gate_a.wait_code() + "print('A done')\n", "A.py")
    first.wait_for("status", lambda d: d[0] == 0 and d[1] in (1, 2))
    queued_code = gate_b.wait_code() + "print('B done')\n"
    queued = first.run(queued_code, "B.py")
    daemon.kill()  # SIGKILL: no clean shutdown, sockets reset by the kernel
    first.wait_for("disconnected", since=since, timeout=20)
    assert not first.connected
    with pytest.raises(ConnectionFailed):
        first.ask("getversion")

    daemon.start()  # same configuration, same port, same data directory
    second = daemon.connect("user")
    try:
        assert second.banner["rsakey"] == banner["rsakey"]
        # The acknowledged queued request came back and runs; the interrupted one is
        # reported, not run again.
        status = second.ask("getstatus")
        assert status["requests"] in ([], [{"reqid": queued, "name": "B.py",
                                            "script": queued_code, "user": "user"}])
        since = second.mark()
        if status["requests"]:  # not yet taken up when we asked
            second.wait_for("processing", lambda d: d["reqid"] == queued)
        status = second.ask("getstatus")
        assert status["status"][0] == 0 and status["script"] == queued_code, status
        texts = [m[3] for m in second.ask("getmessages", "*")]
        assert any(running in t and "interrupted" in t for t in texts), texts[-10:]
        gate_a.open()
        gate_b.open()
        done = second.wait_done(queued, since=since)
        assert done.data["success"] is True
        assert "A done\n" not in [m[3] for m in second.messages(since)]
    finally:
        second.disconnect()
    daemon.stop_and_check()


def _refused_start(daemon: DaemonProcess) -> str:
    with pytest.raises(RuntimeError):
        daemon.start(timeout=30)
    assert daemon.proc is not None
    code = daemon.proc.returncode
    assert code not in (0, None), code
    return daemon.stderr_path.read_text(errors="replace")


def test_unknown_config_key_refused(tmp_path: Path, rsa_key_file: Path,
                                    accounts: dict) -> None:
    daemon = DaemonProcess(tmp_path, rsa_key_file, accounts.values(), bogus_key=1)
    assert "bogus_key" in _refused_start(daemon)


def test_key_file_readable_by_others_refused(tmp_path: Path, rsa_key_file: Path,
                                             accounts: dict) -> None:
    exposed = tmp_path / "exposed.pem"
    exposed.write_bytes(rsa_key_file.read_bytes())
    os.chmod(exposed, 0o644)
    daemon = DaemonProcess(tmp_path, exposed, accounts.values())
    stderr = _refused_start(daemon)
    assert "exposed.pem" in stderr


def test_port_in_use_refused(new_daemon: Callable[..., DaemonProcess], tmp_path: Path,
                             rsa_key_file: Path, accounts: dict) -> None:
    running = new_daemon("port-owner")
    second = DaemonProcess(tmp_path, rsa_key_file, accounts.values(), port=running.port)
    _refused_start(second)
    # the first one is unaffected
    client = running.connect("guest")
    assert client.ask("getversion")
    client.disconnect()
    running.stop_and_check()


def test_sigterm_exits_although_a_script_thread_never_ends(
        new_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = new_daemon("lingering")
    client = daemon.connect("admin")
    # A non-daemon thread in library code (Event.wait): no stop reaches it, and
    # interpreter shutdown would wait for it forever.
    reqid = client.run("import threading\n"
                       "threading.Thread(target=threading.Event().wait, name='forever',\n"
                       "                 daemon=False).start()\n")
    assert client.wait_done(reqid).data["success"] is True
    daemon.stop_and_check()
    assert "still run: forever" in daemon.diagnostics()
