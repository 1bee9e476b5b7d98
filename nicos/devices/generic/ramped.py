"""The common part of virtual devices that travel to their target at a rate
(motors at a speed, temperatures along a ramp).

Failure modes, for trying out error handling:

- ``refuse``: the controller refuses every start (MoveError);
- ``stall``: the travel stops on the way, at ``fail_at`` or half way, and the
  device reports an error there;
- ``communication``: reading the device fails (CommunicationError).
"""

from __future__ import annotations

import threading
from typing import Any

from nicos.core import (
    BUSY,
    ERROR,
    OK,
    CommunicationError,
    HasLimits,
    MoveError,
    Override,
    Param,
    Status,
    none_or,
    oneof,
)
from nicos.devices.generic.failure import CanFail
from nicos.devices.generic.motion import Travel

FAILMODES = ("none", "refuse", "stall", "communication")


class RampedMoveable(CanFail, HasLimits):
    """A virtual moveable whose value travels to the target at ``_rate()``."""

    parameters = {
        "curvalue": Param("Current raw value; in the setup: where it starts",
                          type=float, default=0.0),
        "fail_at": Param("Raw value at which failmode 'stall' stops the travel "
                         "(None: half way)", type=none_or(float), default=None,
                         settable=True),
    }
    parameter_overrides = {
        "failmode": Override(type=oneof(*FAILMODES)),
    }

    def doInit(self) -> None:
        # subclasses that extend doInit must call this one
        self._travel: Travel | None = None
        self._resting_at = self._params["curvalue"]
        # start (script thread) and an emergency stop (another thread) may meet
        self._motion_lock = threading.RLock()

    # what subclasses decide
    def _rate(self) -> float:
        """Units per second; 0 means "at once"."""
        raise NotImplementedError

    def _moving_text(self, travel: Travel) -> str:
        return f"moving to {self.format(self._raw_to_user(travel.target), unit=True)}"

    # ----------------------------------------------------------- moving

    def doStart(self, target: float) -> None:
        if self._failing("refuse"):
            raise MoveError(f"{self}: the controller refuses to move (failmode 'refuse')")
        self._check_communication()
        with self._motion_lock:
            start = self._halt()
            halt_at = None
            if self._failing("stall"):
                halt_at = self._params["fail_at"]
                if halt_at is None:
                    halt_at = (start + target) / 2
            self._travel = Travel(self._session.clock, start, target, self._rate(),
                                  self._on_progress, halt_at=halt_at, name=f"{self} travel")
        self.status()  # tell clients it is busy now

    def doStop(self) -> None:
        self._halt()

    def doEstimateTime(self, old: float, new: float) -> float:
        rate = self._rate()
        return abs(new - old) / rate if rate > 0 else 0.0

    def _halt(self) -> float:
        """Stop a travel (if any); the raw value where the device now rests."""
        with self._motion_lock:
            travel = self._travel
            if travel is not None:
                self._resting_at = travel.stop()
            return self._resting_at

    def _on_progress(self, raw: float, ended: bool) -> None:
        self._session.publish(self._name, "value", self._raw_to_user(raw))
        if ended:
            self._session.publish(self._name, "status", self.doStatus())

    def doShutdown(self) -> None:
        self._halt()

    # --------------------------------------------------------- reading

    def _check_communication(self) -> None:
        if self._failing("communication"):
            raise CommunicationError(f"{self}: no answer from the controller "
                                     "(failmode 'communication')")

    def _raw_position(self) -> float:
        travel = self._travel
        return travel.position() if travel is not None else self._resting_at

    def doRead(self) -> Any:
        self._check_communication()
        return self._raw_position()

    def doReadCurvalue(self) -> float:
        return self._raw_position()

    def doStatus(self) -> Status:
        if self._failing("communication"):
            return (ERROR, "no answer from the controller")
        travel = self._travel
        if travel is None:
            return (OK, "idle")
        if not travel.ended:
            return (BUSY, self._moving_text(travel))
        if travel.stalled:
            where = self.format(self._raw_to_user(travel.position()), unit=True)
            return (ERROR, f"stalled at {where}")
        return (OK, "idle")

    def doReset(self) -> None:
        with self._motion_lock:
            self._halt()
            self._travel = None  # forget a stall


__all__ = ["FAILMODES", "RampedMoveable"]
