"""Dry runs: a script runs against the devices, but nothing moves or counts.

A session created with ``dry_run=True`` (the simulation does this, in a
process of its own) keeps a ``DryRun`` that the device base classes consult
instead of the hardware:

- ``Moveable.start`` checks the target exactly as always (type, limits),
  then the device *jumps*: it reads the target at once and counts as busy
  for the time the move would take (``estimate_time``).
- ``Measurable.start`` checks the preset and counts as busy for the preset
  time (``estimate_count_time``); the values read are zeros.
- Waiting does not poll: time jumps (``hooks.sleep``, which in a dry run
  advances a ManualClock) to when the last waited-for device is done.
- The first, lowest, highest and last value of every moved device are kept
  (``ranges``), so the simulation can report what a script would cover.

Devices that are never moved are read as usual (virtual devices compute
their value; a readback of a moved motor sees the motor's target).
Starting values can be given with ``preset_value``, e.g. the positions of
the real instrument at the moment the simulation starts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nicos.core.status import BUSY, OK, Status

if TYPE_CHECKING:
    from nicos.core.readable import Readable
    from nicos.core.session import Session


class DryRun:
    """Simulated values, busy times and covered ranges of one session's devices."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._busy_until: dict[str, float] = {}
        # device name -> [last, lowest, highest]
        self._ranges: dict[str, list[Any]] = {}

    def preset_value(self, name: str, value: Any) -> None:
        """Start device ``name`` at ``value`` (user units) instead of reading it."""
        with self._lock:
            self._values[name] = value

    # ----------------------------------------------------------- devices

    def read(self, device: Readable) -> Any:
        with self._lock:
            if device.name in self._values:
                return self._values[device.name]
        return device._simulated_value()

    def status(self, device: Readable) -> Status:
        with self._lock:
            until = self._busy_until.get(device.name)
        if until is not None and self._session.clock.time() < until:
            return (BUSY, "busy (dry run)")
        return (OK, "")

    def start(self, device: Any, target: Any) -> None:
        """``device`` jumps to ``target``; busy for as long as the move would take."""
        old = self.read(device)
        duration = device.estimate_time(old, target)
        now = self._session.clock.time()
        with self._lock:
            self._values[device.name] = target
            self._busy_until[device.name] = now + duration
            self._extend_range(device.name, old, target)

    def count(self, device: Readable, duration: float) -> None:
        """``device`` counts (busy) for ``duration`` seconds."""
        with self._lock:
            self._busy_until[device.name] = self._session.clock.time() + max(0.0, duration)

    def stop(self, device: Readable) -> None:
        now = self._session.clock.time()
        with self._lock:
            if self._busy_until.get(device.name, now) > now:
                self._busy_until[device.name] = now

    def wait(self, devices: Iterable[Readable]) -> None:
        """Let virtual time pass until none of ``devices`` is busy."""
        with self._lock:
            until = max((self._busy_until.get(d.name, -math.inf) for d in devices),
                        default=-math.inf)
        remaining = until - self._session.clock.time()
        if remaining > 0:
            self._session.hooks.sleep(remaining)

    # ------------------------------------------------------------ ranges

    def _extend_range(self, name: str, old: Any, new: Any) -> None:
        known = self._ranges.get(name)
        low, high = (old, old) if known is None else (known[1], known[2])
        try:
            low, high = min(low, new), max(high, new)
        except TypeError:  # values that cannot be ordered: keep the last only
            low = high = new
        self._ranges[name] = [new, low, high]

    def ranges(self) -> dict[str, list[Any]]:
        """``{device: [last, lowest, highest]}`` of every device moved so far."""
        with self._lock:
            return {name: list(values) for name, values in self._ranges.items()}


__all__ = ["DryRun"]
