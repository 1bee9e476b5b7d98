"""Stop escalation of the running script, and reporting a script no stop reaches.

A stop escalates one stage per further stop request, or at once when the
script catches the ControlStop and goes on: stop at the requested level, then
immediate (ControlStop at every line, cleanup included), then emergency
(devices stopped).  Threads that a script started are stopped with it.  What
none of this can reach is described in docs/daemon.md, "What stop can and
cannot interrupt".
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import pyctl
from nicos.protocols.daemon import BREAK_AFTER_LINE, BREAK_IMMEDIATE, ERROR, INFO, WARNING
from nicos_daemon.script_threads import STUCK_REPORT_DELAY, ScriptThreads, describe_position

# a part of the script controller: its records keep the controller's name
log = logging.getLogger("nicos_daemon.controller")

# Stop escalation, one step per further stop request (docs/daemon.md):
STAGE_NONE = 0  # no stop asked in this run
STAGE_STOP = 1  # ControlStop at the next breakpoint of the requested level; cleanup runs
STAGE_IMMEDIATE = 2  # ControlStop at every line and breakpoint, cleanup code included
STAGE_EMERGENCY = 3  # immediate, and the emergency-stop functions (devices) have run
STAGE_NAMES = {STAGE_STOP: "stop", STAGE_IMMEDIATE: "immediate stop",
               STAGE_EMERGENCY: "emergency stop"}


class StopEscalation:
    """How far the stop of the current run has gone, and what each further
    stop request does.

    Its state is guarded by the controller's ``lock``, which also guards
    whether a run is current (``running()``).  ``message(text, level)``
    reports to clients; ``emergency_functions`` stop the devices.
    """

    def __init__(self, ctl: pyctl.Controller, lock: threading.RLock,
                 running: Callable[[], bool], script_ident: Callable[[], int | None],
                 threads: ScriptThreads, message: Callable[[str, int], None],
                 emergency_functions: list[Callable[[], None]]) -> None:
        self._ctl = ctl
        self._lock = lock
        self._running = running
        self._script_ident = script_ident
        self._threads = threads
        self._message = message
        self._emergency_functions = emergency_functions
        self.stage = STAGE_NONE
        self._stage_since = 0.0
        self._stopped_by = ""
        self._stuck_reported = False
        self._stop_before_start: tuple | None = None  # a stop for a run not yet started

    def new_run(self) -> None:
        """Under the lock: a run was taken from the queue, nothing stops it yet."""
        self._stop_before_start = None
        self.stage = STAGE_NONE
        self._stuck_reported = False

    def take_stop_before_start(self) -> tuple | None:
        """The stop asked after the run was taken but before it started, once."""
        with self._lock:
            stop, self._stop_before_start = self._stop_before_start, None
        return stop

    def _set_stop(self, arg: tuple, insist: bool) -> None:
        try:
            self._ctl.set_stop(arg, insist=insist)
        except RuntimeError:
            # taken from the queue but not started yet (or just ended):
            # the run raises it before its first line
            self._stop_before_start = arg

    def _enter_stage(self, stage: int, who: str) -> None:
        # under the lock
        self.stage = stage
        self._stage_since = time.monotonic()
        self._stopped_by = who
        self._stuck_reported = False

    def take_request(self, level: int, who: str) -> int:
        """Under the lock, with a run current: a stop request arrives;
        returns the stage it found.  The first one of a run sets the stop."""
        found = self.stage
        if found == STAGE_NONE:
            self._set_stop(("stop", level, who), insist=False)
            self._enter_stage(STAGE_STOP, who)
        return found

    def carry_out(self, found: int, level: int, who: str, paused: bool) -> None:
        """Outside the lock: the rest of a stop request that found stage
        ``found``: announce the first stop, or escalate one stage."""
        if found == STAGE_NONE:
            if not paused:
                what = "Stop after command" if level <= BREAK_AFTER_LINE else "Stop"
                self._message(f"{what} requested by {who}", INFO)
            log.info("%s: stop %d", who, level)
            self._threads.stop(who, insist=False)
        elif found == STAGE_STOP:
            self.escalate(STAGE_IMMEDIATE, who,
                          f"Stop requested again by {who}: escalated to immediate stop, "
                          "at the next line of the script, its cleanup code included")
        elif found == STAGE_IMMEDIATE:
            self.escalate(STAGE_EMERGENCY, who,
                          f"Stop requested a third time by {who}: escalated to "
                          "emergency stop, all devices are stopped")
        else:
            self.escalate(STAGE_EMERGENCY, who,
                          f"Stop requested again by {who}: emergency stop repeated")

    def escalate(self, stage: int, who: str, text: str) -> None:
        """Immediate or emergency stop of the running script (if any) and
        of the threads scripts started; reported to clients and the log."""
        with self._lock:
            if self._running():
                # insisting: raised at every line and breakpoint until the
                # run ends, so catching it cannot keep the script going
                self._set_stop(("stop", BREAK_IMMEDIATE, who), insist=True)
                self._enter_stage(max(stage, self.stage), who)
        self._message(text, WARNING)
        log.warning("%s (%s)", text, STAGE_NAMES[stage])
        if stage >= STAGE_EMERGENCY:
            self._run_emergency_functions()
        self._threads.stop(who, insist=True, all_ages=stage >= STAGE_EMERGENCY)

    def on_stop_ignored(self, frame: FrameType, arg: Any) -> None:
        """pyctl's handler, in the script thread: the script caught the
        ControlStop and went on.  pyctl raises it again after this."""
        who = arg[2] if isinstance(arg, tuple) and len(arg) == 3 else "?"
        with self._lock:
            if self.stage >= STAGE_IMMEDIATE:
                return
        self.escalate(STAGE_IMMEDIATE, who,
                      f"The script caught the stop requested by {who} and went on at line "
                      f"{frame.f_lineno}: escalated to immediate stop, raised again at every "
                      "line")

    def _run_emergency_functions(self) -> None:
        # in the caller's thread, not the script thread: a script stuck in a
        # call must not delay stopping the hardware
        self._message("Stopping devices for immediate stop", WARNING)
        failures = 0
        for func in list(self._emergency_functions):
            try:
                func()
            except Exception as err:  # noqa: BLE001 - one failure must not skip the rest
                failures += 1
                self._message(f"emergency stop function {func!r} failed: {err}", ERROR)
        self._message("all devices stopped" if not failures else
                      f"emergency stop: {failures} stop function(s) failed", WARNING)

    def stop_late_threads(self) -> None:
        """After a run that was being stopped: stop the threads it started
        meanwhile."""
        with self._lock:
            stage, who = self.stage, self._stopped_by
        if stage >= STAGE_STOP:
            self._threads.stop(who, insist=stage >= STAGE_IMMEDIATE)

    def report_stuck(self) -> bool:
        """In the sampler: a script that outlives an immediate or emergency
        stop by STUCK_REPORT_DELAY is in code that stop cannot reach; say so
        once per escalation step.  True when it was said now."""
        with self._lock:
            if not self._running() or self.stage < STAGE_IMMEDIATE or \
                    self._stuck_reported or \
                    time.monotonic() - self._stage_since < STUCK_REPORT_DELAY:
                return False
            self._stuck_reported = True
            stage = self.stage
        ident = self._script_ident()
        frame = sys._current_frames().get(ident) if ident is not None else None
        where = describe_position(frame)
        del frame
        text = (f"The script does not respond to the {STAGE_NAMES[stage]}: it is in {where}, "
                "which stop cannot interrupt (a call into C code, or library code that does "
                "not return to the script). The script is abandoned: it stops as soon as "
                "that call returns. The daemon stays usable; scripts queued from now on run "
                "after it has ended.")
        self._message(text, WARNING)
        log.warning("%s", text)
        return True
