"""Threads that scripts start: which they are, telling them to end with the
script, and reporting the ones that do not.

A stop tells them to end with pyctl.stop_thread: ControlStop at their next
line of script code.  Code that never gets back to script code (a call into
C, a library loop) cannot be reached; those threads are reported, with where
they are (see docs/daemon.md, "What stop can and cannot interrupt").
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import nicos
import nicos_daemon
import pyctl
from nicos.protocols.daemon import BREAK_IMMEDIATE, INFO, WARNING
from nicos_daemon.scripts import SCRIPT_FILENAME

# a part of the script controller: its records keep the controller's name
log = logging.getLogger("nicos_daemon.controller")

# Seconds after an immediate or emergency stop until a script that still runs
# is reported as stuck, and after stopping a thread until it is reported as
# not ending.  Every line and breakpoint acts at these stages, so a script
# still running this long after one is in code that stop cannot reach.
STUCK_REPORT_DELAY = 1.0

# Threads in these packages work for the daemon or the instrument; a stop
# leaves them alone even when they call script code (exec, watches, devices).
_OWN_PACKAGE_DIRS = tuple(os.path.dirname(package.__file__) + os.sep
                          for package in (nicos, nicos_daemon, pyctl))


def runs_script_code(frame: FrameType | None) -> bool:
    """Whether a thread with this innermost frame runs script code on its
    own account: the outermost frame that is script code or from our own
    packages is script code."""
    filenames = []
    while frame is not None:
        filenames.append(frame.f_code.co_filename)
        frame = frame.f_back
    for filename in reversed(filenames):
        if filename == SCRIPT_FILENAME:
            return True
        if filename.startswith(_OWN_PACKAGE_DIRS):
            return False
    return False


def describe_position(frame: FrameType | None) -> str:
    """Where a thread is, for people: its innermost Python frame and the
    script line that led there."""
    if frame is None:
        return "code without Python frames"
    code = frame.f_code
    if code.co_filename == SCRIPT_FILENAME:
        return f"a call at script line {frame.f_lineno}"
    where = f"{os.path.basename(code.co_filename)} line {frame.f_lineno} in {code.co_name}()"
    outer = frame.f_back
    while outer is not None and outer.f_code.co_filename != SCRIPT_FILENAME:
        outer = outer.f_back
    if outer is not None:
        where += f", called from script line {outer.f_lineno}"
    return where


@dataclass
class _StoppedThread:
    """A thread started by a script that a stop told to end."""

    thread: threading.Thread | None  # None: started without the threading module
    name: str
    since: float  # time.monotonic() of the last stop_thread
    firmness: int  # 0 plain stop, 1 insisting, 2 insisting and interrupting
    stopper: Any  # pyctl's handle: cancel() ends the stop
    reported: bool = False


class ScriptThreads:
    """The threads scripts started, and the ones a stop told to end until
    they have ended.

    ``message(text, level)`` reports to clients; ``script_ident()`` is the
    ident of the script thread, which is never one of them.
    """

    def __init__(self, message: Callable[[str, int], None],
                 script_ident: Callable[[], int | None]) -> None:
        self._message = message
        self._script_ident = script_ident
        self._cond = threading.Condition()
        # threads alive when the current run began: the others are its own
        self._at_run_start: dict[int | None, threading.Thread] = {}
        self._stopped: dict[int, _StoppedThread] = {}
        self._previous_excepthook: Callable[[Any], Any] | None = None

    def mark_run_start(self) -> None:
        """A run begins: the threads alive now are not its own. Stops of earlier
        runs end when their thread next calls into script code afresh (an idle
        pool worker a script keeps must be able to run the next run's work);
        a thread still unwinding from its stop stays stopped until then."""
        alive = {t.ident: t for t in threading.enumerate()}
        with self._cond:
            self._at_run_start = alive
            if not self._stopped:
                return
            frames = sys._current_frames()
            for ident, entry in list(self._stopped.items()):
                entry.stopper.release_on_entry()
                if not runs_script_code(frames.get(ident)):
                    del self._stopped[ident]  # idle: nothing left to report
        del frames

    def install_excepthook(self) -> None:
        self._previous_excepthook = threading.excepthook
        threading.excepthook = self._excepthook

    def restore_excepthook(self) -> None:
        if threading.excepthook == self._excepthook:
            threading.excepthook = self._previous_excepthook or threading.__excepthook__

    def _excepthook(self, args: Any) -> None:
        # a ControlStop ending a thread is the stop working, reported as a
        # message; anything else goes to the previous hook
        if args.exc_type is not None and issubclass(args.exc_type, pyctl.ControlStop):
            return
        previous = self._previous_excepthook or threading.__excepthook__
        previous(args)

    def _running_script_code(self, all_ages: bool
                             ) -> list[tuple[int, threading.Thread | None, FrameType]]:
        """Other threads that run script code on their own account: started
        by the current run (by any script with ``all_ages``), and not daemon
        or instrument threads that call script code (exec, watches)."""
        script = self._script_ident()
        me = threading.get_ident()
        by_ident = {t.ident: t for t in threading.enumerate()}
        with self._cond:
            at_start = dict(self._at_run_start)
        found = []
        for ident, frame in sys._current_frames().items():
            if ident in (script, me):
                continue
            thread = by_ident.get(ident)
            if not all_ages and ident in at_start and at_start[ident] is thread:
                continue
            if runs_script_code(frame):
                while frame.f_back is not None:
                    frame = frame.f_back
                found.append((ident, thread, frame))  # the outermost frame names the thread
        return found

    def stop(self, who: str, insist: bool, all_ages: bool = False) -> None:
        """Tell the threads running script code to end (pyctl.stop_thread):
        ControlStop at their next line of script code, at every line with
        ``insist``.  report_stopped reports the ones that do not end."""
        arg = ("stop", BREAK_IMMEDIATE, who)
        told = []
        for ident, thread, outermost in self._running_script_code(all_ages):
            with self._cond:
                entry = self._stopped.get(ident)
            if entry is not None and (entry.thread is not thread or not entry.stopper.active):
                entry = None  # an ended thread's ident reused, or released since
            firmness = 2 if all_ages else 1 if insist else 0
            if entry is not None and entry.firmness >= firmness:
                continue  # told already, as firmly
            # interrupting library code is for emergencies only (see docs/pyctl.md)
            stopper = pyctl.stop_thread(ident, arg, filename=SCRIPT_FILENAME, insist=insist,
                                        expect=outermost, interrupt=all_ages)
            if not stopper:
                continue  # it ended meanwhile (its ident may be another thread's now)
            name = thread.name if thread is not None else f"thread {ident}"
            with self._cond:
                self._stopped[ident] = _StoppedThread(thread, name, time.monotonic(), firmness,
                                                      stopper)
                self._cond.notify_all()  # ends their sleep()
            if entry is None:
                told.append(name)
        if told:
            text = (f"Stopping {len(told)} thread(s) started by the script: {', '.join(told)}")
            self._message(text, WARNING)
            log.warning("%s (asked by %s)", text, who)

    def sleep(self, seconds: float) -> None:
        """A plain wait in a thread other than the script thread; a thread
        told to end returns at once (pyctl raises ControlStop at its next
        line of script code)."""
        deadline = time.monotonic() + seconds
        ident = threading.get_ident()
        me = threading.current_thread()

        def told() -> bool:
            entry = self._stopped.get(ident)
            return entry is not None and entry.thread in (me, None) and entry.stopper.active

        with self._cond:
            while not told() and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)

    def report_stopped(self) -> None:
        """In the sampler: report stopped threads that ended, and once each
        those that have not ended after STUCK_REPORT_DELAY."""
        with self._cond:
            entries = list(self._stopped.items())
        if not entries:
            return
        frames = sys._current_frames()
        now = time.monotonic()
        ended, stuck, released = [], [], []
        for ident, entry in entries:
            alive = entry.thread.is_alive() if entry.thread is not None else ident in frames
            if not alive:
                ended.append(ident)
            elif not entry.stopper.active:
                released.append(ident)  # it took new work after the next run began
            elif not entry.reported and now - entry.since >= STUCK_REPORT_DELAY:
                entry.reported = True
                stuck.append((entry.name, describe_position(frames.get(ident))))
        del frames
        with self._cond:
            for ident in released:
                self._stopped.pop(ident, None)
            names = [self._stopped.pop(ident).name for ident in ended
                     if ident in self._stopped]
        if names:
            self._message(f"Thread(s) started by the script ended: {', '.join(names)}", INFO)
        for name, where in stuck:
            text = (f"Thread {name} started by the script does not end: it is in {where}; "
                    "it stops when it gets back to script code (emergency stop: at every line)")
            self._message(text, WARNING)
            log.warning("%s", text)

    def join_stopped(self, deadline: float) -> None:
        """Wait until ``deadline`` (time.monotonic()) for the stopped threads
        to end; log the ones that do not."""
        with self._cond:
            entries = list(self._stopped.values())
        for entry in entries:
            if entry.thread is not None:
                entry.thread.join(max(0.0, deadline - time.monotonic()))
                if entry.thread.is_alive():
                    # Python waits for non-daemon threads at exit, whatever we do
                    log.error("thread %s started by a script does not end; %s", entry.name,
                              "it is abandoned" if entry.thread.daemon else
                              "the daemon process cannot exit before it does")
