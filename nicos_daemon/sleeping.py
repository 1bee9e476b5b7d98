"""Interruptible waits in the script thread, and the process-wide ``time.sleep``
that leads the script thread to them.

Scripts and the libraries they call use ``time.sleep`` despite the ban on it
in script text; while a controller runs, ``time.sleep`` is replaced by a
dispatcher that waits interruptibly in a script thread and is the real one in
every other thread.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import pyctl
from nicos.protocols.daemon import BREAK_AFTER_STEP, BREAK_IMMEDIATE
from nicos_daemon.scripts import SCRIPT_FILENAME

Sleeper = Callable[[float, FrameType | None], None]

_real_sleep = time.sleep
# script thread ident -> its interruptible replacement of time.sleep
_sleepers: dict[int, Sleeper] = {}


def _dispatching_sleep(seconds: float) -> None:
    """``time.sleep`` while a controller runs: interruptible in a script
    thread, the real one in every other thread."""
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


def register_script_thread(ident: int, ctl: pyctl.Controller) -> None:
    """From now on ``time.sleep`` in thread ``ident`` waits interruptibly
    under ``ctl`` (see _script_time_sleep)."""
    _sleepers[ident] = functools.partial(_script_time_sleep, ctl)
    time.sleep = _dispatching_sleep


def unregister_script_thread(ident: int) -> None:
    """Undo register_script_thread; the last one restores the real ``time.sleep``."""
    _sleepers.pop(ident, None)
    if not _sleepers and time.sleep is _dispatching_sleep:
        time.sleep = _real_sleep


def wait_at_level(ctl: pyctl.Controller, seconds: float, level: int) -> None:
    """Wait in the script thread; a break or stop of at least ``level`` acts
    at once, and after a continue the rest of the time is waited."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if ctl.wait(remaining, lambda request, arg: arg[1] >= level):
            ctl.breakpoint()


def _script_time_sleep(ctl: pyctl.Controller, seconds: float, caller: FrameType | None) -> None:
    """``time.sleep`` in a script thread; ``caller`` is the frame that called it."""
    if caller is not None and caller.f_code.co_filename == SCRIPT_FILENAME:
        # the script's own wait, however it got hold of time.sleep
        wait_at_level(ctl, seconds, BREAK_AFTER_STEP)
    else:
        # a delay inside library code: only the level of an immediate
        # stop may cut it short, as the protocol has it for internal delays
        wait_at_level(ctl, seconds, BREAK_IMMEDIATE)
