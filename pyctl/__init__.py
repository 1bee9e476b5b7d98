"""pyctl: run a script in one thread, break, continue and stop it from others.

The C part (``pyctl._pyctl``) does the tracing on demand; see the comment at
the top of ``_pyctl.c`` for how it works and why it is safe.  This wrapper adds
what is easier in Python and still generic: handing the "continue" or "stop"
decision to a script thread that sits in its break function, and a wait that
a break or stop request interrupts at once.

Typical use::

    def on_break(frame, arg):
        ctl.wait_for_continue()      # returns the continue argument, or raises ControlStop

    ctl = Controller(on_break, break_only_in_filename="<script>")
    ctl.start_exec(compile(text, "<script>", "exec"), namespace)   # in the script thread
    ctl.set_break("user asked")      # from another thread
    ctl.set_continue()               # later, from another thread
    ctl.set_stop("abort")            # stops, also while in break
    ctl.set_stop("abort", insist=True)   # ... at every line until the run ends

A ControlStop that the script catches and does not re-raise is raised again
at its next eligible line; ``stop_thread`` stops other threads the same way.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from time import monotonic
from types import FrameType
from typing import Any

from pyctl import _pyctl
from pyctl._pyctl import (
    LINENO_ON_DEMAND,
    LINENO_TRACE_ALL,
    REQUEST_BREAK,
    REQUEST_NONE,
    REQUEST_STOP,
    STATUS_IDLE,
    STATUS_IDLEEXC,
    STATUS_INBREAK,
    STATUS_RUNNING,
    STATUS_STOPPING,
    ControlStop,
    stop_thread,
)

__all__ = [
    "Controller", "ControlStop", "stop_thread",
    "STATUS_IDLEEXC", "STATUS_IDLE", "STATUS_RUNNING", "STATUS_INBREAK", "STATUS_STOPPING",
    "REQUEST_NONE", "REQUEST_BREAK", "REQUEST_STOP",
    "LINENO_ON_DEMAND", "LINENO_TRACE_ALL",
]

BreakFunc = Callable[[FrameType, Any], Any]
RequestFilter = Callable[[int, Any], bool]

_CONTINUE = "continue"
_STOP = "stop"


class Controller(_pyctl.Controller):
    """Script controller; the C base class does the tracing.

    Thread roles: ``start``/``start_exec``, ``wait``, ``wait_for_continue``,
    ``breakpoint`` and ``stop`` belong to the script thread; ``set_break``,
    ``set_stop``, ``set_continue`` and the attributes may be used from any
    thread.
    """

    def __init__(
        self,
        breakfunc: BreakFunc,
        break_only_in_toplevel: bool = False,
        break_only_in_filename: str | None = None,
        lineno_behavior: int = LINENO_ON_DEMAND,
    ) -> None:
        if not callable(breakfunc):
            raise TypeError("breakfunc must be callable")
        self._user_breakfunc = breakfunc
        self._cond = threading.Condition()
        # the decision handed to a script thread waiting in wait_for_continue
        self._resume: tuple[str, Any] | None = None
        super().__init__(self._on_break, break_only_in_toplevel,
                         break_only_in_filename, lineno_behavior)

    def _on_break(self, frame: FrameType, arg: Any) -> Any:
        try:
            return self._user_breakfunc(frame, arg)
        finally:
            # a decision nobody waited for must not leak into the next break
            with self._cond:
                self._resume = None

    # -- requests from other threads --------------------------------------

    def set_break(self, arg: Any = None) -> None:
        """Ask the script to call the break function at its next eligible line."""
        super().set_break(arg)
        with self._cond:
            self._cond.notify_all()

    def set_stop(self, arg: Any = None, insist: bool = False) -> None:
        """Ask the script to stop (ControlStop) at its next eligible line.

        While the script is in break, the break is ended at once and
        ``wait_for_continue`` raises ControlStop(arg) in the script thread.
        A ControlStop the script swallows is raised again at its next
        eligible line.  With ``insist`` the stop stays armed until the run
        ends: raised at every eligible line (cleanup code included), and
        ``wait`` and ``breakpoint`` act on it at once.
        """
        super().set_stop(arg, insist)
        with self._cond:
            if self.status == STATUS_INBREAK:
                self._resume = (_STOP, arg)
            self._cond.notify_all()

    def set_continue(self, arg: Any = None) -> None:
        """End the current break; ``wait_for_continue`` returns ``arg``."""
        with self._cond:
            if self.status != STATUS_INBREAK:
                raise RuntimeError("cannot continue: the script is not in break")
            self._resume = (_CONTINUE, arg)
            self._cond.notify_all()

    # -- script thread --------------------------------------------------------

    def wait_for_continue(self) -> Any:
        """In the break function: block until continued (returns the argument
        of set_continue) or stopped (raises ControlStop)."""
        with self._cond:
            while self._resume is None:
                self._cond.wait()
            kind, arg = self._resume
            self._resume = None
        if kind == _STOP:
            self.stop(arg)
        return arg

    def wait(self, timeout: float, accept: RequestFilter | None = None) -> bool:
        """Sleep up to ``timeout`` seconds; return True as soon as a break or
        stop request is pending (and ``accept(request, arg)`` agrees), False
        when the time is up.  The request is not acted on: call
        ``breakpoint()`` to do that here, or let the next line do it.

        Requests that ``accept`` rejects do not end the wait; only a new
        request wakes the thread again, so there is no polling.
        """
        deadline = monotonic() + timeout
        with self._cond:
            while True:
                request, arg = self.pending()
                if request != REQUEST_NONE and (accept is None or accept(request, arg)):
                    return True
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def start(self, func: Callable[[], Any]) -> Any:
        """Call ``func()`` in this thread under control and return its result."""
        with self._cond:
            self._resume = None
        return super().start(func)

    def start_exec(self, code: Any, globals: dict, locals: Any = None) -> None:
        """Execute ``code`` in this thread under control."""
        with self._cond:
            self._resume = None
        return super().start_exec(code, globals, locals)

    # -- inspection -----------------------------------------------------------

    def get_stacktrace(self, limit: int | None = None) -> str:
        """Formatted stack of the script from its eligible frame outwards
        (the frames of whoever called ``start`` left out)."""
        frame = self.currentframe
        if frame is None:
            return ""
        stack = traceback.extract_stack(frame)
        top = self.toplevelframe
        if top is not None:
            code = top.f_code
            for index, entry in enumerate(stack):
                if entry.filename == code.co_filename and entry.name == code.co_name:
                    stack = stack[index:]
                    break
        if limit is not None:
            stack = stack[-limit:] if limit > 0 else stack[:0]
        return "".join(traceback.format_list(stack))
