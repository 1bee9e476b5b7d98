"""A virtual temperature controller: the temperature follows the setpoint
along a ramp and counts as arrived within a tolerance."""

from __future__ import annotations

from typing import Any

import numpy

from nicos.core import (
    BUSY,
    NOTREACHED,
    OK,
    NicosError,
    NicosTimeoutError,
    Override,
    Param,
    Status,
    floatrange,
    none_or,
)
from nicos.devices.generic.motion import Travel
from nicos.devices.generic.ramped import RampedMoveable


class VirtualTemperature(RampedMoveable):
    """Ramps to the setpoint at ``ramp`` per minute; with ``timeout`` it
    reports "not reached" if it takes longer than that."""

    parameters = {
        "ramp": Param("Ramp rate, units per minute (0: jump)", type=floatrange(0),
                      default=10.0, settable=True, unit="main/min"),
        "tolerance": Param("Distance from the setpoint that counts as reached",
                           type=floatrange(0), default=0.1, settable=True, unit="main"),
        "timeout": Param("Longest time to reach the setpoint, in seconds (None: no limit)",
                         type=none_or(floatrange(0)), default=None, settable=True, unit="s"),
        "jitter": Param("Standard deviation of the readings' noise", type=floatrange(0),
                        default=0.0, settable=True, unit="main"),
        "setpoint": Param("Where the regulation is heading", type=none_or(float),
                          default=None, internal=True),
    }
    parameter_overrides = {
        "unit": Override(default="K"),
        "fmtstr": Override(default="%.2f"),
        "curvalue": Override(default=295.0),
    }

    def doInit(self) -> None:
        super().doInit()
        self._rng = numpy.random.default_rng()
        self._started_at: float | None = None

    def _rate(self) -> float:
        return self._params["ramp"] / 60.0

    def _moving_text(self, travel: Travel) -> str:
        return f"ramping to {self.format(travel.target, unit=True)}"

    def doStart(self, target: float) -> None:
        self._store_param("setpoint", target)
        self._started_at = self._session.clock.time()
        super().doStart(target)

    def doRead(self) -> Any:
        value = super().doRead()
        jitter = self._params["jitter"]
        return value + float(self._rng.normal(0.0, jitter)) if jitter else value

    def doStatus(self) -> Status:
        status = super().doStatus()
        if status[0] != BUSY:
            return status
        setpoint = self._params["setpoint"]
        if abs(self._raw_position() - setpoint) <= self._params["tolerance"]:
            return (OK, f"at {self.format(setpoint, unit=True)} (within tolerance)")
        timeout = self._params["timeout"]
        if timeout is not None and self._started_at is not None \
                and self._session.clock.time() - self._started_at > timeout:
            return (NOTREACHED, f"setpoint {self.format(self._params['setpoint'], unit=True)} "
                                f"not reached within {timeout:g} s")
        return status

    def failure_for(self, status: Status) -> NicosError:
        if status[0] == NOTREACHED:
            return NicosTimeoutError(f"{self}: {status[1]}")
        return super().failure_for(status)


__all__ = ["VirtualTemperature"]
