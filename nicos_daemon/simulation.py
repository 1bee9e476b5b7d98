"""Dry runs of scripts in separate processes (the ``simulate`` command).

``start`` returns at once; a thread per simulation starts
``python -m nicos.simulation.child`` (see nicos/simulation/), hands it the
request (the script, the loaded setups, where they are, and a snapshot of
the instrument) and turns what it answers into events:

- ``simmessage``: each message record, its last field the simulation id;
- ``simresult``: ``[stoptime, devinfo, simid]`` once it is over; stoptime is
  the Unix time the script would end if started now, −1 on any error;
  devinfo ``{device: [last, lowest, highest, []]}`` (texts with unit).

Bounds: at most ``max_running`` simulations at a time (more are refused),
``timeout`` seconds of real time each (then the process is killed and the
result is an error), ``max_messages`` messages each, lines of at most
wire.MAX_LINE bytes.  Nothing from the process is unpickled: it speaks
JSON lines, and every record is rebuilt from checked fields.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nicos
from nicos.protocols.daemon import ERROR, SIM_FAILED, SIM_PENDING, SIM_SUCCESS, WARNING
from nicos.simulation.wire import MAX_LINE, MAX_MESSAGES, parse_line, request_line, snapshot
from nicos_daemon.common import CommandError
from nicos_daemon.messages import make_record
from nicos_daemon.scripts import ScriptRequest

log = logging.getLogger("nicos_daemon.simulation")

TIMEOUT = 120.0
MAX_RUNNING = 2
_STDERR_TAIL = 4000

Emit = Callable[[str, Any], None]
ResultCallback = Callable[[str, float, dict[str, Any]], None]


class Simulations:
    """Runs simulations and reports them as events."""

    def __init__(self, emit: Emit, *, timeout: float = TIMEOUT, max_running: int = MAX_RUNNING,
                 max_messages: int = MAX_MESSAGES, python: str = sys.executable) -> None:
        self._emit = emit
        self.timeout = timeout
        self.max_running = max_running
        self.max_messages = max_messages
        self._python = python
        self._lock = threading.Lock()
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._threads: list[threading.Thread] = []
        self._closed = False

    def start(self, session: Any, name: str, code: str, simid: str | None, user: str,
              on_result: ResultCallback | None = None, quiet: bool = False) -> str:
        """Begin simulating ``code``; returns the simulation id at once.
        ``on_result(simid, stoptime, devinfo)`` is called at the end (e.g. to
        fill the ETA of a queued script); ``quiet``: no simmessage events."""
        simid = simid or str(uuid.uuid1())
        request = request_line(simid=simid, name=name or "", code=code, user=user,
                               setups=list(session.explicit_setups),
                               setup_paths=[str(p) for p in session.catalog.paths],
                               devices=snapshot(session), max_messages=self.max_messages)
        with self._lock:
            if self._closed:
                raise CommandError("the daemon is shutting down")
            if len(self._running) >= self.max_running:
                raise CommandError(f"too many simulations running (at most "
                                   f"{self.max_running}); try again when one has finished")
            if simid in self._running:
                raise CommandError(f"a simulation with id {simid!r} is already running")
            stderr = tempfile.TemporaryFile()
            try:
                process = subprocess.Popen(
                    [self._python, "-m", "nicos.simulation.child"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=stderr, env=_child_environment(),
                    start_new_session=True)
            except OSError as err:
                stderr.close()
                raise CommandError(f"exception raised running simulation: {err}") from None
            self._running[simid] = process
            thread = threading.Thread(target=self._follow,
                                      args=(process, stderr, simid, request, on_result,
                                            quiet),
                                      name=f"simulation {simid}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        log.info("%s started simulation %s (%s)", user, simid, name or "unnamed")
        thread.start()
        return simid

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Kill running simulations and wait for their threads."""
        with self._lock:
            self._closed = True
            processes = list(self._running.values())
            threads = list(self._threads)
        for process in processes:
            _kill(process)
        for thread in threads:
            thread.join(timeout)

    # ------------------------------------------------------------ thread

    def _follow(self, process: subprocess.Popen[bytes], stderr: Any, simid: str,
                request: bytes, on_result: ResultCallback | None, quiet: bool) -> None:
        began = time.time()
        timed_out = threading.Event()
        timer = threading.Timer(self.timeout, self._time_up, args=(process, simid, timed_out))
        timer.daemon = True
        timer.start()
        result: dict[str, Any] | None = None
        assert process.stdin is not None and process.stdout is not None
        try:
            try:
                process.stdin.write(request)
                process.stdin.flush()
            except OSError:
                pass  # it died at once; reported below from its exit
            result = self._read(process.stdout, simid, quiet)
        finally:
            timer.cancel()
            _kill(process)  # harmless if it has exited
            process.wait()
            for stream in (process.stdin, process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            with self._lock:
                self._running.pop(simid, None)
        if result is None and not timed_out.is_set():
            self._message(simid, f"simulation ended unexpectedly (exit code "
                                 f"{process.returncode}){_tail(stderr)}", ERROR)
        stderr.close()
        stoptime, devinfo = self._summary(result, began)
        self._emit("simresult", [stoptime, devinfo, simid])
        if on_result is not None:
            try:
                on_result(simid, stoptime, devinfo)
            except Exception:  # noqa: BLE001 - a callback must not end the thread badly
                log.exception("simulation result callback failed")

    def _read(self, stream: Any, simid: str, quiet: bool) -> dict[str, Any] | None:
        messages = 0
        while line := stream.readline(MAX_LINE):
            if not line.endswith(b"\n"):  # too long: skip the rest of it
                while (more := stream.readline(MAX_LINE)) and not more.endswith(b"\n"):
                    pass
                continue
            parsed = parse_line(line)
            if parsed is None:
                continue
            kind, payload = parsed
            if kind == "result":
                return payload
            messages += 1
            if messages <= self.max_messages + 1 and not quiet:
                self._forward(simid, payload)
        return None

    def _forward(self, simid: str, record: list[Any]) -> None:
        logger, created, level, text, exc_text, _ = record
        try:
            rebuilt = make_record(str(text), int(level), logger=str(logger),
                                  exc_text=None if exc_text is None else str(exc_text)[-8192:],
                                  reqid=simid, created=float(created))
        except (TypeError, ValueError):
            return
        self._emit("simmessage", rebuilt)

    def _message(self, simid: str, text: str, level: int) -> None:
        self._emit("simmessage", make_record(text, level, reqid=simid))

    def _time_up(self, process: subprocess.Popen[bytes], simid: str,
                 timed_out: threading.Event) -> None:
        timed_out.set()
        self._message(simid, f"simulation stopped: it took longer than {self.timeout:g} s",
                      WARNING)
        _kill(process)

    @staticmethod
    def _summary(result: dict[str, Any] | None, began: float) -> tuple[float, dict[str, Any]]:
        if not result:
            return -1, {}
        devinfo = result.get("devinfo")
        devinfo = {str(k): [str(x) for x in v[:3]] + [[]] for k, v in devinfo.items()
                   if isinstance(v, list) and len(v) >= 3} if isinstance(devinfo, dict) else {}
        duration = result.get("duration")
        if result.get("ok") is not True or not isinstance(duration, (int, float)) \
                or not math.isfinite(duration):
            return -1, devinfo
        return began + max(0.0, float(duration)), devinfo


class QueuedDryRuns:
    """Dry runs of queued scripts (config ``autosimulate``): the ETA clients
    show, and a warning before a script runs whose dry run found problems."""

    def __init__(self, emit: Emit, message: Callable[[str, int], None]) -> None:
        self._emit = emit
        self._message = message
        self._lock = threading.Lock()
        self._eta: list = [SIM_PENDING, -1]

    def eta(self) -> list:
        """``[SIM_*, stoptime]`` of the latest dry run, for getstatus."""
        with self._lock:
            return list(self._eta)

    def start(self, simulations: Simulations, session: Any, request: ScriptRequest) -> None:
        """Dry-run ``request``; raises CommandError when that is not possible now."""

        def on_result(simid: str, stoptime: float, devinfo: dict) -> None:
            ok = stoptime >= 0
            with self._lock:
                self._eta = [SIM_SUCCESS if ok else SIM_FAILED, stoptime]
            self._emit("eta", list(self._eta))
            if not ok:
                self._message(f"dry run of {request.name or 'request ' + request.reqid} "
                              "found problems: see the simulation messages; it will run "
                              "anyway unless removed from the queue", WARNING)

        simulations.start(session, request.name or "", request.text, "dryrun-" + request.reqid,
                          request.user, on_result=on_result, quiet=False)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            process.kill()
        except OSError:
            pass


def _tail(stderr: Any) -> str:
    try:
        stderr.seek(0, os.SEEK_END)
        size = stderr.tell()
        stderr.seek(max(0, size - _STDERR_TAIL))
        text = stderr.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f":\n{text}" if text else ""


def _child_environment() -> dict[str, str]:
    """Our environment, with the directory holding this ``nicos`` first on the
    path, so that the process runs the same code as the daemon."""
    env = dict(os.environ)
    root = str(Path(nicos.__file__).resolve().parents[1])
    paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


__all__ = ["MAX_RUNNING", "TIMEOUT", "Simulations"]
