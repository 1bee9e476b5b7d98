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
"""

from __future__ import annotations

import builtins
import linecache
import logging
import os
import rlcompleter
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

        self.ctl = pyctl.Controller(self._on_break, break_only_in_filename=SCRIPT_FILENAME)
        self.ctl.set_observer(self._on_pyctl_status)
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
            self.ctl.set_stop(("stop", BREAK_IMMEDIATE, "daemon shutdown"))
        except RuntimeError:
            pass  # nothing was running
        for thread in (self._script_thread, self._sampler_thread):
            if thread is not None:
                thread.join(timeout)
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
        breakpoint of at most ``level``."""
        with self._lock:
            self._require_running()
            if self._status[0] == STATUS_STOPPING and level < BREAK_IMMEDIATE:
                # a second stop would also abort the script's cleanup (finally
                # blocks); only an immediate stop (emergency) escalates
                return
            paused = self._status[0] == STATUS_INBREAK
            self._block_queue()
            try:
                self.ctl.set_stop(("stop", level, user.name))
            except RuntimeError:
                return  # ended meanwhile: nothing to stop
        if not paused:
            what = "Stop after command" if level <= BREAK_AFTER_LINE else "Stop"
            self._message(f"{what} requested by {user.name}")
        log.info("%s: stop %d", user.name, level)

    def finish(self, user: User) -> None:
        """End the current count early, keeping its data; the script goes on."""
        with self._lock:
            self._require_running()
            if self._status[0] == STATUS_STOPPING:
                raise CommandError("script is stopping")
            self.finish_requested = True
        self._message(f"Finish requested by {user.name}")

    def emergency(self, user: User) -> None:
        """Stop everything now: the queue, the script, and every device."""
        with self._lock:
            running = self._current is not None
            self._block_queue()
            if running:
                try:
                    self.ctl.set_stop(("stop", BREAK_IMMEDIATE, user.name))
                except RuntimeError:
                    pass
        self._message(f"Immediate stop requested by {user.name}", WARNING)
        log.warning("%s: emergency stop", user.name)
        self._run_emergency_functions()

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
        self.store.mark_finished(request.reqid, outcome, error)
        lineno = self.ctl.lineno
        self._set_status(STATUS_IDLE if success else STATUS_IDLEEXC, lineno)
        self.bus.emit("done", {**request.serialize(), "success": success})

    def _run_blocks(self) -> None:
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
        """Interruptible wait for the script thread (plain sleep elsewhere):
        a break or stop of level BREAK_AFTER_STEP or more acts at once, and
        after a continue the rest of the time is waited."""
        if not self.in_script_thread():
            time.sleep(max(0.0, float(seconds)))
            return
        deadline = time.monotonic() + float(seconds)
        while (remaining := deadline - time.monotonic()) > 0:
            if self.ctl.wait(remaining, self._accept_step_request):
                self.ctl.breakpoint()

    @staticmethod
    def _accept_step_request(request: int, arg: Any) -> bool:
        return arg[1] >= BREAK_AFTER_STEP

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
                value = eval(compile(expr, "<eval>", "eval"), self.namespace)
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
                results[key] = repr(eval(expr, self.namespace))
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
        separated by commas; live values, else the last recorded ones."""
        live = self.session.current_values() if self.session is not None else {}
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
