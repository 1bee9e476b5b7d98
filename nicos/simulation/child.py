"""The simulation process: ``python -m nicos.simulation.child``.

Reads one request line from stdin (see wire.py), runs the simulation and
writes message lines and finally the result line to stdout.  Everything
else that would reach stdout (``print`` in the script, stray output of
libraries) becomes a message or is discarded, so the line protocol stays
clean.  When stdin closes, the daemon has gone: the process ends at once.
Its address space is bounded (MAX_MEMORY); the daemon bounds its time.
"""

from __future__ import annotations

import io
import logging
import os
import resource
import sys
import threading
from typing import IO, Any

from nicos.simulation.wire import (
    MAX_MESSAGES,
    MAX_TEXT,
    WireError,
    message_line,
    read_request,
    result_line,
)

_MAX_REQUEST = 64 * 1024 * 1024
MAX_MEMORY = 4 * 1024**3  # bytes of address space; the daemon bounds the time


class RecordWriter(logging.Handler):
    """Writes log records as message lines, at most ``limit`` of them."""

    def __init__(self, stream: IO[str], simid: str, limit: int = MAX_MESSAGES) -> None:
        super().__init__(logging.DEBUG)
        self._stream = stream
        self._simid = simid
        self._limit = limit
        self._count = 0

    def _record(self, name: str, created: float, level: int, text: str,
                exc_text: str | None) -> list[Any]:
        text = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " ..."
        if exc_text is not None and len(exc_text) > MAX_TEXT:
            exc_text = exc_text[-MAX_TEXT:]
        return [name, created, level, text + "\n", exc_text, self._simid]

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            exc_text = record.exc_text
            if exc_text is None and record.exc_info:
                exc_text = logging.Formatter().formatException(record.exc_info)
        except Exception:  # noqa: BLE001 - a bad message must not end the simulation
            self.handleError(record)
            return
        self._count += 1
        if self._count > self._limit + 1:
            return
        if self._count == self._limit + 1:
            line = self._record("nicos", record.created, logging.WARNING,
                                f"more than {self._limit} messages: the rest is not shown",
                                None)
        else:
            line = self._record(record.name, record.created, record.levelno, text, exc_text)
        self._stream.write(message_line(line))
        self._stream.flush()

    def write_line(self, line: str) -> None:
        """Write a protocol line, not mixed with messages of other threads."""
        self.acquire()
        try:
            self._stream.write(line)
            self._stream.flush()
        finally:
            self.release()


class _PrintToLog(io.TextIOBase):
    """``print`` in the script: each line becomes a message."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self._logger = logger
        self._level = level
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._logger.log(self._level, "%s", line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._logger.log(self._level, "%s", line)


def _exit_when_stdin_closes() -> None:
    # the raw descriptor, not sys.stdin: a thread blocked in a buffered
    # reader would hold its lock when the interpreter shuts down
    try:
        while os.read(0, 4096):
            pass
    finally:
        os._exit(3)


def _protocol_stream() -> IO[str]:
    """A private copy of stdout for the protocol; fd 1 itself goes nowhere."""
    stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return stream


def _limit_memory() -> None:
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = MAX_MEMORY if hard == resource.RLIM_INFINITY else min(MAX_MEMORY, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass  # not allowed here: run without the bound


def main() -> int:
    _limit_memory()
    protocol = _protocol_stream()
    try:
        request = read_request(sys.stdin.buffer.readline(_MAX_REQUEST))
    except WireError as err:
        protocol.write(message_line(["nicos", 0.0, logging.ERROR,
                                     f"simulation request not understood: {err}\n", None, ""]))
        protocol.write(result_line(False, 0.0, {}))
        protocol.flush()
        return 2
    threading.Thread(target=_exit_when_stdin_closes, name="stdin-watch", daemon=True).start()

    writer = RecordWriter(protocol, request["simid"], request["max_messages"])
    user_log = logging.getLogger("nicos")
    user_log.addHandler(writer)
    user_log.setLevel(logging.INFO)
    user_log.propagate = False
    sys.stdout = _PrintToLog(user_log, logging.INFO)

    from nicos.simulation.runner import run_simulation  # after the output is redirected

    result = run_simulation(request)
    sys.stdout.flush()
    writer.write_line(result_line(result.ok, result.duration, result.devinfo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
