"""The hooks of a dry-run session: virtual time, no daemon.

Sleeping (the ``sleep`` command, and the time a dry run lets pass while a
device would move or count) advances the session's ManualClock at once, so
a script that would take hours is simulated in moments and the clock tells
how long it would have taken.  Events go nowhere; there is nobody to ask
for a break, a stop or an early finish.
"""

from __future__ import annotations

from nicos.core.clock import ManualClock
from nicos.core.hooks import DaemonHooks


class SimulationHooks(DaemonHooks):
    """Hooks for a session whose time is a ManualClock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.clock.advance(float(seconds))

    def sleep_at_level(self, seconds: float, level: int) -> None:
        self.sleep(seconds)


__all__ = ["SimulationHooks"]
