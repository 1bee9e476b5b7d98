"""Scripts that misbehave: they catch the stop, block in C code, or fork threads.

A stop escalates with each further request (stop, immediate, emergency), a
caught stop escalates by itself, and through all of it the daemon answers
commands and runs the next script once the bad one has ended.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from daemonproc import EventRecorder, Gate

from nicos.clients.base import DaemonError

WARNING = 30
STOPPING = 2


def texts(client: EventRecorder, since: int, reqid: str | None = None) -> list[str]:
    return [m[3] for m in client.messages(since, reqid)]


def wait_message(client: EventRecorder, since: int, fragment: str, level: int | None = None) -> list:
    """The first message after *since* containing *fragment* (at *level*, if given)."""
    return client.wait_for(
        "message", lambda d: fragment in d[3] and (level is None or d[2] == level),
        since=since).data


def start(client: EventRecorder, code: str, ready: str, line: int) -> str:
    """Run *code*; return once it printed *ready* and the status shows *line*."""
    since = client.mark()
    reqid = client.run(code, "bad.py")
    wait_message(client, since, ready)
    client.wait_for("status", lambda d: d == [0, line], since=since)
    return reqid


def still_works(client: EventRecorder) -> None:
    """The daemon is idle and runs a new script."""
    since = client.mark()
    assert client.ask("getstatus")["status"][0] in (-1, -2)
    reqid = client.run("print('next script')")
    assert client.wait_done(reqid).data["success"] is True
    assert "next script\n" in texts(client, since, reqid)


# -- a script that catches the stop --------------------------------------------------


def test_caught_stop_escalates_to_immediate(client: EventRecorder) -> None:
    code = ("print('looping')\n"
            "while True:\n"
            "    try:\n"
            "        try:\n"
            "            sleep(3600)\n"
            "        except BaseException:\n"
            "            print('caught')\n"
            "        print('went on')\n"
            "    except BaseException:\n"
            "        print('caught again')\n")
    reqid = start(client, code, "looping", 5)
    since = client.mark()
    client.ask("stop", 2)
    assert client.wait_done(reqid).data["success"] is False
    messages = client.messages(since, reqid)
    shown = [m[3] for m in messages]
    # The first stop was caught (the handler, being cleanup, ran); going on
    # after it escalated, and the immediate stop cut through the next handler.
    assert "caught\n" in shown
    assert "went on\n" not in shown and "caught again\n" not in shown, shown
    escalation = [m for m in messages
                  if "caught the stop requested by admin and went on at line 8" in m[3]]
    assert len(escalation) == 1 and escalation[0][2] == WARNING, shown
    assert "escalated to immediate stop" in escalation[0][3]
    assert "Script stopped by admin\n" in shown
    still_works(client)


ENDLESS_CLEANUP = ("print('working')\n"
                   "try:\n"
                   "    sleep(3600)\n"
                   "finally:\n"
                   "    print('cleaning up')\n"
                   "    while True:\n"
                   "        sleep(0.01)\n")


def stop_into_endless_cleanup(client: EventRecorder) -> tuple[str, int]:
    """Start a script whose cleanup never ends and stop it once: (reqid, mark)."""
    reqid = start(client, ENDLESS_CLEANUP, "working", 3)
    since = client.mark()
    client.ask("stop", 2)
    return reqid, since


def test_second_stop_ends_endless_cleanup(client: EventRecorder) -> None:
    reqid, since = stop_into_endless_cleanup(client)
    # The first stop lets the cleanup run, however long it takes ...
    wait_message(client, since, "cleaning up")
    client.wait_for("status", lambda d: d[0] == STOPPING, since=since)
    assert client.ask("getstatus")["status"][0] == STOPPING
    # ... the second one stops it.
    client.ask("stop", 2)
    assert client.wait_done(reqid).data["success"] is False
    shown = texts(client, since)
    escalation = [t for t in shown if t.startswith("Stop requested again by admin")]
    assert len(escalation) == 1 and "escalated to immediate stop" in escalation[0], shown
    assert "Script stopped by admin\n" in shown
    still_works(client)


def test_break_refused_while_stopping(client: EventRecorder) -> None:
    reqid, since = stop_into_endless_cleanup(client)
    wait_message(client, since, "cleaning up")
    with pytest.raises(DaemonError, match="already stopping"):
        client.ask("break", 2)
    client.ask("stop", 2)
    assert client.wait_done(reqid).data["success"] is False


# -- a script stuck in C code ----------------------------------------------------------


def test_stuck_in_c_call_daemon_stays_controllable(client: EventRecorder) -> None:
    code = ("import threading as th\n"
            "release = th.Event()\n"
            "print('blocking')\n"
            "release.wait()\n"
            "print('after the C call')\n")
    reqid = start(client, code, "blocking", 4)
    since = client.mark()
    client.ask("stop", 2)
    client.ask("stop", 2)  # immediate: every line would stop it, but none runs
    stuck = wait_message(client, since, "does not respond to the immediate stop", WARNING)
    assert "in wait(), called from script line 4" in stuck[3], stuck
    assert "abandoned" in stuck[3]
    client.wait_for("status", lambda d: d[0] == STOPPING, since=since)
    # Other threads serve clients: status and eval work.
    assert client.ask("getstatus")["status"][0] == STOPPING
    assert client.ask("eval", "6 * 7", False) == 42
    # The third stop is an emergency stop: devices are stopped, and the
    # script is still reported as stuck.
    mark = client.mark()
    client.ask("stop", 2)
    third = wait_message(client, mark, "Stop requested a third time by admin", WARNING)
    assert "emergency stop" in third[3]
    wait_message(client, mark, "Stopping devices for immediate stop", WARNING)
    wait_message(client, mark, "does not respond to the emergency stop", WARNING)
    # Scripts queued now wait for the stuck one to end.
    queued = client.run("print('queued while stuck')")
    assert [r["reqid"] for r in client.ask("getstatus")["requests"]] == [queued]
    assert queued not in [e.data["reqid"] for e in client.events("processing", since)]
    # When the C call returns, the script is stopped at its next line.
    assert client.ask("eval", "release.set()", False) is None
    assert client.wait_done(reqid).data["success"] is False
    shown = texts(client, since, reqid)
    assert "after the C call\n" not in shown
    assert "Script stopped by admin\n" in shown
    assert client.wait_done(queued, since=since).data["success"] is True
    still_works(client)


@pytest.mark.parametrize(("code", "line", "level"), [
    # time.sleep reached despite the ban on it: as interruptible as sleep()
    ("import time as t\nprint('napping')\nt.sleep(3600)\nprint('woke')\n", 3, 2),
    ("print('napping')\n__import__('time').sleep(3600)\nprint('woke')\n", 2, 2),
    # time.sleep in library code: an internal delay, cut short by level 5
    ("exec(compile('import time\\ndef nap():\\n    time.sleep(3600)\\n', 'helper.py', "
     "'exec'))\nprint('napping')\nnap()\nprint('woke')\n", 3, 5),
])
def test_time_sleep_is_interruptible(client: EventRecorder, code: str, line: int,
                                     level: int) -> None:
    reqid = start(client, code, "napping", line)
    since = client.mark()
    client.ask("stop", level)
    assert client.wait_done(reqid).data["success"] is False
    shown = texts(client, since, reqid)
    assert "woke\n" not in shown
    assert "Script stopped by admin\n" in shown
    # the first stop did it: nothing escalated
    assert not [t for t in shown if "escalated" in t], shown


# -- a script that forks threads ---------------------------------------------------------


def wait_threads_ended(client: EventRecorder, since: int, names: list[str]) -> None:
    """Wait until the daemon reported each of *names* as ended (maybe in several messages)."""
    pending = set(names)
    while pending:
        event = client.wait_for(
            "message", lambda d: "Thread(s) started by the script ended" in d[3], since=since)
        pending -= {name for name in pending if name in event.data[3]}
        since = event.seq + 1


def test_stop_ends_threads_the_script_started(client: EventRecorder) -> None:
    # non-daemon threads: if they survived, the daemon could not exit at the
    # end of the module (the fixture checks that)
    code = ("import threading\n"
            "running = threading.Barrier(3)\n"
            "def worker():\n"
            "    running.wait()\n"
            "    while True:\n"
            "        try:\n"
            "            sleep(0.01)\n"
            "        except BaseException:\n"
            "            pass\n"
            "workers = [threading.Thread(target=worker, name=f'rogue-{i}') for i in range(2)]\n"
            "for w in workers:\n"
            "    w.start()\n"
            "running.wait()\n"
            "print('forked')\n"
            "sleep(3600)\n")
    reqid = start(client, code, "forked", 15)
    since = client.mark()
    client.ask("stop", 2)
    assert client.wait_done(reqid).data["success"] is False
    told = wait_message(client, since, "Stopping 2 thread(s) started by the script", WARNING)
    assert "rogue-0" in told[3] and "rogue-1" in told[3]
    wait_threads_ended(client, since, ["rogue-0", "rogue-1"])
    assert client.ask("eval", "[w.is_alive() for w in workers]", False) == [False, False]
    still_works(client)


def test_thread_that_does_not_end_is_reported(client: EventRecorder) -> None:
    code = ("import threading\n"
            "release, running = threading.Event(), threading.Event()\n"
            "def blocked():\n"
            "    running.set()\n"
            "    release.wait()\n"
            "    while True:\n"
            "        sleep(0.01)\n"
            "worker = threading.Thread(target=blocked, name='blocked-worker')\n"
            "worker.start()\n"
            "running.wait()\n"
            "print('forked')\n"
            "sleep(3600)\n")
    reqid = start(client, code, "forked", 12)
    since = client.mark()
    client.ask("stop", 2)
    assert client.wait_done(reqid).data["success"] is False
    report = wait_message(client, since, "Thread blocked-worker started by the script does not end",
                          WARNING)
    assert "in wait(), called from script line 5" in report[3], report
    # The daemon is idle and usable while that thread hangs.
    still_works(client)
    assert client.ask("eval", "worker.is_alive()", False) is True
    # Back from the C call, it stops at its next line of script code.
    client.ask("eval", "release.set()", False)
    wait_threads_ended(client, since, ["blocked-worker"])
    assert client.ask("eval", "worker.is_alive()", False) is False


def test_emergency_while_idle_stops_threads_of_earlier_scripts(
        client: EventRecorder, connect: Callable[..., EventRecorder]) -> None:
    code = ("import threading\n"
            "running = threading.Event()\n"
            "def background():\n"
            "    running.set()\n"
            "    while True:\n"
            "        try:\n"
            "            sleep(0.01)\n"
            "        except BaseException:\n"
            "            pass\n"
            "helper = threading.Thread(target=background, name='background-helper')\n"
            "helper.start()\n"
            "running.wait()\n"
            "print('started')\n")
    since = client.mark()
    reqid = client.run(code, "background.py")
    # The script ends normally and leaves its thread running.
    assert client.wait_done(reqid).data["success"] is True
    assert client.ask("eval", "helper.is_alive()", False) is True
    guest = connect("guest")
    guest.ask("emergency")
    told = wait_message(client, since, "Stopping 1 thread(s) started by the script", WARNING)
    assert "background-helper" in told[3]
    wait_threads_ended(client, since, ["background-helper"])
    assert client.ask("eval", "helper.is_alive()", False) is False


POOL_NEXT_RUN = ("print('job ended with', type(job.exception(30)).__name__)\n"
                 "print('pool result', pool.submit(lambda n: n * 2, 21).result(30))\n"
                 "pool.shutdown()\n")


def pool_script(work_body: str) -> str:
    """A script that keeps a one-thread pool, gives it ``work`` and sleeps."""
    return ("from concurrent.futures import ThreadPoolExecutor\n"
            "pool = ThreadPoolExecutor(1, thread_name_prefix='keeper')\n"
            "def work(n):\n"
            "    print('pool working')\n"
            + work_body +
            "    return n\n"
            "job = pool.submit(work, 1)\n"
            "sleep(3600)\n")


def stop_pool_script(client: EventRecorder, code: str) -> int:
    """Run ``code`` until its pool works, stop it; returns the event mark."""
    reqid = start(client, code, "pool working", code.count("\n"))
    since = client.mark()
    client.ask("stop", 2)
    assert client.wait_done(reqid).data["success"] is False
    return since


def assert_pool_works(client: EventRecorder, since: int, reqid: str) -> None:
    assert client.wait_done(reqid).data["success"] is True, texts(client, since)
    shown = texts(client, since, reqid)
    assert "job ended with ControlStop\n" in shown and "pool result 42\n" in shown, shown


def test_a_pool_worker_stopped_in_one_run_works_in_the_next(client: EventRecorder) -> None:
    since = stop_pool_script(client, pool_script("    sleep(3600)\n"))
    wait_message(client, since, "Stopping 1 thread(s) started by the script")
    # the worker left the script's work (its future holds the ControlStop) and
    # waits for more; the next run's work must not be stopped again
    since = client.mark()
    assert_pool_works(client, since, client.run(POOL_NEXT_RUN))


def test_a_pool_worker_still_cleaning_up_when_the_next_run_starts_works_in_it(
        client: EventRecorder, gates: Callable[[], Gate]) -> None:
    gate = gates()
    wait_for_gate = "".join("        " + line + "\n" for line in gate.wait_code().splitlines())
    since = stop_pool_script(client, pool_script(
        "    try:\n"
        "        sleep(3600)\n"
        "        n += 0\n"  # the stop is raised here, so the cleanup runs
        "    finally:\n"
        + wait_for_gate))
    # (its output goes to the daemon's stderr now: no run captures it)
    wait_message(client, since, "Thread keeper_0 started by the script does not end")
    # the next run starts while the worker still runs the stopped job's cleanup
    since = client.mark()
    reqid = client.run(POOL_NEXT_RUN)
    client.wait_for("processing", lambda d: d.get("reqid") == reqid, since=since)
    gate.open()
    assert_pool_works(client, since, reqid)
