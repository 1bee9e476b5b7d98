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

Callers use only the controller; it hands its parts what each needs:
request_queue (the requests waiting), scripts.ScriptBlocks (the blocks of the
running script), stopping (stop escalation, scripts no stop reaches),
script_threads (threads a script started, stopped with it), sleeping
(interruptible waits, time.sleep in the script thread), client_code (exec,
eval, watch expressions, completion), messages.MessageSender (messages and
output capture), simulation.QueuedDryRuns (the ETA) and instrument_queries.
"""

from __future__ import annotations

import builtins
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyctl
from nicos.protocols.daemon import (
    BREAK_AFTER_STEP,
    BREAK_IMMEDIATE,
    ERROR,
    INPUT,
    STATUS_IDLE,
    STATUS_IDLEEXC,
    STATUS_INBREAK,
    STATUS_RUNNING,
    STATUS_STOPPING,
    WARNING,
)
from nicos_daemon.client_code import WatchExpressions, completions, evaluate, execute
from nicos_daemon.common import CommandError, User
from nicos_daemon.events import EventBus
from nicos_daemon.instrument_queries import cache_entries, datasets, value_history
from nicos_daemon.messages import (
    INFO,
    MessageLog,
    MessageSender,
    captured,
    format_script_exception,
    input_echo,
)
from nicos_daemon.persistence import FAILED, STOPPED, SUCCEEDED, StateStore
from nicos_daemon.request_queue import RequestQueue
from nicos_daemon.script_threads import ScriptThreads
from nicos_daemon.scripts import (
    SCRIPT_FILENAME,
    ScriptBlocks,
    ScriptError,
    ScriptRequest,
    normalize,
)
from nicos_daemon.simulation import QueuedDryRuns
from nicos_daemon.sleeping import register_script_thread, unregister_script_thread, wait_at_level
from nicos_daemon.stopping import STAGE_EMERGENCY, STAGE_STOP, StopEscalation

log = logging.getLogger("nicos_daemon.controller")
user_log = logging.getLogger("nicos")

MAX_TRANSFER_BYTES = 16 * 1024 * 1024


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

        # guards the queue, the current request, the status and the stop stage
        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)
        self._current: ScriptRequest | None = None
        self._last: ScriptRequest | None = None
        self._status: tuple[int, int] = (STATUS_IDLE, -1)
        self._shutdown = threading.Event()
        self._script_thread: threading.Thread | None = None
        self._sampler_thread: threading.Thread | None = None

        self.ctl = pyctl.Controller(self._on_break, break_only_in_filename=SCRIPT_FILENAME)
        self.store = StateStore(self.datadir)
        self._messages = MessageSender(self.messages, self.store.add_message, self.bus.emit,
                                       self._current_reqid)
        self._dry_runs = QueuedDryRuns(self.bus.emit, self._message)
        self._queue = RequestQueue(self.store, self.bus.emit)
        self._blocks = ScriptBlocks()
        self._watches = WatchExpressions(self.bus.emit)
        self._threads = ScriptThreads(self._message, self._script_ident)
        self._stopping = StopEscalation(self.ctl, self._lock, self._is_running,
                                        self._script_ident, self._threads, self._message,
                                        self.emergency_functions)
        self.ctl.set_observer(self._on_pyctl_status)
        self.ctl.set_ignored_handler(self._stopping.on_stop_ignored)
        self._install_script_commands()
        self._interrupted: list[str] = []
        self._recover()

    def _recover(self) -> None:
        """Take back what a previous daemon left: messages, queue, interrupted runs."""
        for record in self.store.recent_messages(self.messages.size):
            self.messages.add(record)
        queued, self._interrupted = self.store.recover()
        self._queue.restore(queued)
        if queued or self._interrupted:
            log.warning("recovered %d queued request(s); %d request(s) were interrupted",
                        len(queued), len(self._interrupted))

    def _is_running(self) -> bool:
        return self._current is not None

    def _script_ident(self) -> int | None:
        return self._script_thread.ident if self._script_thread is not None else None

    # ------------------------------------------------------------ lifecycle

    def start_threads(self) -> None:
        """Capture script output and start the script and sampler threads."""
        self._messages.capture_output()
        self._script_thread = threading.Thread(target=self._script_loop, name="script",
                                               daemon=True)
        self._sampler_thread = threading.Thread(target=self._sampler_loop, name="sampler",
                                                daemon=True)
        self._script_thread.start()
        self._threads.install_excepthook()
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
        self._threads.stop("daemon shutdown", insist=True, all_ages=True)
        for thread in (self._script_thread, self._sampler_thread):
            if thread is not None:
                thread.join(timeout)
        # a thread stuck in C would not end in any time: a short grace only
        self._threads.join_stopped(time.monotonic() + min(timeout, 2.0))
        if self._script_thread is not None and self._script_thread.ident is not None:
            unregister_script_thread(self._script_thread.ident)
        self._threads.restore_excepthook()
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
        self._messages.release_output()

    def register_emergency_stop(self, func: Callable[[], None]) -> None:
        """Call ``func()`` on every emergency stop (devices register their stop here)."""
        self.emergency_functions.append(func)

    # ------------------------------------------------------------- messages

    def _message(self, text: str, level: int = INFO, exc_text: str | None = None) -> None:
        self._messages.send(text, level, exc_text)

    def report(self, text: str, level: int = INFO) -> None:
        """A message from the daemon itself to every client."""
        self._message(text, level)

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
            self._queue.add(request)
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
        try:
            self._dry_runs.start(self.simulations, self.session, request)
        except CommandError as err:
            log.warning("no dry run for %s: %s", request.reqid, err)

    def unqueue(self, reqid: str, user: User) -> None:
        """Remove one queued request, or all with ``*``."""
        with self._lock:
            removed = self._queue.block(reqid)
            if removed is None:
                raise CommandError("script already executing" if self._current and
                                   self._current.reqid == reqid else
                                   "script doesn't exist")
        log.info("%s unqueued %s", user.name, ", ".join(removed) or "nothing")

    def rearrange(self, ids: list[str]) -> None:
        """Put the queued requests in the given order."""
        with self._lock:
            self._queue.rearrange(ids)

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
            self._queue.update(reqid, normalize(code), user.name)
        log.info("%s updated queued request %s", user.name, reqid)

    def _update_running(self, current: ScriptRequest, code: str, reason: str,
                        user: User) -> None:
        self._blocks.replace_unstarted(
            current, code, user.name,
            lambda: self.store.update_script(current.reqid, code, user.name))
        self.bus.emit("processing", current.serialize())
        prompt = f"UPDATE ({reason})" if reason else "UPDATE"
        self._message(input_echo(user.name, code, current.name, prompt), INPUT)
        log.info("%s updated the running script (%s)", user.name, reason)

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
            if self._stopping.stage >= STAGE_STOP:
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
            paused = self._status[0] == STATUS_INBREAK
            self._queue.block()
            found = self._stopping.take_request(level, user.name)
        self._stopping.carry_out(found, level, user.name, paused)

    def finish(self, user: User) -> None:
        """End the current count early, keeping its data; the script goes on."""
        with self._lock:
            self._require_running()
            # an armed stop leaves room for a finish ("finish the count, then stop"),
            # an immediate one does not
            if self._status[0] == STATUS_STOPPING or self._stopping.stage > STAGE_STOP:
                raise CommandError("script is stopping")
            self.finish_requested = True
        self._message(f"Finish requested by {user.name}")

    def emergency(self, user: User) -> None:
        """Stop everything now: the queue, the script (at every line, its
        cleanup included), every device, and every thread running script code."""
        with self._lock:
            self._queue.block()
        self._stopping.escalate(STAGE_EMERGENCY, user.name,
                                f"Immediate stop requested by {user.name}")

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
        # registered here, before the first request (one recovered from disk starts
        # at once): its time.sleep calls are the interruptible ones from the start
        register_script_thread(threading.get_ident(), self.ctl)
        while True:
            with self._lock:
                while not self._queue and not self._shutdown.is_set():
                    self._wakeup.wait()
                if self._shutdown.is_set():
                    return
                request = self._queue.take_next()
                self._current = request
                # reset here, with the run current: a finish from now on is for it
                self.finish_requested = False
                self._stopping.new_run()
                self._threads.mark_run_start()
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
            self._blocks.load(request.text)
        except ScriptError as err:
            self._message(str(err), ERROR)
            self.store.mark_finished(request.reqid, FAILED, str(err))
            self.bus.emit("done", {**request.serialize(), "success": False})
            return
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
        self._stopping.stop_late_threads()
        self.store.mark_finished(request.reqid, outcome, error)
        lineno = self.ctl.lineno
        self._set_status(STATUS_IDLE if success else STATUS_IDLEEXC, lineno)
        self.bus.emit("done", {**request.serialize(), "success": success})

    def _run_blocks(self) -> None:
        stop = self._stopping.take_stop_before_start()
        if stop is not None:
            raise pyctl.ControlStop(stop)
        while (code := self._blocks.take_next()) is not None:
            exec(code, self.namespace)

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
            self._threads.sleep(float(seconds))
            return
        wait_at_level(self.ctl, float(seconds), BREAK_AFTER_STEP)

    def consume_finish_request(self) -> bool:
        """True once per 'finish' request; clears it."""
        with self._lock:
            requested, self.finish_requested = self.finish_requested, False
            return requested

    # ---------------------------------------------------- exec, eval, watch

    def exec_(self, code: str, user: User) -> None:
        """Run code in the script namespace in the caller's thread."""
        with self._lock:
            stopping = self._status[0] == STATUS_STOPPING or (
                self._current is not None and self._stopping.stage >= STAGE_STOP)
        if stopping:
            raise CommandError("script is stopping")
        code = normalize(code)
        self._message(input_echo(user.name, code, None, "---"), INPUT)
        log.info("%s: exec %r", user.name, code[:200])
        execute(code, self.namespace, self._message)

    def eval_(self, expr: str, stringify: bool) -> Any:
        """Evaluate an expression in the script namespace."""
        return evaluate(expr, self.namespace, stringify)

    def watch(self, exprs: list[str]) -> None:
        """Add watch expressions (``expr`` or ``expr:group``)."""
        self._watches.add(exprs)

    def unwatch(self, exprs: list[str]) -> None:
        """Remove watch expressions; ``*:group`` removes a whole group."""
        self._watches.remove(exprs)

    def _sampler_loop(self) -> None:
        while not self._shutdown.wait(self.updateinterval):
            try:
                self._sample_line()
                if self._stopping.report_stuck():
                    self._show_stopping()
                self._threads.report_stopped()
                self._watches.evaluate(self.namespace)
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

    def _show_stopping(self) -> None:
        # a script that no stop reaches is still running, but on its way out
        with self._lock:
            if self._current is not None and self._status[0] == STATUS_RUNNING:
                self._set_status(STATUS_STOPPING, self.ctl.lineno)

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
                "eta": self._dry_runs.eta(),
                "watch": self._watches.values(),
                "requests": self._queue.serialize(),
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
        return value_history(self.value_history, key, fromtime, totime, interval)

    def getcachekeys(self, query: str) -> list:
        """``[[key, value], ...]``: ``query`` is a key prefix, or exact keys
        separated by commas; live values, else the devices' current
        parameters, else the last recorded ones.

        The parameters are there because upstream's cache holds every
        parameter: clients read units and limits from it, and it is the only
        way for guests, who may not ``eval``.  They are read from the
        devices' stored values, never from the hardware."""
        return cache_entries(self.session, self.value_history, query)

    def getdataset(self, index: Any) -> Any:
        """A recent scan dataset as a JSON object (see nicos/data/dataset.py):
        by position (0 the oldest kept, -1 the latest), or all with ``*``."""
        return datasets(self.session, index)

    def complete(self, line: str, lastword: str) -> list[str]:
        """Completions of ``lastword`` from the script namespace."""
        return completions(self.namespace, lastword)

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

