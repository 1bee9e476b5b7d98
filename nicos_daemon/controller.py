"""The script controller: one script thread running queued requests under pyctl.

State (status, current request, queue, watch values, messages) lives here;
``getstatus`` is a snapshot of it and events are its changes.  The script
thread only runs user code; it never touches a socket.  Events leave through
the EventBus, which never blocks.

Threads:
- the script thread takes requests from the queue and runs them;
- the sampler thread, every ``updateinterval``, reads the current line (on
  demand from pyctl, nothing is traced) and the watch expressions, and sends
  events only for what changed;
- client handler threads call the public methods below.

A stop escalates when it is asked again or ignored: stop at the requested
level, then immediate (ControlStop at every line, cleanup included), then
emergency (devices stopped).  Threads that a script started are stopped with
it.  What none of this can reach is described in docs/daemon.md, "What stop
can and cannot interrupt".
"""

from __future__ import annotations

import builtins
import functools
import linecache
import logging
import math
import os
import rlcompleter
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import nicos
import nicos_daemon
import pyctl
from nicos.protocols.daemon import (
    BREAK_AFTER_LINE,
    BREAK_AFTER_STEP,
    BREAK_IMMEDIATE,
    ERROR,
    INPUT,
    SIM_FAILED,
    SIM_PENDING,
    SIM_SUCCESS,
    STATUS_IDLE,
    STATUS_IDLEEXC,
    STATUS_INBREAK,
    STATUS_RUNNING,
    STATUS_STOPPING,
    WARNING,
)
from nicos.protocols.daemon.codec import CodecError, to_wire
from nicos_daemon.common import CommandError, User
from nicos_daemon.events import EventBus
from nicos_daemon.history import cache_keys
from nicos_daemon.messages import (
    INFO,
    MessageLog,
    UserLogHandler,
    captured,
    format_script_exception,
    input_echo,
    install_output_capture,
    make_record,
)
from nicos_daemon.persistence import FAILED, STOPPED, SUCCEEDED, StateStore
from nicos_daemon.scripts import (
    SCRIPT_FILENAME,
    ScriptError,
    ScriptRequest,
    block_dumps,
    compile_blocks,
    normalize,
)

log = logging.getLogger("nicos_daemon.controller")
user_log = logging.getLogger("nicos")

MAX_QUEUED = 1000
MAX_WATCHES = 200
MAX_TRANSFER_BYTES = 16 * 1024 * 1024
MAX_COMPLETIONS = 500

# Stop escalation, one step per further stop request (docs/daemon.md):
STAGE_NONE = 0  # no stop asked in this run
STAGE_STOP = 1  # ControlStop at the next breakpoint of the requested level; cleanup runs
STAGE_IMMEDIATE = 2  # ControlStop at every line and breakpoint, cleanup code included
STAGE_EMERGENCY = 3  # immediate, and the emergency-stop functions (devices) have run
STAGE_NAMES = {STAGE_STOP: "stop", STAGE_IMMEDIATE: "immediate stop",
               STAGE_EMERGENCY: "emergency stop"}
# Seconds after an immediate or emergency stop until a script that still runs
# is reported as stuck, and after stopping a thread until it is reported as
# not ending.  Every line and breakpoint acts at these stages, so a script
# still running this long after one is in code that stop cannot reach.
STUCK_REPORT_DELAY = 1.0

# Threads in these packages work for the daemon or the instrument; a stop
# leaves them alone even when they call script code (exec, watches, devices).
_OWN_PACKAGE_DIRS = tuple(os.path.dirname(package.__file__) + os.sep
                          for package in (nicos, nicos_daemon, pyctl))

_real_sleep = time.sleep
# script thread ident -> its interruptible replacement of time.sleep
_sleepers: dict[int, Callable[[float, FrameType | None], None]] = {}


# eval and watch expressions come back again and again (a GUI asks for the same
# values every second); compiling costs more than evaluating most of them
_CACHED_EXPRESSION_CHARS = 1000


@functools.lru_cache(maxsize=512)
def _compiled(expr: str) -> CodeType:
    return compile(expr, "<eval>", "eval")


def compile_expression(expr: str) -> CodeType:
    """``compile(expr, "<eval>", "eval")``, cached for short expressions."""
    if len(expr) <= _CACHED_EXPRESSION_CHARS:
        return _compiled(expr)
    return compile(expr, "<eval>", "eval")


def _dispatching_sleep(seconds: float) -> None:
    """``time.sleep`` while a controller runs: interruptible in a script
    thread (scripts and the libraries they call use time.sleep despite the
    ban on it in script text), the real one in every other thread."""
    sleeper = _sleepers.get(threading.get_ident())
    if sleeper is None:
        _real_sleep(seconds)
        return
    # the argument checks of time.sleep, so that errors do not change
    if isinstance(seconds, str | bytes | bytearray) or seconds is None:
        raise TypeError(f"'{type(seconds).__name__}' object cannot be interpreted as an integer")
    value = float(seconds)
    if math.isnan(value):
        raise ValueError("Invalid value NaN (not a number)")
    if value < 0:
        raise ValueError("sleep length must be non-negative")
    sleeper(value, sys._getframe(1))


def _register_sleeper(ident: int, sleeper: Callable[[float, FrameType | None], None]) -> None:
    _sleepers[ident] = sleeper
    time.sleep = _dispatching_sleep


def _unregister_sleeper(ident: int) -> None:
    _sleepers.pop(ident, None)
    if not _sleepers and time.sleep is _dispatching_sleep:
        time.sleep = _real_sleep


