"""User-visible messages: records, the bounded message log, and output capture.

Everything a script prints or logs becomes a protocol message record
``[logger, time, level, text, exc_text, reqid]``; records go out as ``message``
events and into a bounded log that ``getmessages`` reads.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from nicos.protocols.daemon import ACTION, INFO, INPUT, WARNING
from nicos_daemon.scripts import SCRIPT_FILENAME

MAX_MESSAGE_CHARS = 8192
MESSAGE_LOG_SIZE = 20_000
USER_LOGGER = "nicos"

Record = list  # [logger, created, level, text, exc_text, reqid]
Emit = Callable[[Record], None]


def make_record(text: str, level: int = INFO, *, logger: str = USER_LOGGER,
                exc_text: str | None = None, reqid: str | None = None,
                created: float | None = None) -> Record:
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + " [...]"
    return [logger, time.time() if created is None else created, level,
            text if text.endswith("\n") else text + "\n", exc_text, reqid]


class MessageLog:
    """The last messages, for clients that connect later (getmessages)."""

    def __init__(self, size: int = MESSAGE_LOG_SIZE) -> None:
        self._records: deque[Record] = deque(maxlen=size)
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._records.maxlen or 0

    def add(self, record: Record) -> bool:
        """Keep the record; False for records that are live-only (ACTION)."""
        if record[2] == ACTION:
            return False
        with self._lock:
            self._records.append(record)
        return True

    def last(self, count: int | None) -> list[Record]:
        with self._lock:
            records = list(self._records)
        if count is None or count <= 0:
            return records
        return records[-count:]


def format_script_exception(exc: BaseException) -> tuple[str, str]:
    """(one-line summary, traceback text) with the daemon's own frames left out:
    the traceback starts at the first frame of the user's script."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != SCRIPT_FILENAME:
        tb = tb.tb_next
    if tb is None:
        tb = exc.__traceback__
    if isinstance(exc, SyntaxError):
        tb = None
    lines = traceback.format_exception(type(exc), exc, tb)
    summary = f"{type(exc).__name__} - {exc}" if str(exc) else type(exc).__name__
    return summary, "".join(lines)


class OutputRouter(io.TextIOBase):
    """Replaces sys.stdout/sys.stderr: text written by a captured thread (the
    script thread, or a thread running exec/eval for a client) becomes
    messages, one per line; other threads write to the original stream."""

    def __init__(self, original: Any, sink: Callable[[str, int], None], level: int) -> None:
        super().__init__()
        self.original = original
        self._original = original
        self._sink = sink
        self._level = level
        self._local = threading.local()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not capture_state.active:
            return self._original.write(text)
        pending = getattr(self._local, "pending", "") + text
        *lines, rest = pending.split("\n")
        for line in lines:
            self._sink(line, self._level)
        if len(rest) > MAX_MESSAGE_CHARS:
            self._sink(rest, self._level)
            rest = ""
        self._local.pending = rest
        return len(text)

    def flush(self) -> None:
        if not capture_state.active:
            self._original.flush()
            return
        rest = getattr(self._local, "pending", "")
        if rest:
            self._local.pending = ""
            self._sink(rest, self._level)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._original.fileno()


class _CaptureState(threading.local):
    active = False


capture_state = _CaptureState()


_sink: Callable[[str, int], None] | None = None


def install_output_capture(sink: Callable[[str, int], None] | None) -> None:
    """Route captured threads' stdout/stderr lines to ``sink(line, level)``
    (None: stop routing)."""
    global _sink
    _sink = sink
    if sink is None:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, OutputRouter):
                setattr(sys, name, stream.original)
    else:
        _ensure_routed()


def _ensure_routed() -> None:
    # someone (a test runner, a library) may have swapped the streams since
    if _sink is None:
        return
    if not isinstance(sys.stdout, OutputRouter):
        sys.stdout = OutputRouter(sys.stdout, _sink, INFO)
    if not isinstance(sys.stderr, OutputRouter):
        sys.stderr = OutputRouter(sys.stderr, _sink, WARNING)


class captured:
    """Context manager: output of this thread becomes messages while inside."""

    def __enter__(self) -> None:
        _ensure_routed()
        self._was = capture_state.active
        capture_state.active = True

    def __exit__(self, *exc: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, OutputRouter):
                stream.flush()
        capture_state.active = self._was


class UserLogHandler(logging.Handler):
    """Log records of the user-facing logger ("nicos" and below) from any
    thread become messages."""

    def __init__(self, emit_record: Emit, reqid: Callable[[], str | None]) -> None:
        super().__init__(logging.DEBUG)
        self._emit_record = emit_record
        self._reqid = reqid

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            exc_text = None
            if record.exc_info and record.exc_info[1] is not None:
                summary, exc_text = format_script_exception(record.exc_info[1])
                text = f"{text} ({summary})" if text else summary
            name = record.name if record.name != "root" else USER_LOGGER
            self._emit_record(make_record(text, record.levelno, logger=name,
                                          exc_text=exc_text, reqid=self._reqid(),
                                          created=record.created))
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


class MessageSender:
    """Messages to clients: kept for getmessages (``keep(record)`` stores
    them too), sent as ``message`` events, each tagged with the request it
    belongs to (``reqid()``).  While capturing, script output and the user
    logger's records become messages as well."""

    def __init__(self, log: MessageLog, keep: Emit, emit: Callable[[str, Any], None],
                 reqid: Callable[[], str | None]) -> None:
        self._log = log
        self._keep = keep
        self._emit = emit
        self._reqid = reqid
        self._log_handler: UserLogHandler | None = None

    def send_record(self, record: Record) -> None:
        if self._log.add(record):
            self._keep(record)
        self._emit("message", record)

    def send(self, text: str, level: int = INFO, exc_text: str | None = None) -> None:
        self.send_record(make_record(text, level, exc_text=exc_text, reqid=self._reqid()))

    def capture_output(self) -> None:
        """Make the output of captured threads and the user logger's records messages."""
        install_output_capture(self.send)
        self._log_handler = UserLogHandler(self.send_record, self._reqid)
        user_log = logging.getLogger(USER_LOGGER)
        user_log.addHandler(self._log_handler)
        user_log.setLevel(logging.INFO)
        user_log.propagate = False

    def release_output(self) -> None:
        """Undo capture_output: the output streams are the original ones again."""
        if self._log_handler is not None:
            logging.getLogger(USER_LOGGER).removeHandler(self._log_handler)
        install_output_capture(None)


def input_echo(user: str, text: str, name: str | None, prompt: str = ">>>") -> str:
    """The echo of submitted code, as clients expect it at level INPUT."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    if "\n" not in text:
        return f"{prompt} [{user} {stamp}]  {text}"
    header = f"{prompt} [{user} {stamp}] {'-' * 20} {name or ''}".rstrip()
    return f"{header}\n{text}{'-' * 51}"


__all__ = ["ACTION", "INFO", "INPUT", "MessageLog", "MessageSender", "OutputRouter",
           "UserLogHandler", "captured", "install_output_capture", "format_script_exception",
           "input_echo", "make_record"]
