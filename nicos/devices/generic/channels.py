"""Virtual counting channels: a timer and counters (the image is in image.py).

Counts are a Poisson process on the session clock: whenever a channel is
read or ended, the counts for the time since the last look are drawn at the
current rate.  So readings during a count grow like real ones, and with a
ManualClock a count takes no real time at all.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy

from nicos.core import (
    BUSY,
    OK,
    Channel,
    CommunicationError,
    Override,
    Param,
    Status,
    floatrange,
    none_or,
    oneof,
)
from nicos.devices.generic.failure import CanFail
from nicos.devices.generic.peak import FollowsPeak


class VirtualChannel(CanFail, Channel):
    """Counting on the session clock; subclasses say what accumulates.

    Failure modes: ``refuse`` (starting fails), ``communication`` (reading fails).
    """

    parameters = {
        "seed": Param("Seed of the random counts (None: different every time)",
                      type=none_or(int), default=None),
    }
    parameter_overrides = {
        "failmode": Override(type=oneof("none", "refuse", "communication")),
    }

    def doInit(self) -> None:
        # subclasses that extend doInit must call this one
        self._lock = threading.RLock()
        self._rng = numpy.random.default_rng(self._params["seed"])
        self._started: float | None = None
        self._ended: float | None = None
        self._looked: float | None = None  # counts are drawn up to this time
        self._reached: float | None = None
        self._clear()

    @property
    def counting(self) -> bool:
        return self._started is not None and self._ended is None

    def doStart(self) -> None:
        if self._failing("refuse"):
            raise CommunicationError(f"{self}: the electronics do not start "
                                     "(failmode 'refuse')")
        with self._lock:
            now = self._session.clock.time()
            self._started = self._looked = now
            self._ended = self._reached = None
            self._clear()
        self.status()

    def doFinish(self, at: float | None) -> None:
        with self._lock:
            if not self.counting:
                return
            now = self._session.clock.time()
            end = now if at is None else min(max(at, self._started), now)
            self._draw_until(end)
            self._ended = end
        self.status()

    def doRead(self) -> Any:
        if self._failing("communication"):
            raise CommunicationError(f"{self}: no answer from the electronics "
                                     "(failmode 'communication')")
        with self._lock:
            self._draw_until(self._session.clock.time())
            return self._value()

    def doStatus(self) -> Status:
        return (BUSY, "counting") if self.counting else (OK, "idle")

    def doPresetReachedAt(self) -> float | None:
        with self._lock:
            self._draw_until(self._session.clock.time())
            return self._reached

    def elapsed(self) -> float:
        """Seconds counted so far (of the current or last count)."""
        with self._lock:
            if self._started is None:
                return 0.0
            end = self._ended if self._ended is not None else self._session.clock.time()
            return end - self._started

    def _draw_until(self, now: float) -> None:
        if not self.counting or self._looked is None or now <= self._looked:
            return
        self._accumulate(self._looked, now)
        self._looked = now

    # what subclasses decide
    def _clear(self) -> None:
        """Forget the counts of the last count."""

    def _accumulate(self, since: float, until: float) -> None:
        """Add the counts of the interval; set ``self._reached`` when the
        preset is reached."""

    def _value(self) -> Any:
        raise NotImplementedError

    def _note_preset(self, before: float, after: float, since: float, until: float) -> None:
        """Counts went from ``before`` to ``after`` in the interval: if that
        crossed the preset, note when (interpolated within the interval)."""
        preset = self._params["preset"]
        if preset is None or self._reached is not None or after < preset:
            return
        share = (preset - before) / (after - before) if after > before else 1.0
        self._reached = since + max(0.0, min(1.0, share)) * (until - since)


class VirtualTimer(VirtualChannel):
    """Counts seconds; as master it ends the count after ``preset`` seconds."""

    parameter_overrides = {
        "unit": Override(default="s"),
        "fmtstr": Override(default="%.2f"),
    }

    def _accumulate(self, since: float, until: float) -> None:
        preset = self._params["preset"]
        if preset is not None and self._reached is None and until - self._started >= preset:
            self._reached = self._started + preset

    def _value(self) -> float:
        end = self._looked if self._ended is None else self._ended
        if self._started is None or end is None:
            return 0.0
        elapsed = end - self._started
        preset = self._params["preset"]
        # a timer stops at its preset, even if nobody ends the count at once
        return min(elapsed, preset) if preset is not None else elapsed


class VirtualCounter(FollowsPeak, VirtualChannel):
    """Counts events at ``countrate`` per second (at the top of the peak,
    when attached to a motor); as master it ends the count at ``preset``
    counts."""

    parameters = {
        "countrate": Param("Counts per second (at the top of the peak)",
                           type=floatrange(0), default=1000.0, settable=True),
    }
    parameter_overrides = {
        "unit": Override(default="cts"),
        "fmtstr": Override(default="%d"),
    }

    def _clear(self) -> None:
        self._counts = 0

    def _accumulate(self, since: float, until: float) -> None:
        peak, background = self._peak_weights()
        expected = self._params["countrate"] * (peak + background) * (until - since)
        before = self._counts
        self._counts += int(self._rng.poisson(expected))
        self._note_preset(before, self._counts, since, until)

    def _value(self) -> int:
        preset = self._params["preset"]
        # a monitor stops at its preset
        return min(self._counts, int(preset)) if preset is not None else self._counts


__all__ = ["VirtualChannel", "VirtualCounter", "VirtualTimer"]
