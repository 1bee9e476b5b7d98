"""What the instrument layer needs from whoever runs the scripts.

The session never imports the daemon.  The daemon (or a test, or a plain
Python prompt) hands the session an object with the methods below; this base
class is the behaviour without a daemon: events go nowhere, breakpoints do
nothing, sleeping is ``time.sleep`` and no count is ever asked to finish
early.  The daemon subclasses it and overrides every method.

All methods may be called from any thread; ``breakpoint`` and ``sleep``
must act (pause, raise the stop exception) only in the script thread and
behave like the defaults elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class DaemonHooks:
    """The session's only door to the daemon; defaults for running stand-alone."""

    def emit(self, event: str, data: Any) -> None:
        """Send an event (``cache``, later ``dataset``, ``datapoint``, ...) to clients.

        Must not block; data are plain lists, dicts, strings and numbers.
        """

    def breakpoint(self, level: int) -> None:
        """Act here on a pending break or stop request of at least ``level``
        (BREAK_AFTER_STEP, BREAK_NOW, BREAK_IMMEDIATE): pause until continued,
        or raise the script controller's stop exception."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; a pending break or stop request (level
        BREAK_AFTER_STEP or higher) cuts the wait short and is acted on."""
        time.sleep(max(0.0, seconds))

    def sleep_at_level(self, seconds: float, level: int) -> None:
        """Like ``sleep``, but only a break or stop request of at least
        ``level`` cuts the wait short (counting waits at BREAK_NOW, so that
        "break after step" lets the count finish).  The default is ``sleep``."""
        self.sleep(seconds)

    def register_emergency_stop(self, func: Callable[[], None]) -> None:
        """Have ``func()`` called, from any thread, when the user asks for an
        emergency stop.  The session registers exactly one function."""

    def consume_finish_request(self) -> bool:
        """True once for each time the user asked to finish the current count
        early; the request is cleared by this call."""
        return False


__all__ = ["DaemonHooks"]
