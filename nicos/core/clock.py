"""Time as devices see it.

Virtual devices take time: a motor moves at its speed, a timer counts up.
They ask the session's clock for the time and wait on it, so that tests (and
later the dry run) can replace real time with a ``ManualClock`` that only
advances when told to: a motor then is exactly at 3.0 after
``clock.advance(3.0)``, with no sleeping and no timing in the test.

Waiting is always "until this signal is set or this much time has passed";
the signal is how ``stop()`` cuts a motion short.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Signal(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...


class Clock(Protocol):
    def time(self) -> float:
        """Seconds on a monotonic scale (not wall-clock time)."""

    def new_signal(self) -> Signal:
        """A flag that wakes ``wait`` when set."""

    def wait(self, signal: Signal, timeout: float) -> bool:
        """Wait until ``signal`` is set or ``timeout`` seconds have passed on
        this clock; True if the signal is set."""


class RealClock:
    """Real time: ``time.monotonic`` and threading events."""

    def time(self) -> float:
        return time.monotonic()

    def new_signal(self) -> threading.Event:
        return threading.Event()

    def wait(self, signal: Signal, timeout: float) -> bool:
        assert isinstance(signal, threading.Event)
        return signal.wait(max(0.0, timeout))


class _ManualSignal:
    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock
        self._flag = False

    def set(self) -> None:
        with self._clock._cond:
            self._flag = True
            self._clock._cond.notify_all()

    def clear(self) -> None:
        with self._clock._cond:
            self._flag = False

    def is_set(self) -> bool:
        return self._flag


class ManualClock:
    """Virtual time that moves only on ``advance``.

    ``advance`` returns once every thread whose wait ended because of it has
    come back to wait again or has finished (left all waits for good); so
    after ``clock.advance(2)`` a motor has already updated its position.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        # threads inside wait(): (number of that wait, deadline)
        self._waiting: dict[threading.Thread, tuple[int, float]] = {}
        self._waits_begun = 0

    def time(self) -> float:
        with self._cond:
            return self._now

    def new_signal(self) -> _ManualSignal:
        return _ManualSignal(self)

    def wait(self, signal: Signal, timeout: float) -> bool:
        me = threading.current_thread()
        with self._cond:
            self._waits_begun += 1
            deadline = self._now + max(0.0, timeout)
            self._waiting[me] = (self._waits_begun, deadline)
            self._cond.notify_all()  # advance() may be waiting for this thread
            try:
                while not signal.is_set() and self._now < deadline:
                    self._cond.wait()
            finally:
                del self._waiting[me]
            return signal.is_set()

    def advance(self, seconds: float, settle_timeout: float = 10.0) -> None:
        """Move time forward and wait until the threads it woke have settled."""
        with self._cond:
            self._now += seconds
            self._cond.notify_all()
            woken = {thread: number for thread, (number, deadline) in self._waiting.items()
                     if deadline <= self._now}
            end = time.monotonic() + settle_timeout
            while True:
                # settled: waiting again (a later wait) or finished
                woken = {thread: number for thread, number in woken.items()
                         if thread.is_alive() and
                         self._waiting.get(thread, (number, 0.0))[0] == number}
                if not woken:
                    return
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError("threads did not settle after ManualClock.advance")
                # a finishing thread does not notify; look again shortly
                self._cond.wait(min(remaining, 0.01))


__all__ = ["Clock", "ManualClock", "RealClock", "Signal"]
