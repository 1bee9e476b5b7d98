"""A value that travels from one place to another at a constant rate.

Virtual motors and temperature ramps are both this: a thread advances the
value in fine steps, anybody can ask where it is meanwhile, and ``stop()``
ends the travel where it is at the moment of the call.  Positions are
computed from the clock (start time and rate), not summed up step by step,
so they are exact with a ManualClock and the step size only sets how often
progress is reported.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from nicos.core.clock import Clock

log = logging.getLogger("nicos.devices.generic.motion")

# how often a travelling value reports its progress (seconds of clock time)
PROGRESS_INTERVAL = 0.05

ProgressCallback = Callable[[float, bool], None]


class Travel:
    """One travel from ``start`` to ``target`` at ``rate`` units per second.

    ``halt_at``: a point on the way where the travel ends early (a stall);
    ``rate`` 0 means "arrive at once".  ``on_progress(position, ended)`` is
    called from the travel's thread.
    """

    def __init__(self, clock: Clock, start: float, target: float, rate: float,
                 on_progress: ProgressCallback | None = None,
                 halt_at: float | None = None, name: str = "travel") -> None:
        self._clock = clock
        self._start = start
        self._target = target
        self._rate = rate
        self._on_progress = on_progress
        self._end = target
        self.stalls = False
        if halt_at is not None and min(start, target) <= halt_at <= max(start, target) \
                and halt_at != target:
            self._end = halt_at
            self.stalls = True
        self._lock = threading.Lock()
        self._stop_signal = clock.new_signal()
        self._t0 = clock.time()
        self._stop_time: float | None = None
        self._final: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- state

    @property
    def target(self) -> float:
        return self._target

    @property
    def ended(self) -> bool:
        """Arrived, halted or stopped.  Judged from the clock, not from the
        thread, so that it is right the moment the time has come."""
        with self._lock:
            if self._final is not None or self._stop_time is not None:
                return True
            return self._position_at(self._clock.time()) == self._end

    @property
    def stalled(self) -> bool:
        """Ended at the stall point instead of the target."""
        return self.stalls and self.ended and not self.stopped

    @property
    def stopped(self) -> bool:
        """Ended by stop() before reaching its end."""
        return self._stop_time is not None

    def position(self) -> float:
        with self._lock:
            if self._final is not None:
                return self._final
            now = self._clock.time()
            if self._stop_time is not None:
                now = min(now, self._stop_time)
            return self._position_at(now)

    def stop(self) -> float:
        """End the travel now; returns where it ended.  Any thread."""
        with self._lock:
            if self._final is None and self._stop_time is None:
                self._stop_time = self._clock.time()
        self._stop_signal.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        return self.position()

    # ------------------------------------------------------------- thread

    def _position_at(self, now: float) -> float:
        distance = abs(self._end - self._start)
        covered = distance if self._rate <= 0 else self._rate * max(0.0, now - self._t0)
        if covered >= distance:
            return self._end  # exactly, not start + distance with rounding
        return self._start + covered if self._end >= self._start else self._start - covered

    def _run(self) -> None:
        while True:
            with self._lock:
                stop_time = self._stop_time
                position = self._position_at(self._clock.time() if stop_time is None
                                             else stop_time)
                arrived = position == self._end
                if stop_time is not None or arrived:
                    self._final = position
            if self._final is not None:
                self._report(position, True)
                return
            self._report(position, False)
            self._clock.wait(self._stop_signal, PROGRESS_INTERVAL)

    def _report(self, position: float, ended: bool) -> None:
        if self._on_progress is not None:
            try:
                self._on_progress(position, ended)
            except Exception:  # noqa: BLE001 - reporting must not kill the travel
                log.exception("progress report failed")


__all__ = ["PROGRESS_INTERVAL", "Travel"]
