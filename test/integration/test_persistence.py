"""Nothing is lost on a crash: kill -9 the daemon, restart it on the same data.

The queue comes back in order, the request that was running is recorded as
interrupted (and not re-run), and clients see the run history and the
messages from before the crash.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemonproc import DaemonProcess, Gate


def test_queue_and_history_survive_kill_9(new_daemon: Callable[..., DaemonProcess],
                                          tmp_path: Path) -> None:
    daemon = new_daemon("persist")
    gate = Gate(tmp_path / "never-opened")
    client = daemon.connect("user")
    running = client.run("print('before the crash')\n" + gate.wait_code(), "long one")
    client.wait_for("status", lambda s: s[0] == 0 and s[1] >= 2)
    first = client.run("print('first after restart')\n", "first")
    second = client.run("print('second after restart')\n", "second")
    resume = Gate(tmp_path / "resume")
    third = client.run(resume.wait_code() + "print('third after restart')\n", "third")
    client.ask("rearrange", [third, first, second])
    client.ask("unqueue", second)
    client.disconnect()

    daemon.kill()  # SIGKILL: no chance to save anything now
    daemon.start()

    client = daemon.connect("user")
    # the recovered queue runs again: 'third' first (it waits at its gate), and
    # it may or may not have been taken up when we look
    status = client.ask("getstatus")
    assert [r["reqid"] for r in status["requests"]] in ([first], [third, first])
    outcomes = {run["reqid"]: run["outcome"] for run in client.history(50)}
    assert outcomes[running] == "interrupted"
    assert outcomes[second] == "blocked"
    assert outcomes[third] in ("running", "queued")
    resume.open()
    client.wait_done(first)
    outcomes = {run["reqid"]: run["outcome"] for run in client.history(50)}
    assert outcomes[third] == outcomes[first] == "succeeded"
    texts = [m[3] for m in client.ask("getmessages", "*")]
    assert "before the crash\n" in texts
    assert any(running in t and "interrupted" in t for t in texts)
    order = [t for t in texts if t.endswith("after restart\n")]
    assert order == ["third after restart\n", "first after restart\n"]
    runs = {run["reqid"]: run for run in client.history(50)}
    assert runs[running]["user"] == "user" and runs[running]["started"] is not None
    client.disconnect()