def _runs_script_code(frame: FrameType | None) -> bool:
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


def _describe_position(frame: FrameType | None) -> str:
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
    insist: bool
    reported: bool = False


class ScriptController:
    """Runs scripts one after another and lets clients steer them."""

    def __init__(self, bus: EventBus, config: Any) -> None:
        self.bus = bus
        self.config = config
        self.updateinterval = float(getattr(config, "updateinterval", 0.2))
        self.datadir = Path(getattr(config, "datadir", "data"))
        self.messages = MessageLog()
        self.namespace: dict[str, Any] = {"__name__": "__script__",
                                          "__builtins__": builtins}
        self.emergency_functions: list[Callable[[], None]] = []
        self.finish_requested = False
        self.session: Any = None  # the instrument session, once loaded
        self.value_history: Any = None  # set with the session (nicos.data.history)
        self.simulations: Any = None  # dry-run processes (nicos_daemon.simulation)

        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: list[ScriptRequest] = []
        self._current: ScriptRequest | None = None
        self._stop_before_start: tuple | None = None  # a stop for a run not yet started
        self._last: ScriptRequest | None = None
        self._started: deque[str] = deque(maxlen=MAX_QUEUED)
        self._status: tuple[int, int] = (STATUS_IDLE, -1)
        # update() swaps the blocks not yet started; the script thread takes the
        # next block under the same lock
        self._blocks_lock = threading.Lock()
        self._blocks: list[Any] = []
        self._next_block = 0
        self._watch: dict[str, str | None] = {}
        self._eta: list = [SIM_PENDING, -1]
        self._shutdown = threading.Event()
        self._script_thread: threading.Thread | None = None
        self._sampler_thread: threading.Thread | None = None
        self._log_handler: UserLogHandler | None = None
        # stop escalation of the current run (guarded by _lock)
        self._stage = STAGE_NONE
        self._stage_since = 0.0
        self._stopped_by = ""
        self._stuck_reported = False
        # threads alive when the current run began: the others are its own
        self._threads_at_start: dict[int | None, threading.Thread] = {}
        # threads a stop told to end, until they have ended
        self._threads_cond = threading.Condition()
        self._stopped_threads: dict[int, _StoppedThread] = {}
        self._previous_excepthook: Callable[[Any], Any] | None = None

        self.ctl = pyctl.Controller(self._on_break, break_only_in_filename=SCRIPT_FILENAME)
        self.ctl.set_observer(self._on_pyctl_status)
        self.ctl.set_ignored_handler(self._on_stop_ignored)
        self._install_script_commands()
        self.store = StateStore(self.datadir)
        self._interrupted: list[str] = []
        self._recover()

    def _recover(self) -> None:
        """Take back what a previous daemon left: messages, queue, interrupted runs."""
        for record in self.store.recent_messages(self.messages.size):
            self.messages.add(record)
        queued, self._interrupted = self.store.recover()
        for stored in queued:
            self._queue.append(ScriptRequest(stored.name, stored.script, stored.user,
                                             stored.user_level, reqid=stored.reqid,
                                             submitted=stored.submitted))
        if queued or self._interrupted:
            log.warning("recovered %d queued request(s); %d request(s) were interrupted",
                        len(queued), len(self._interrupted))

    # ------------------------------------------------------------ lifecycle

    def start_threads(self) -> None:
        """Capture script output and start the script and sampler threads."""
        install_output_capture(self._output_line)
        self._log_handler = UserLogHandler(self._emit_record, self._current_reqid)
        user_log.addHandler(self._log_handler)
        user_log.setLevel(logging.INFO)
        user_log.propagate = False
        self._script_thread = threading.Thread(target=self._script_loop, name="script",
                                               daemon=True)
        self._sampler_thread = threading.Thread(target=self._sampler_loop, name="sampler",
                                                daemon=True)
        self._script_thread.start()
        assert self._script_thread.ident is not None
        _register_sleeper(self._script_thread.ident, self._script_time_sleep)
        self._previous_excepthook = threading.excepthook
        threading.excepthook = self._thread_excepthook
        self._sampler_thread.start()
        for reqid in self._interrupted:
            self._message(f"request {reqid} was interrupted when the daemon stopped; "
                          "it is not run again automatically", WARNING)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop a running script, end the threads, restore the output streams."""
        self._shutdown.set()
        with self._lock:
            self._queue.clear()
            self._wakeup.notify_all()
        try:
            self.ctl.set_stop(("stop", BREAK_IMMEDIATE, "daemon shutdown"), insist=True)
        except RuntimeError:
            pass  # nothing was running
        self._stop_script_threads("daemon shutdown", insist=True, all_ages=True)
        for thread in (self._script_thread, self._sampler_thread):
            if thread is not None:
                thread.join(timeout)
        # a thread stuck in C would not end in any time: a short grace only
        self._join_stopped_threads(time.monotonic() + min(timeout, 2.0))
        if self._script_thread is not None and self._script_thread.ident is not None:
            _unregister_sleeper(self._script_thread.ident)
        if threading.excepthook == self._thread_excepthook:
            threading.excepthook = self._previous_excepthook or threading.__excepthook__
        if self.session is not None:
            try:
                self.session.shutdown()
            except Exception:  # noqa: BLE001 - shutting down regardless
                log.exception("error shutting down the instrument session")
        if self.simulations is not None:
            self.simulations.shutdown()
        if self.value_history is not None:
            self.value_history.close()  # writes what is still queued
        self.store.close()
        if self._log_handler is not None:
            user_log.removeHandler(self._log_handler)
        install_output_capture(None)

    def register_emergency_stop(self, func: Callable[[], None]) -> None:
        """Call ``func()`` on every emergency stop (devices register their stop here)."""
        self.emergency_functions.append(func)

    # ------------------------------------------------------------- messages

    def _emit_record(self, record: list) -> None:
        if self.messages.add(record):
            self.store.add_message(record)
        self.bus.emit("message", record)

    def _message(self, text: str, level: int = INFO, exc_text: str | None = None) -> None:
        self._emit_record(make_record(text, level, exc_text=exc_text,
                                      reqid=self._current_reqid()))

    def report(self, text: str, level: int = INFO) -> None:
        """A message from the daemon itself to every client."""
        self._message(text, level)

    def _output_line(self, line: str, level: int) -> None:
        self._message(line, level)

    def _current_reqid(self) -> str | None:
        request = self._current or self._last
        return request.reqid if request else None

    # --------------------------------------------------------------- status

    @property
    def status(self) -> tuple[int, int]:
        return self._status

    def _set_status(self, status: int, lineno: int) -> None:
        with self._lock:
            self._status = (status, lineno)
            self.bus.emit("status", [status, lineno])

    def _on_pyctl_status(self, status: int, lineno: int) -> None:
        # the start and end of a run are reported by _run_request, so that the
        # status does not flicker to idle between the blocks of one script
        if status in (STATUS_INBREAK, STATUS_STOPPING) or \
                (status == STATUS_RUNNING and lineno >= 0):
            self._set_status(status, lineno)

    # ----------------------------------------------------------- the queue

    def queue(self, name: str, code: str, user: User) -> str:
        """Append a script to the queue; returns its request id."""
        return self._enqueue(name, code, user, only_if_idle=False)

    def start(self, name: str, code: str, user: User) -> str:
        """Run a script now; refused while another one runs or waits."""
        return self._enqueue(name, code, user, only_if_idle=True)

    def _enqueue(self, name: str, code: str, user: User, only_if_idle: bool) -> str:
        request = ScriptRequest(name or None, code, user.name, user.level)
        with self._lock:
            if self._shutdown.is_set():
                raise CommandError("the daemon is shutting down")
            if only_if_idle and (self._current is not None or self._queue):
                raise CommandError("a script is running")
            if len(self._queue) >= MAX_QUEUED:
                raise CommandError(f"the queue is full ({MAX_QUEUED} requests)")
            # on disk before anyone is told it is queued
            self.store.add_queued(request.reqid, request.name, request.text, request.user,
                                  request.user_level, request.submitted)
            self._queue.append(request)
            self.bus.emit("request", request.serialize())
            self._wakeup.notify_all()
        log.info("%s queued request %s (%s)", user.name, request.reqid, name or "unnamed")
        if getattr(self.config, "autosimulate", False):
            self._dry_run_queued(request)
        return request.reqid

    def _dry_run_queued(self, request: ScriptRequest) -> None:
        """Dry-run a queued script (config ``autosimulate``): an ETA for
        clients, and a warning before it runs when the dry run finds problems."""
        if self.simulations is None or self.session is None:
            return

        def on_result(simid: str, stoptime: float, devinfo: dict) -> None:
            ok = stoptime >= 0
            with self._lock:
                self._eta = [SIM_SUCCESS if ok else SIM_FAILED, stoptime]
            self.bus.emit("eta", list(self._eta))
            if not ok:
                self._message(f"dry run of {request.name or 'request ' + request.reqid} "
                              "found problems: see the simulation messages; it will run "
                              "anyway unless removed from the queue", WARNING)

        try:
            self.simulations.start(self.session, request.name or "", request.text,
                                   "dryrun-" + request.reqid, request.user,
                                   on_result=on_result, quiet=False)
        except CommandError as err:
            log.warning("no dry run for %s: %s", request.reqid, err)

    def unqueue(self, reqid: str, user: User) -> None:
        """Remove one queued request, or all with ``*``."""
        with self._lock:
            if reqid == "*":
                removed = [r.reqid for r in self._queue]
                self._queue.clear()
            else:
                index = self._queue_index(reqid)
                if index is None:
                    raise CommandError("script already executing" if self._current and
                                       self._current.reqid == reqid else
                                       "script doesn't exist")
                removed = [self._queue.pop(index).reqid]
            self.store.mark_blocked(removed)
            self.bus.emit("blocked", removed)
        log.info("%s unqueued %s", user.name, ", ".join(removed) or "nothing")

    def rearrange(self, ids: list[str]) -> None:
        """Put the queued requests in the given order."""
        with self._lock:
            queued = {r.reqid: r for r in self._queue}
            # ids that started meanwhile may still be in the client's list
            wanted = [i for i in ids if i in queued or i not in self._started]
            if sorted(wanted) != sorted(queued):
                raise CommandError("Inconsistency between clients script IDs and queued IDs")
            self._queue = [queued[i] for i in wanted]
            self.store.set_order(wanted)
            self.bus.emit("rearranged", wanted)

    def update(self, code: str, reason: str, reqid: str | None, user: User) -> None:
        """Replace the text of a queued script, or the not yet executed part
        of the running one."""
        with self._lock:
            current = self._current
            if reqid is None or (current is not None and reqid == current.reqid):
                if current is None:
                    raise CommandError("no script is running")
                self._update_running(current, normalize(code), reason, user)
                return
            index = self._queue_index(reqid)
            if index is None:
                raise CommandError("script doesn't exist")
            request = self._queue[index]
            request.text = normalize(code)
            request.user = user.name
            self.store.update_script(request.reqid, request.text, request.user)
            self.bus.emit("updated", request.serialize())
        log.info("%s updated queued request %s", user.name, reqid)

    def _update_running(self, current: ScriptRequest, code: str, reason: str,
                        user: User) -> None:
        if current.single_line:
            raise CommandError("cannot update single-line script")
        if "\n" not in code:
            raise CommandError("cannot replace a multi-line script by a single line")
        try:
            new_blocks = compile_blocks(code)
            new_dumps = block_dumps(code)
            old_dumps = block_dumps(current.text)
        except ScriptError as err:
            raise CommandError(str(err)) from None
        with self._blocks_lock:
            started = self._next_block
            if len(new_dumps) < started:
                raise CommandError("new script too short")
            if new_dumps[:started] != old_dumps[:started]:
                raise CommandError("new script differs in already executed part of the code")
            self._blocks = new_blocks
            current.text = code
            current.user = user.name
            self.store.update_script(current.reqid, code, user.name)
        self._register_source(code)
        self.bus.emit("processing", current.serialize())
        prompt = f"UPDATE ({reason})" if reason else "UPDATE"
        self._message(input_echo(user.name, code, current.name, prompt), INPUT)
        log.info("%s updated the running script (%s)", user.name, reason)

    def _queue_index(self, reqid: str) -> int | None:
        for index, request in enumerate(self._queue):
            if request.reqid == reqid:
                return index
        return None

    # ------------------------------------------------------ break and stop

    def break_(self, level: int, user: User) -> None:
        """Pause the script at the next breakpoint of at most ``level``."""
        with self._lock:
            status = self._status[0]
            if status == STATUS_STOPPING:
                raise CommandError("script is already stopping")
            if status == STATUS_INBREAK:
                raise CommandError("script is already paused")
            self._require_running()
            if self._stage >= STAGE_STOP:
                raise CommandError("script is already stopping")
            try:
                self.ctl.set_break(("break", level, user.name))
            except RuntimeError as err:
                raise CommandError(str(err)) from None
        self._message(f"Pause requested by {user.name}")
        log.info("%s: break %d", user.name, level)

    def continue_(self, user: User) -> None:
        """Resume a paused script."""
        with self._lock:
            status = self._status[0]
            if status == STATUS_STOPPING:
                raise CommandError("could not continue script")
            if status != STATUS_INBREAK:
                raise CommandError("script is not paused")
            try:
                self.ctl.set_continue(("continue", user.name))
            except RuntimeError as err:
                raise CommandError(str(err)) from None
        self._message(f"Script continued by {user.name}")
        log.info("%s: continue", user.name)

    def stop(self, level: int, user: User) -> None:
        """Remove all queued requests and stop the script at the next
        breakpoint of at most ``level``, and the threads it started.  Asked
        again, the stop escalates: to immediate (at every line, cleanup code
        included), then to an emergency stop (devices too)."""
        with self._lock:
            self._require_running()
            stage = self._stage
            paused = self._status[0] == STATUS_INBREAK
            self._block_queue()
            if stage == STAGE_NONE:
                arg = ("stop", level, user.name)
                try:
                    self.ctl.set_stop(arg)
                except RuntimeError:
                    # taken from the queue but not started yet (or just ended):
                    # _run_blocks raises it before the first line
                    self._stop_before_start = arg
                self._enter_stage(STAGE_STOP, user.name)
        if stage == STAGE_NONE:
            if not paused:
                what = "Stop after command" if level <= BREAK_AFTER_LINE else "Stop"
                self._message(f"{what} requested by {user.name}")
            log.info("%s: stop %d", user.name, level)
            self._stop_script_threads(user.name, insist=False)
        elif stage == STAGE_STOP:
            self._escalate(STAGE_IMMEDIATE, user.name,
                           f"Stop requested again by {user.name}: escalated to immediate stop, "
                           "at the next line of the script, its cleanup code included")
        elif stage == STAGE_IMMEDIATE:
            self._escalate(STAGE_EMERGENCY, user.name,
                           f"Stop requested a third time by {user.name}: escalated to "
                           "emergency stop, all devices are stopped")
        else:
            self._escalate(STAGE_EMERGENCY, user.name,
                           f"Stop requested again by {user.name}: emergency stop repeated")

    def _enter_stage(self, stage: int, who: str) -> None:
        # under self._lock
        self._stage = stage
        self._stage_since = time.monotonic()
        self._stopped_by = who
        self._stuck_reported = False

    def _escalate(self, stage: int, who: str, text: str) -> None:
        """Immediate or emergency stop of the running script (if any) and
        of the threads scripts started; reported to clients and the log."""
        with self._lock:
            if self._current is not None:
                arg = ("stop", BREAK_IMMEDIATE, who)
                try:
                    # insisting: raised at every line and breakpoint until the
                    # run ends, so catching it cannot keep the script going
                    self.ctl.set_stop(arg, insist=True)
                except RuntimeError:
                    self._stop_before_start = arg  # not started yet (or just ended)
                self._enter_stage(max(stage, self._stage), who)
        self._message(text, WARNING)
        log.warning("%s (%s)", text, STAGE_NAMES[stage])
        if stage >= STAGE_EMERGENCY:
            self._run_emergency_functions()
        self._stop_script_threads(who, insist=True, all_ages=stage >= STAGE_EMERGENCY)

    def _on_stop_ignored(self, frame: FrameType, arg: Any) -> None:
        """pyctl's handler, in the script thread: the script caught the
        ControlStop and went on.  pyctl raises it again after this."""
        who = arg[2] if isinstance(arg, tuple) and len(arg) == 3 else "?"
        with self._lock:
            if self._stage >= STAGE_IMMEDIATE:
                return
        self._escalate(STAGE_IMMEDIATE, who,
                       f"The script caught the stop requested by {who} and went on at line "
                       f"{frame.f_lineno}: escalated to immediate stop, raised again at every "
                       "line")

    def finish(self, user: User) -> None:
        """End the current count early, keeping its data; the script goes on."""
        with self._lock:
            self._require_running()
            if self._status[0] == STATUS_STOPPING or self._stage >= STAGE_STOP:
                raise CommandError("script is stopping")
            self.finish_requested = True
        self._message(f"Finish requested by {user.name}")

    def emergency(self, user: User) -> None:
        """Stop everything now: the queue, the script (at every line, its
        cleanup included), every device, and every thread running script code."""
        with self._lock:
            self._block_queue()
        self._escalate(STAGE_EMERGENCY, user.name, f"Immediate stop requested by {user.name}")

    def _run_emergency_functions(self) -> None:
        # in the caller's thread, not the script thread: a script stuck in a
        # call must not delay stopping the hardware
        self._message("Stopping devices for immediate stop", WARNING)
        failures = 0
        for func in list(self.emergency_functions):
            try:
                func()
            except Exception as err:  # noqa: BLE001 - one failure must not skip the rest
                failures += 1
                self._message(f"emergency stop function {func!r} failed: {err}", ERROR)
        self._message("all devices stopped" if not failures else
                      f"emergency stop: {failures} stop function(s) failed", WARNING)

    # ------------------------------------------- threads started by scripts

    def _script_threads(self, all_ages: bool) -> list[tuple[int, threading.Thread | None]]:
        """Other threads that run script code on their own account: started
        by the current run (by any script with ``all_ages``), and not daemon
        or instrument threads that call script code (exec, watches)."""
        script = self._script_thread.ident if self._script_thread is not None else None
        me = threading.get_ident()
        by_ident = {t.ident: t for t in threading.enumerate()}
        with self._lock:
            at_start = dict(self._threads_at_start)
        found = []
        for ident, frame in sys._current_frames().items():
            if ident in (script, me):
                continue
            thread = by_ident.get(ident)
            if not all_ages and ident in at_start and at_start[ident] is thread:
                continue
            if _runs_script_code(frame):
                found.append((ident, thread))
        return found

    def _stop_script_threads(self, who: str, insist: bool, all_ages: bool = False) -> None:
        """Tell the threads running script code to end (pyctl.stop_thread):
        ControlStop at their next line of script code, at every line with
        ``insist``.  The sampler reports the ones that do not end."""
        arg = ("stop", BREAK_IMMEDIATE, who)
        told = []
        for ident, thread in self._script_threads(all_ages):
            with self._threads_cond:
                entry = self._stopped_threads.get(ident)
            if entry is not None and (entry.insist or not insist):
                continue  # told already, as firmly
            if not pyctl.stop_thread(ident, arg, filename=SCRIPT_FILENAME, insist=insist):
                continue  # it ended meanwhile
            name = thread.name if thread is not None else f"thread {ident}"
            with self._threads_cond:
                self._stopped_threads[ident] = _StoppedThread(thread, name, time.monotonic(),
                                                              insist)
                self._threads_cond.notify_all()  # ends their sleep()
            if entry is None:
                told.append(name)
        if told:
            text = (f"Stopping {len(told)} thread(s) started by the script: {', '.join(told)}")
            self._message(text, WARNING)
            log.warning("%s (asked by %s)", text, who)

    def _check_stopped_threads(self) -> None:
        """In the sampler: report stopped threads that ended, and once each
        those that have not ended after STUCK_REPORT_DELAY."""
        with self._threads_cond:
            entries = list(self._stopped_threads.items())
        if not entries:
            return
        frames = sys._current_frames()
        now = time.monotonic()
        ended, stuck = [], []
        for ident, entry in entries:
            alive = entry.thread.is_alive() if entry.thread is not None else ident in frames
            if not alive:
                ended.append(ident)
            elif not entry.reported and now - entry.since >= STUCK_REPORT_DELAY:
                entry.reported = True
                stuck.append((entry.name, _describe_position(frames.get(ident))))
        del frames
        with self._threads_cond:
            names = [self._stopped_threads.pop(ident).name for ident in ended
                     if ident in self._stopped_threads]
        if names:
            self._message(f"Thread(s) started by the script ended: {', '.join(names)}")
        for name, where in stuck:
            text = (f"Thread {name} started by the script does not end: it is in {where}; "
                    "it stops when it gets back to script code (emergency stop: at every line)")
            self._message(text, WARNING)
            log.warning("%s", text)

    def _join_stopped_threads(self, deadline: float) -> None:
        with self._threads_cond:
            entries = list(self._stopped_threads.values())
        for entry in entries:
            if entry.thread is not None:
                entry.thread.join(max(0.0, deadline - time.monotonic()))
                if entry.thread.is_alive():
                    # Python waits for non-daemon threads at exit, whatever we do
                    log.error("thread %s started by a script does not end; %s", entry.name,
                              "it is abandoned" if entry.thread.daemon else
                              "the daemon process cannot exit before it does")

    def _thread_excepthook(self, args: Any) -> None:
        # a ControlStop ending a thread is the stop working, reported as a
        # message; anything else goes to the previous hook
        if args.exc_type is not None and issubclass(args.exc_type, pyctl.ControlStop):
            return
        previous = self._previous_excepthook or threading.__excepthook__
        previous(args)

    def _check_stuck(self) -> None:
        """In the sampler: a script that outlives an immediate or emergency
        stop by STUCK_REPORT_DELAY is in code that stop cannot reach; say so
        once per escalation step, and show it as stopping."""
        with self._lock:
            if self._current is None or self._stage < STAGE_IMMEDIATE or \
                    self._stuck_reported or \
                    time.monotonic() - self._stage_since < STUCK_REPORT_DELAY:
                return
            self._stuck_reported = True
            stage = self._stage
        thread = self._script_thread
        frame = sys._current_frames().get(thread.ident) if thread is not None else None
        where = _describe_position(frame)
        del frame
        text = (f"The script does not respond to the {STAGE_NAMES[stage]}: it is in {where}, "
                "which stop cannot interrupt (a call into C code, or library code that does "
                "not return to the script). The script is abandoned: it stops as soon as "
                "that call returns. The daemon stays usable; scripts queued from now on run "
                "after it has ended.")
        self._message(text, WARNING)
        log.warning("%s", text)
        with self._lock:
            if self._current is not None and self._status[0] == STATUS_RUNNING:
                self._set_status(STATUS_STOPPING, self.ctl.lineno)

    def _block_queue(self) -> None:
        removed = [r.reqid for r in self._queue]
        self._queue.clear()
        self.store.mark_blocked(removed)
        self.bus.emit("blocked", removed)

    def _require_running(self) -> None:
        if self._current is None:
            raise CommandError("no script is running")

    def breakpoint(self, level: int) -> None:
        """A breakpoint of ``level`` inside a command: in the script thread,
        acts on a pending break or stop of at least that level; elsewhere
        (exec from a client) it does nothing."""
        if not self.in_script_thread():
            return
        request, arg = self.ctl.pending()
        if request and arg[1] >= level:
            self.ctl.breakpoint()

    def _on_break(self, frame: Any, arg: Any) -> None:
        """pyctl's break function, in the script thread: wait for a decision."""
        _, _, username = arg
        self._message(f"Script paused by {username}")
        self.ctl.wait_for_continue()  # raises ControlStop when stopped

    # ------------------------------------------------------- script thread

    def _script_loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._shutdown.is_set():
                    self._wakeup.wait()
                if self._shutdown.is_set():
                    return
                request = self._queue.pop(0)
                self._current = request
                self._stop_before_start = None
                self._stage = STAGE_NONE
                self._stuck_reported = False
                self._threads_at_start = {t.ident: t for t in threading.enumerate()}
                self._started.append(request.reqid)
                self.store.mark_started(request.reqid)
            try:
                self._run_request(request)
            except BaseException:  # noqa: BLE001 - the script thread must survive anything
                log.exception("unexpected error running request %s", request.reqid)
            finally:
                with self._lock:
                    self._last = request
                    self._current = None

    def _run_request(self, request: ScriptRequest) -> None:
        self.bus.emit("processing", request.serialize())
        self._message(input_echo(request.user, request.text, request.name), INPUT)
        try:
            blocks = compile_blocks(request.text)
        except ScriptError as err:
            self._message(str(err), ERROR)
            self.store.mark_finished(request.reqid, FAILED, str(err))
            self.bus.emit("done", {**request.serialize(), "success": False})
            return
        self._register_source(request.text)
        with self._blocks_lock:
            self._blocks = blocks
            self._next_block = 0
        self.finish_requested = False
        self._set_status(STATUS_RUNNING, -1)
        success = False
        outcome, error = SUCCEEDED, None
        try:
            with captured():
                self.ctl.start(self._run_blocks)
            success = True
        except pyctl.ControlStop as stop:
            who = stop.args[0][2] if stop.args and isinstance(stop.args[0], tuple) else "?"
            self._message(f"Script stopped by {who}")
            outcome, error = STOPPED, f"stopped by {who}"
        except BaseException as err:  # noqa: BLE001 - user code may raise anything
            summary, trace = format_script_exception(err)
            self._message(summary, ERROR, exc_text=trace)
            outcome, error = FAILED, summary
        with self._lock:
            stage, who = self._stage, self._stopped_by
        if stage >= STAGE_STOP:
            # threads it started while it was being stopped
            self._stop_script_threads(who, insist=stage >= STAGE_IMMEDIATE)
        self.store.mark_finished(request.reqid, outcome, error)
        lineno = self.ctl.lineno
        self._set_status(STATUS_IDLE if success else STATUS_IDLEEXC, lineno)
        self.bus.emit("done", {**request.serialize(), "success": success})

    def _run_blocks(self) -> None:
        with self._lock:
            stop, self._stop_before_start = self._stop_before_start, None
        if stop is not None:
            raise pyctl.ControlStop(stop)
        while True:
            with self._blocks_lock:
                if self._next_block >= len(self._blocks):
                    return
                code = self._blocks[self._next_block]
                self._next_block += 1
            exec(code, self.namespace)

    @staticmethod
    def _register_source(text: str) -> None:
        # tracebacks and stack traces show the user's lines
        lines = text.splitlines(keepends=True)
        linecache.cache[SCRIPT_FILENAME] = (len(text), None, lines, SCRIPT_FILENAME)

    # ------------------------------------------------------- script helpers

    def _install_script_commands(self) -> None:
        # the instrument layer replaces these with its own commands
        def sleep(seconds: float) -> None:
            """Wait ``seconds``; a break or stop request interrupts at once."""
            self.sleep(seconds)

        def printinfo(*msgs: Any) -> None:
            """Log a message for everyone watching the instrument."""
            user_log.info(" ".join(map(str, msgs)))

        self.namespace.update(sleep=sleep, printinfo=printinfo)

    def in_script_thread(self) -> bool:
        return threading.current_thread() is self._script_thread

    def sleep(self, seconds: float) -> None:
        """Interruptible wait for the script thread: a break or stop of level
        BREAK_AFTER_STEP or more acts at once, and after a continue the rest
        of the time is waited.  In other threads a plain wait, which ends
        early when a stop tells the thread to end."""
        if not self.in_script_thread():
            self._thread_sleep(float(seconds))
            return
        self._wait_at_level(float(seconds), BREAK_AFTER_STEP)

    def _wait_at_level(self, seconds: float, level: int) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self.ctl.wait(remaining, lambda request, arg: arg[1] >= level):
                self.ctl.breakpoint()

    def _thread_sleep(self, seconds: float) -> None:
        # a thread told to end returns at once; pyctl raises ControlStop at
        # its next line of script code
        deadline = time.monotonic() + seconds
        ident = threading.get_ident()
        with self._threads_cond:
            while ident not in self._stopped_threads and \
                    (remaining := deadline - time.monotonic()) > 0:
                self._threads_cond.wait(remaining)

    def _script_time_sleep(self, seconds: float, caller: FrameType | None) -> None:
        """time.sleep in the script thread (see _dispatching_sleep)."""
        if caller is not None and caller.f_code.co_filename == SCRIPT_FILENAME:
            # the script's own wait, however it got hold of time.sleep
            self._wait_at_level(seconds, BREAK_AFTER_STEP)
        else:
            # a delay inside library code: only the level of an immediate
            # stop may cut it short, as the protocol has it for internal delays
            self._wait_at_level(seconds, BREAK_IMMEDIATE)

    def consume_finish_request(self) -> bool:
        """True once per 'finish' request; clears it."""
        with self._lock:
            requested, self.finish_requested = self.finish_requested, False
            return requested

    # ---------------------------------------------------- exec, eval, watch

    def exec_(self, code: str, user: User) -> None:
        """Run code in the script namespace in the caller's thread."""
        if self._status[0] == STATUS_STOPPING:
            raise CommandError("script is stopping")
        code = normalize(code)
        self._message(input_echo(user.name, code, None, "---"), INPUT)
        log.info("%s: exec %r", user.name, code[:200])
        try:
            blocks = compile_blocks(code)
        except ScriptError as err:
            self._message(str(err), ERROR)
            return
        with captured():
            try:
                for block in blocks:
                    exec(block, self.namespace)
            except Exception as err:  # noqa: BLE001 - reported to the user
                summary, trace = format_script_exception(err)
                self._message(summary, ERROR, exc_text=trace)

    def eval_(self, expr: str, stringify: bool) -> Any:
        """Evaluate an expression in the script namespace."""
        try:
            with captured():
                value = eval(compile_expression(expr), self.namespace)
            if stringify:
                return repr(value)
        except Exception as err:  # noqa: BLE001 - reported to the client
            if stringify:
                return f"<cannot be evaluated: {err}>"
            raise CommandError(f"exception raised while evaluating: {err}") from None
        try:
            return to_wire(value)
        except CodecError as err:
            raise CommandError(f"result cannot be sent: {err}") from None

    def watch(self, exprs: list[str]) -> None:
        """Add watch expressions (``expr`` or ``expr:group``)."""
        with self._lock:
            for expr in exprs:
                key = expr if ":" in expr else expr + ":default"
                if key not in self._watch and len(self._watch) >= MAX_WATCHES:
                    raise CommandError(f"too many watch expressions (limit {MAX_WATCHES})")
                self._watch.setdefault(key, None)

    def unwatch(self, exprs: list[str]) -> None:
        """Remove watch expressions; ``*:group`` removes a whole group."""
        with self._lock:
            for expr in exprs:
                key = expr if ":" in expr else expr + ":default"
                if key.startswith("*:"):
                    group = key[2:]
                    for existing in [k for k in self._watch if k.rpartition(":")[2] == group]:
                        del self._watch[existing]
                else:
                    self._watch.pop(key, None)
            values = {k: v for k, v in self._watch.items() if v is not None}
        self.bus.emit("watch", values)

    def _evaluate_watches(self) -> None:
        with self._lock:
            keys = list(self._watch)
        if not keys:
            return
        results = {}
        for key in keys:
            expr = key.rpartition(":")[0]
            try:
                results[key] = repr(eval(compile_expression(expr), self.namespace))
            except Exception as err:  # noqa: BLE001 - shown as the value
                results[key] = f"<cannot be evaluated: {err}>"
        with self._lock:
            changed = False
            for key, value in results.items():
                if key in self._watch and self._watch[key] != value:
                    self._watch[key] = value
                    changed = True
            snapshot = {k: v for k, v in self._watch.items() if v is not None}
        if changed:
            self.bus.emit("watch", snapshot)

    def _sampler_loop(self) -> None:
        while not self._shutdown.wait(self.updateinterval):
            try:
                self._sample_line()
                self._check_stuck()
                self._check_stopped_threads()
                self._evaluate_watches()
            except Exception:  # noqa: BLE001 - the sampler must keep running
                log.exception("sampler error")

    def _sample_line(self) -> None:
        if self._status[0] != STATUS_RUNNING or self._current is None:
            return
        lineno = self.ctl.lineno
        with self._lock:
            if self._status[0] == STATUS_RUNNING and self._current is not None and \
                    lineno != self._status[1]:
                self._set_status(STATUS_RUNNING, lineno)

    # -------------------------------------------------------------- queries

    def getstatus(self) -> dict:
        """Snapshot of the daemon state, as the protocol's getstatus reply."""
        session = self.session
        with self._lock:
            shown = self._current or self._last
            return {
                "status": list(self._status),
                "script": shown.text if shown else "",
                "scriptname": (shown.name or "") if shown else "",
                "eta": list(self._eta),
                "watch": {k: v for k, v in self._watch.items() if v is not None},
                "requests": [r.serialize() for r in self._queue],
                "mode": "master",
                "setups": [list(session.loaded_setups), list(session.explicit_setups)]
                if session else [[], []],
                "devices": sorted(session.devices) if session else [],
                "devicefailures": {},
            }

    def history(self, limit: int = 100) -> list[dict]:
        """Past and queued requests, newest first: id, user, script, times, outcome."""
        return self.store.history(limit)

    def getmessages(self, n: str | int) -> list:
        """The last ``n`` messages (``*`` or 0: all)."""
        if n == "*":
            count = None
        else:
            try:
                count = int(n)
            except (TypeError, ValueError):
                raise CommandError(f"invalid message count {n!r}: use a number or '*'") from None
        return self.messages.last(count)

    def getscript(self) -> str:
        """Text of the running script, or an empty string."""
        current = self._current
        return current.text if current else ""

    def gettrace(self) -> str:
        """Stack of the running script (empty when idle)."""
        if self._current is None:
            return ""
        return "\n" + self.ctl.get_stacktrace()

    def gethistory(self, key: str, fromtime: Any, totime: Any, interval: Any = None) -> list:
        """``[[time, value], ...]`` of a device key from the value history
        (see nicos/data/history.py); empty without a history store."""
        store = self.value_history
        if store is None:
            return []
        return store.history(str(key), float(fromtime), float(totime),
                             float(interval) if interval else None)

    def getcachekeys(self, query: str) -> list:
        """``[[key, value], ...]``: ``query`` is a key prefix, or exact keys
        separated by commas; live values, else the devices' current
        parameters, else the last recorded ones.

        The parameters are there because upstream's cache holds every
        parameter: clients read units and limits from it, and it is the only
        way for guests, who may not ``eval``.  They are read from the
        devices' stored values, never from the hardware."""
        session = self.session
        live: dict[str, tuple[float, Any]] = {}
        if session is not None:
            live = _parameter_values(session)
            live.update(session.current_values())
        return cache_keys(live, self.value_history, query)

    def getdataset(self, index: Any) -> Any:
        """A recent scan dataset as a JSON object (see nicos/data/dataset.py):
        by position (0 the oldest kept, -1 the latest), or all with ``*``."""
        if self.session is None:
            return [] if index == "*" else None
        if index == "*":
            return [dataset.to_dict() for dataset in self.session.data.recent()]
        dataset = self.session.data.get(int(index))
        return dataset.to_dict() if dataset is not None else None

    def complete(self, line: str, lastword: str) -> list[str]:
        """Completions of ``lastword`` from the script namespace."""
        completer = rlcompleter.Completer(self.namespace)
        found: set[str] = set()
        for state in range(MAX_COMPLETIONS):
            try:
                candidate = completer.complete(lastword, state)
            except Exception:  # noqa: BLE001 - attribute lookups may fail
                break
            if candidate is None:
                break
            found.add(candidate)
        return sorted(found)

    def transfer(self, content: bytes) -> str:
        """Store bytes from a client in a new file; returns its path."""
        if len(content) > MAX_TRANSFER_BYTES:
            raise CommandError(f"transfer too large ({len(content)} bytes, "
                               f"limit {MAX_TRANSFER_BYTES})")
        folder = self.datadir / "transfer"
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="nicos", dir=folder)
        with os.fdopen(fd, "wb") as stream:
            stream.write(content)
        return path

    def simulate(self, name: str, code: str, simid: str | None, user: User) -> None:
        """Dry run of a script in a separate process; results arrive as
        ``simmessage`` and ``simresult`` events (see simulation.py)."""
        simulations = self.simulations
        if simulations is None or self.session is None:
            raise CommandError("simulation is not available: no instrument layer is loaded")
        simulations.start(self.session, name, code, simid, user.name)


def _parameter_values(session: Any) -> dict[str, tuple[float, Any]]:
    """``{"dev/param": (0.0, value)}`` of every device's stored parameters."""
    values: dict[str, tuple[float, Any]] = {}
    for name, device in list(session.devices.items()):
        try:
            table = device.parameter_table()
        except Exception as err:  # noqa: BLE001 - one odd device must not hide the rest
            log.warning("cannot list the parameters of %s: %s", name, err)
            continue
        for param, value, _unit, _description in table:
            values[f"{name.lower()}/{param.lower()}"] = (0.0, value)
    return values
